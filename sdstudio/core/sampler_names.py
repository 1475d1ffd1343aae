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
