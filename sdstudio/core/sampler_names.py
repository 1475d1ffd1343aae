"""Sampler and schedule-type names as people know them from AUTOMATIC1111 1.10, and the
other spellings people paste.

Since A1111 1.9 a sampler ("DPM++ 2M") and its schedule type ("Karras") are two settings;
"Automatic" is the sampler's own default schedule. The older combined names
("DPM++ 2M Karras", ...) are still accepted everywhere: :func:`split_combined` turns them into
a (sampler, schedule type) pair and :func:`combined_name` gives the old name back where one
existed (batch keys of old manifests hash it).

``engine/samplers.py`` maps each sampler to its implementation; a test checks the lists
agree. :func:`canonical_sampler` is the one place that turns a spelling from the CLI, a prompt
list or another tool's infotext into one of :data:`SAMPLER_NAMES` or :data:`COMBINED_NAMES`.
Pure Python.
"""

from __future__ import annotations

import re

# A1111 1.10's k-diffusion samplers, then its timestep samplers, then LCM (its own loop).
SAMPLER_NAMES: tuple[str, ...] = (
    "Euler a",
    "Euler",
    "DPM++ 2M",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun",
    "DPM++ 2S a",
    "DPM++ 3M SDE",
    "LMS",
    "Heun",
    "DPM2",
    "DPM2 a",
    "Restart",
    "DDIM",
    "PLMS",
    "UniPC",
    "LCM",
)

# A1111 1.10's schedule types (modules/sd_schedulers.py labels), "Automatic" first.
SCHEDULE_TYPES: tuple[str, ...] = (
    "Automatic",
    "Uniform",
    "Karras",
    "Exponential",
    "Polyexponential",
    "SGM Uniform",
    "KL Optimal",
    "Align Your Steps",
    "Simple",
    "Normal",
    "DDIM",
    "Beta",
)

# What "Automatic" means for each sampler (A1111 1.10's per-sampler "scheduler" option;
# a sampler not named here runs Uniform).
AUTOMATIC_SCHEDULE: dict[str, str] = {
    "DPM++ 2M": "Karras",
    "DPM++ SDE": "Karras",
    "DPM++ 2M SDE": "Exponential",
    "DPM++ 2M SDE Heun": "Exponential",
    "DPM++ 2S a": "Karras",
    "DPM++ 3M SDE": "Exponential",
    "DPM2": "Karras",
    "DPM2 a": "Karras",
    "Restart": "Karras",
}

# Samplers that run on the model's own timesteps, not on a sigma schedule (A1111's
# "timesteps" samplers): they take only "Automatic".
TIMESTEP_SAMPLERS: frozenset[str] = frozenset({"DDIM", "PLMS", "UniPC"})

# The names A1111 used before 1.9 (and SD Studio before it had a schedule type).
COMBINED_NAMES: dict[str, tuple[str, str]] = {
    "DPM++ 2M Karras": ("DPM++ 2M", "Karras"),
    "DPM++ SDE Karras": ("DPM++ SDE", "Karras"),
    "DPM++ 2M SDE Karras": ("DPM++ 2M SDE", "Karras"),
    "DPM++ 2M SDE Exponential": ("DPM++ 2M SDE", "Exponential"),
    "DPM++ 2M SDE Heun Karras": ("DPM++ 2M SDE Heun", "Karras"),
    "DPM++ 2M SDE Heun Exponential": ("DPM++ 2M SDE Heun", "Exponential"),
    "DPM++ 2S a Karras": ("DPM++ 2S a", "Karras"),
    "DPM++ 3M SDE Karras": ("DPM++ 3M SDE", "Karras"),
    "DPM++ 3M SDE Exponential": ("DPM++ 3M SDE", "Exponential"),
    "LMS Karras": ("LMS", "Karras"),
    "DPM2 Karras": ("DPM2", "Karras"),
    "DPM2 a Karras": ("DPM2 a", "Karras"),
}
_COMBINED_BY_PAIR: dict[tuple[str, str], str] = {v: k for k, v in COMBINED_NAMES.items()}

# Spellings of other tools (ComfyUI/Fooocus internal names, old k-diffusion names), compared
# after normalising (see _norm): "k_euler_a", "euler_ancestral", "dpmpp_2m_sde_gpu", ...
_ALIASES: dict[str, str] = {
    "eulerancestral": "Euler a",
    "dpm2ancestral": "DPM2 a",
    "dpmppsdegpu": "DPM++ SDE",
    "dpmpp2msdegpu": "DPM++ 2M SDE",
    "dpmpp2sancestral": "DPM++ 2S a",
    "dpmpp3msdegpu": "DPM++ 3M SDE",
    "unipcbh2": "UniPC",
}

_SCHEDULE_ALIASES: dict[str, str] = {"sgmuniform": "SGM Uniform", "auto": "Automatic"}


def _norm(name: str) -> str:
    """Case, ``++``/``pp``, separators and a ``k_`` prefix do not matter."""
    key = name.strip().lower().replace("++", "pp")
    key = key.removeprefix("k_")
    return re.sub(r"[^a-z0-9]", "", key)


_BY_KEY: dict[str, str] = (
    {_norm(n): n for n in (*SAMPLER_NAMES, *COMBINED_NAMES)} | _ALIASES)
_SCHEDULE_BY_KEY: dict[str, str] = {_norm(n): n for n in SCHEDULE_TYPES} | _SCHEDULE_ALIASES


def canonical_sampler(name: str) -> str | None:
    """Our name for a sampler spelled any common way (a combined name stays combined), or
    None when it is not one we have."""
    return _BY_KEY.get(_norm(name)) if isinstance(name, str) and name.strip() else None


def normalize_sampler(name: str) -> str:
    """``canonical_sampler`` or, for an unknown name, the name itself (validation then lists
    the choices)."""
    return canonical_sampler(name) or name.strip()


def canonical_schedule(name: str) -> str | None:
    """Our name for a schedule type ("karras", "sgm_uniform", "SGMUniform", ...), or None."""
    return _SCHEDULE_BY_KEY.get(_norm(name)) if isinstance(name, str) and name.strip() else None


def normalize_schedule(name: str) -> str:
    return canonical_schedule(name) or name.strip()


def split_combined(sampler: str) -> tuple[str, str] | None:
    """("DPM++ 2M", "Karras") for "DPM++ 2M Karras"; None for a plain sampler name."""
    return COMBINED_NAMES.get(sampler)


def combined_name(sampler: str, schedule: str) -> str | None:
    """The pre-1.9 combined name of a (sampler, schedule type) pair, where there was one."""
    return _COMBINED_BY_PAIR.get((sampler, schedule))


def automatic_schedule(sampler: str) -> str:
    """What "Automatic" runs for ``sampler``."""
    return AUTOMATIC_SCHEDULE.get(sampler, "Uniform")


def effective_schedule(sampler: str, schedule: str) -> str:
    """The schedule type that actually runs: "Automatic" resolved."""
    return automatic_schedule(sampler) if schedule == "Automatic" else schedule


def schedule_problem(sampler: str, schedule: str) -> str | None:
    """Why ``sampler`` cannot run ``schedule``, or None."""
    if sampler in TIMESTEP_SAMPLERS and schedule not in ("Automatic",):
        return (f"{sampler} runs on the model's own timesteps and takes no schedule type "
                f"(choose Automatic, not {schedule})")
    return None


# ------------------------------------------------------------ model evaluations per run
# How A1111 1.10 runs each sampler, as far as the number of model evaluations goes
# (engine/samplers.py has the loops; a test checks these counts against them).
DISCARD_PENULTIMATE: frozenset[str] = frozenset({"DPM2", "DPM2 a", "DPM++ 3M SDE"})
# two evaluations per step, one on a step that ends at sigma 0
TWO_PER_STEP: frozenset[str] = frozenset(
    {"Heun", "DPM2", "DPM2 a", "DPM++ SDE", "DPM++ 2S a", "Restart"})


def _schedule_intervals(sampler: str, schedule: str, steps: int,
                        strength: float | None) -> tuple[int, bool]:
    """(steps the sampler takes, whether the last one ends at sigma 0) for a k-sampler."""
    n = steps + (1 if sampler in DISCARD_PENULTIMATE else 0)
    if schedule == "DDIM":  # every (table // n)-th training sigma from index 1
        table = 50 if sampler == "LCM" else 1000
        length = len(range(1, table, max(table // n, 1))) + 1
    else:
        length = n + 1
    if sampler in DISCARD_PENULTIMATE:
        length -= 1
    if strength is not None:  # sigmas[steps - t_enc - 1:]
        t_enc = int(min(strength, 0.999) * steps)
        length = max(length - (steps - t_enc - 1), 0)
    return max(length - 1, 0), schedule != "KL Optimal"  # KL Optimal ends at sigma_min


def model_evaluations(sampler: str, schedule: str, steps: int,
                      strength: float | None = None) -> int:
    """How many times ``sampler`` evaluates the model (one step callback each) at ``steps``
    with ``schedule`` ("Automatic" resolved here); ``strength`` for img2img/inpaint, None for
    txt2img. Restart at 20+ steps rebuilds Karras sigmas ending at 0 with as many steps."""
    if sampler in TIMESTEP_SAMPLERS:
        length = len(range(0, 1000, 1000 // steps))
        if strength is not None:
            length = min(length, int(min(strength, 0.999) * steps))
        if sampler == "UniPC":  # A1111's uni_pc: one evaluation per timestep
            return length
        loop = max(length - 1, 0)
        return loop + (1 if sampler == "PLMS" and loop else 0)
    intervals, ends_at_zero = _schedule_intervals(
        sampler, effective_schedule(sampler, schedule), steps, strength)
    if sampler not in TWO_PER_STEP:
        return intervals
    if sampler == "Restart" and intervals >= 20:
        ends_at_zero = True
    return 2 * intervals - (1 if ends_at_zero and intervals else 0)


def steps_problem(sampler: str, schedule: str, steps: int,
                  strength: float | None = None) -> str | None:
    """Why a run evaluates the model no time (None when it does): an img2img/inpaint strength
    too low for the steps, or DDIM / PLMS at 1 step (A1111's timesteps give no step)."""
    if strength is not None and int(steps * strength) < 1:
        return (f"denoising strength {strength} with {steps} steps runs no step; raise the "
                "strength or the steps")
    if model_evaluations(sampler, schedule, steps, strength) < 1:
        what = f"denoising strength {strength} with " if strength is not None else ""
        return (f"{what}{steps} step(s) runs no step of {sampler} (as in AUTOMATIC1111); "
                "raise the " + ("strength or the " if strength is not None else "") + "steps")
    return None


# ------------------------------------------------------------- other tools' spellings
# AUTOMATIC1111 1.10's schedule names besides the labels (modules/sd_schedulers.py: each
# scheduler's internal name and aliases). A sampler name ending in " " + one of these, or a
# label, names that schedule (sd_samplers.get_sampler_and_scheduler), as in "DPM++ 2M Karras".
A1111_SCHEDULE_NAMES: dict[str, str] = {
    "automatic": "Automatic", "uniform": "Uniform", "karras": "Karras",
    "exponential": "Exponential", "polyexponential": "Polyexponential",
    "sgm_uniform": "SGM Uniform", "SGMUniform": "SGM Uniform", "kl_optimal": "KL Optimal",
    "align_your_steps": "Align Your Steps", "simple": "Simple", "normal": "Normal",
    "ddim": "DDIM", "beta": "Beta",
}

# ComfyUI's scheduler names (which Fooocus writes as "Scheduler: karras" and Krita AI
# Diffusion's presets use) for the A1111 schedule types that compute the same sigmas.
# ComfyUI's others ("gits", "linear_quadratic", "turbo", "lcm", "tcd", ...) have no A1111
# equivalent and stay unknown.
COMFY_SCHEDULES: dict[str, str] = {
    "normal": "Normal", "karras": "Karras", "exponential": "Exponential",
    "sgm_uniform": "SGM Uniform", "simple": "Simple", "ddim_uniform": "DDIM", "beta": "Beta",
    "kl_optimal": "KL Optimal", "align_your_steps": "Align Your Steps",
}

# Krita AI Diffusion's sampler presets (ai_diffusion/presets/samplers.json, Acly/krita-ai-
# diffusion at 0217cd2, 2026-08): the preset name it writes as "Sampler: ..." -> the ComfyUI
# sampler and scheduler it ran. "Default - DPM++ 2M" is dpmpp_2m + karras: DPM++ 2M Karras.
KRITA_PRESETS: dict[str, tuple[str, str]] = {
    "Default - DPM++ 2M": ("dpmpp_2m", "karras"),
    "Alternative - Euler A": ("euler_ancestral", "normal"),
    "Creative - DPM++ 2M SDE": ("dpmpp_2m_sde_gpu", "karras"),
    "Fast - UniPC BH2": ("uni_pc_bh2", "gits"),
    "Euler beta": ("euler", "beta"),
    "RES multistep simple": ("res_multistep", "simple"),
    "Turbo/Lightning Merge - DPM++ SDE": ("dpmpp_sde_gpu", "karras"),
    "Lightning Merge - Euler A Uniform": ("euler_ancestral", "sgm_uniform"),
    "Realtime - Hyper": ("euler", "sgm_uniform"),
    "Realtime - LCM": ("lcm", "sgm_uniform"),
    "Realtime - Lightning": ("euler", "sgm_uniform"),
    "SD3 - DPM++ 2M Uniform": ("dpmpp_2m", "sgm_uniform"),
    "Flux - Euler simple": ("euler", "simple"),
    "Flux - Turbo": ("euler", "simple"),
    "Flux 2 - Euler": ("euler", "flux2"),
}


def comfy_schedule(name: str) -> str | None:
    """The A1111 schedule type for a ComfyUI scheduler name ("karras", "sgm_uniform"), or
    None when A1111 has none."""
    return COMFY_SCHEDULES.get(name.strip().lower()) if isinstance(name, str) else None


def split_schedule_suffix(name: str) -> tuple[str, str | None]:
    """("DPM++ 2M", "Karras") for "DPM++ 2M Karras": A1111's rule that a sampler name ending
    in a space and a schedule label, name or alias names that schedule; (name, None) when it
    does not. Every suffix is stripped in A1111's order, as it does."""
    found = None
    for label in SCHEDULE_TYPES:
        options = [label] + [k for k, v in A1111_SCHEDULE_NAMES.items() if v == label]
        for option in options:
            if name.endswith(" " + option):
                found = label
                name = name[: -(len(option) + 1)]
                break
    return name, found
