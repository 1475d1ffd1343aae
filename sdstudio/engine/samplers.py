"""AUTOMATIC1111 1.10's samplers as a data table, and the scheduler each one runs as.

Every sampler runs as :class:`sdstudio.engine.ksampling.A1111Scheduler`: the sampler's loop
(written after k-diffusion's, A1111's Restart / LCM / DDIM / PLMS / UniPC) on A1111's sigmas for
the request's schedule type, from the model's own noise table (beta settings and prediction type
from its scheduler config). The flags are A1111's (``modules/sd_samplers_kdiffusion.py``,
``sd_samplers_extra.py``, ``sd_samplers_lcm.py``, ``sd_samplers_timesteps.py``):
``discard_next_to_last_sigma`` for DPM2, DPM2 a and DPM++ 3M SDE, Brownian-tree noise for the
SDE samplers, the Heun solver type for DPM++ 2M SDE Heun. UniPC is A1111's own uni_pc with
its default options (bh1, time uniform, order 3, lower order final).
"DPM fast" and "DPM adaptive" are not offered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdstudio.core.sampler_names import SAMPLER_NAMES, effective_schedule
from sdstudio.engine import ksampling as ks

LOOPS: dict[str, ks.LoopSpec] = {
    "Euler a": ks.LoopSpec(ks.euler_ancestral, noise="generators"),
    "Euler": ks.LoopSpec(ks.euler),
    "DPM++ 2M": ks.LoopSpec(ks.dpmpp_2m),
    "DPM++ SDE": ks.LoopSpec(ks.dpmpp_sde, noise="brownian"),
    "DPM++ 2M SDE": ks.LoopSpec(ks.dpmpp_2m_sde, noise="brownian"),
    "DPM++ 2M SDE Heun": ks.LoopSpec(ks.dpmpp_2m_sde, noise="brownian", solver_type="heun"),
    "DPM++ 2S a": ks.LoopSpec(ks.dpmpp_2s_ancestral, noise="generators"),
    "DPM++ 3M SDE": ks.LoopSpec(ks.dpmpp_3m_sde, noise="brownian", discard_penultimate=True),
    "LMS": ks.LoopSpec(ks.lms),
    "Heun": ks.LoopSpec(ks.heun),
    "DPM2": ks.LoopSpec(ks.dpm_2, discard_penultimate=True),
    "DPM2 a": ks.LoopSpec(ks.dpm_2_ancestral, noise="generators", discard_penultimate=True),
    "Restart": ks.LoopSpec(ks.restart, noise="generators"),
    "DDIM": ks.LoopSpec(ks.ddim, kind="timestep"),
    "PLMS": ks.LoopSpec(ks.plms, kind="timestep"),
    "LCM": ks.LoopSpec(ks.lcm, kind="lcm", noise="generators"),
    "UniPC": ks.LoopSpec(ks.unipc, kind="timestep", times="unipc"),
}

SAMPLERS: frozenset[str] = frozenset(name for name in SAMPLER_NAMES if name in LOOPS)

# Model scheduler-config keys the A1111 scheduler takes
_MODEL_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
               "trained_betas", "prediction_type")


def loop_spec(name: str) -> ks.LoopSpec:
    spec = LOOPS.get(name)
    if spec is None:
        raise KeyError(f"sampler {name!r} has no A1111 loop")
    return spec


def build_scheduler(name: str, base_config: Mapping[str, Any], schedule_type: str = "Automatic",
                    *, sdxl: bool = False) -> ks.A1111Scheduler:
    """A fresh scheduler for sampler ``name`` on ``schedule_type`` from the model's scheduler
    config (its beta schedule and prediction type)."""
    if name not in SAMPLERS:
        raise KeyError(f"unknown sampler {name!r}")
    model = {k: base_config[k] for k in _MODEL_KEYS if k in base_config}
    return ks.A1111Scheduler(sampler=name, schedule_type=effective_schedule(name, schedule_type),
                             sdxl=sdxl, **model)


def scheduler_info(scheduler: ks.A1111Scheduler, sampler: str, steps: int | None = None,
                   strength: float | None = None) -> dict[str, Any]:
    """What ran, JSON-friendly, for the image metadata: the sampler, the schedule type that ran
    and (for ``steps``) the first and last sigma (timestep for DDIM/PLMS) and the number of
    model evaluations."""
    info: dict[str, Any] = {"class": type(scheduler).__name__, "sampler": sampler,
                            "schedule_type": str(scheduler.config.schedule_type)}
    if steps is not None:
        run = scheduler.sigmas_for(steps, strength)
        key = "timesteps" if scheduler.spec.kind == "timestep" else "sigmas"
        info[key] = [round(float(run[0]), 6), round(float(run[-1]), 6)]
        info["evaluations"] = len(scheduler.plan(steps, strength))
    return info
