"""The sampler table: every A1111 name maps, builds from every model's scheduler config
keeping its prediction type and timestep settings, and runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sdstudio.core.events import Progress
from sdstudio.core.request import SAMPLER_NAMES
from sdstudio.engine.models import read_json
from sdstudio.engine.samplers import (
    SAMPLERS,
    QuadratureLMSDiscreteScheduler,
    build_scheduler,
    scheduler_info,
)

EXPECTED = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++",
                                                 "use_karras_sigmas": False}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler",
                            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "LMS Karras": (None, {"use_karras_sigmas": True}),
    "DPM++ SDE Karras": (None, {"use_karras_sigmas": True}),
}


def test_table_covers_the_vocabulary() -> None:
    assert set(SAMPLERS) == set(SAMPLER_NAMES)


@pytest.mark.parametrize("kind", ["sd1", "sd2-v", "sdxl"])
@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_builds_from_model_config(name: str, kind: str, tiny_models: dict[str, Path]) -> None:
    base = read_json(tiny_models[kind] / "scheduler" / "scheduler_config.json")
    sched = build_scheduler(name, base)
    for key in ("prediction_type", "timestep_spacing", "steps_offset", "beta_schedule",
                "beta_start", "beta_end"):
        if key in sched.config and key in base:
            assert sched.config[key] == base[key], key
    cls_name, flags = EXPECTED.get(name, (None, {}))
    if cls_name:
        assert type(sched).__name__ == cls_name
    for key, value in flags.items():
        assert sched.config[key] == value
    if name != "PLMS":
        assert not sched.config.get("skip_prk_steps", False) or type(sched).__name__ == "PNDM"
    sched.set_timesteps(4)
    info = scheduler_info(sched, name)
    assert info["class"] == type(sched).__name__ and info["sampler"] == name


def test_karras_flag_does_not_leak_between_samplers(tiny_model: Path) -> None:
    base = read_json(tiny_model / "scheduler" / "scheduler_config.json")
    base = dict(base, use_karras_sigmas=True)
    assert build_scheduler("DPM++ 2M", base).config.use_karras_sigmas is False


def test_quadrature_lms_matches_scipy_formula() -> None:
    # the integrand is a polynomial: compare with an independent fine trapezoid integral
    import numpy as np

    sched = QuadratureLMSDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                           beta_end=0.012)
    sched.set_timesteps(10)
    sigmas = np.asarray(sched.sigmas, np.float64)
    for order, t, cur in ((1, 0, 0), (2, 3, 1), (4, 6, 2), (4, 6, 3)):
        def f(tau: np.ndarray, order: int = order, t: int = t, cur: int = cur) -> np.ndarray:
            prod = np.ones_like(tau)
            for k in range(order):
                if k != cur:
                    prod *= (tau - sigmas[t - k]) / (sigmas[t - cur] - sigmas[t - k])
            return prod

        xs = np.linspace(sigmas[t], sigmas[t + 1], 20001)
        ys = f(xs)
        reference = float(np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(xs)))
        assert sched.get_lms_coefficient(order, t, cur) == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_every_sampler_runs(name: str, engines: Callable[[str], Any],
                            make_request: Callable[..., Any]) -> None:
    events: list[object] = []
    out = engines("sd1").generate(make_request(sampler=name, steps=3), events.append)
    assert out[0].info.scheduler["sampler"] == name
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and progress[-1].step == progress[-1].total
    assert all(p.step <= p.total for p in progress)


def test_plms_progress_counts(engines: Callable[[str], Any],
                              make_request: Callable[..., Any]) -> None:
    events: list[object] = []
    engines("sd1").generate(make_request(sampler="PLMS", steps=4), events.append)
    progress = [e for e in events if isinstance(e, Progress)]
    total = progress[0].total
    # PNDM's PLMS runs N+1 model calls; progress is sized from the pipeline's own count
    assert total == 5
    assert [p.step for p in progress] == list(range(1, total + 1))
    assert all(p.total == total for p in progress)
