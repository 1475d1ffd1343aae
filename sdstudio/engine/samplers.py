"""AUTOMATIC1111 sampler names <-> diffusers schedulers, as a data table.

Every scheduler is built from the *model's own* scheduler config (so prediction_type,
beta schedule, timestep spacing and steps_offset stay the model's) plus the sampler's flags.

Two substitutions, both documented in ``SamplerSpec.note`` and in the image metadata:
- "DPM++ SDE" / "DPM++ SDE Karras" are k-diffusion's second-order *singlestep* SDE solver.
  diffusers' DPMSolverSDEScheduler implements it but needs ``torchsde``; when that is not
  installed the closest solver is used instead: DPMSolverSinglestepScheduler with
  ``algorithm_type="sde-dpmsolver++"`` and ``solver_order=2`` (same order, same SDE family,
  different noise sampler, so images differ from A1111's).
- LMSDiscreteScheduler integrates its coefficients with scipy (and ``diffusers`` exports only a
  placeholder class without it); without scipy a subclass of the real class does the
  same integral exactly with Gauss-Legendre quadrature (the integrand is a polynomial of degree
  <= 3, which 4-point Gauss-Legendre integrates exactly).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_lms_discrete import LMSDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

HAS_TORCHSDE = importlib.util.find_spec("torchsde") is not None
HAS_SCIPY = importlib.util.find_spec("scipy") is not None

_GL_X, _GL_W = np.polynomial.legendre.leggauss(4)


class QuadratureLMSDiscreteScheduler(LMSDiscreteScheduler):
    """LMSDiscreteScheduler without scipy: the coefficient integral by exact quadrature."""

    def get_lms_coefficient(self, order: int, t: int, current_order: int) -> float:
        sigmas = np.asarray(self.sigmas, dtype=np.float64)

        def derivative(tau: np.ndarray) -> np.ndarray:
            prod = np.ones_like(tau)
            for k in range(order):
                if current_order == k:
                    continue
                prod *= (tau - sigmas[t - k]) / (sigmas[t - current_order] - sigmas[t - k])
            return prod

        a, b = float(sigmas[t]), float(sigmas[t + 1])
        nodes = 0.5 * (b - a) * _GL_X + 0.5 * (a + b)
        return float(0.5 * (b - a) * np.sum(_GL_W * derivative(nodes)))


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    scheduler: type[SchedulerMixin]
    flags: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""


def _lms() -> type[SchedulerMixin]:
    return LMSDiscreteScheduler if HAS_SCIPY else QuadratureLMSDiscreteScheduler


def _sde(karras: bool) -> tuple[type[SchedulerMixin], dict[str, Any], str]:
    if HAS_TORCHSDE:
        from diffusers import DPMSolverSDEScheduler

        return DPMSolverSDEScheduler, {"use_karras_sigmas": karras}, ""
    return (
        DPMSolverSinglestepScheduler,
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": karras},
        "torchsde is not installed: DPM-Solver++ singlestep SDE (order 2) used instead",
    )


def _table() -> dict[str, SamplerSpec]:
    sde_cls, sde_flags, sde_note = _sde(False)
    sdek_cls, sdek_flags, sdek_note = _sde(True)
    rows = [
        SamplerSpec("Euler a", EulerAncestralDiscreteScheduler),
        SamplerSpec("Euler", EulerDiscreteScheduler),
        SamplerSpec("DPM++ 2M", DPMSolverMultistepScheduler,
                    {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        SamplerSpec("DPM++ 2M Karras", DPMSolverMultistepScheduler,
                    {"algorithm_type": "dpmsolver++", "solver_order": 2,
                     "use_karras_sigmas": True}),
        SamplerSpec("DPM++ SDE", sde_cls, sde_flags, sde_note),
        SamplerSpec("DPM++ SDE Karras", sdek_cls, sdek_flags, sdek_note),
        SamplerSpec("DPM++ 2M SDE", DPMSolverMultistepScheduler,
                    {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
        SamplerSpec("DPM++ 2M SDE Karras", DPMSolverMultistepScheduler,
                    {"algorithm_type": "sde-dpmsolver++", "solver_order": 2,
                     "use_karras_sigmas": True}),
        SamplerSpec("DPM2", KDPM2DiscreteScheduler),
        SamplerSpec("DPM2 a", KDPM2AncestralDiscreteScheduler),
        SamplerSpec("DDIM", DDIMScheduler),
        SamplerSpec("PLMS", PNDMScheduler, {"skip_prk_steps": True}),
        SamplerSpec("LMS", _lms()),
        SamplerSpec("LMS Karras", _lms(), {"use_karras_sigmas": True}),
        SamplerSpec("Heun", HeunDiscreteScheduler),
        SamplerSpec("UniPC", UniPCMultistepScheduler),
    ]
    return {row.name: row for row in rows}


SAMPLERS: dict[str, SamplerSpec] = _table()

# Flags a sampler must not inherit from the model's default scheduler config.
_RESET_FLAGS = ("use_karras_sigmas", "algorithm_type", "solver_order", "skip_prk_steps",
                "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas",
                "final_sigmas_type", "solver_type", "lower_order_final", "euler_at_final")


def build_scheduler(name: str, base_config: Mapping[str, Any]) -> SchedulerMixin:
    """A fresh scheduler for sampler ``name`` from the model's scheduler config."""
    try:
        spec = SAMPLERS[name]
    except KeyError:
        raise KeyError(f"unknown sampler {name!r}") from None
    config = {k: v for k, v in dict(base_config).items() if k not in _RESET_FLAGS}
    config.update(spec.flags)
    return spec.scheduler.from_config(config)


def scheduler_info(scheduler: SchedulerMixin, sampler: str) -> dict[str, Any]:
    """Class name and config, JSON-friendly, for the image metadata."""
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    info: dict[str, Any] = {"class": type(scheduler).__name__, "sampler": sampler,
                            "config": _jsonable(config)}
    note = SAMPLERS[sampler].note if sampler in SAMPLERS else ""
    if note:
        info["note"] = note
    return info


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)

