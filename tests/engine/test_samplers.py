"""The sampler table: every A1111 name has an implementation, builds from every model's
scheduler config keeping its beta schedule and prediction type, runs with every schedule type
it takes, counts its progress honestly, and refuses what it cannot run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sdstudio.core.errors import RequestError
from sdstudio.core.events import Progress
from sdstudio.core.request import SAMPLER_NAMES, SCHEDULE_TYPES
from sdstudio.core.sampler_names import TIMESTEP_SAMPLERS, model_evaluations
from sdstudio.engine.ksampling import A1111Scheduler
from sdstudio.engine.models import read_json
from sdstudio.engine.samplers import SAMPLERS, build_scheduler, scheduler_info


def test_table_covers_the_vocabulary() -> None:
    assert set(SAMPLERS) == set(SAMPLER_NAMES)
    assert "DPM fast" not in SAMPLERS and "DPM adaptive" not in SAMPLERS


@pytest.mark.parametrize("kind", ["sd1", "sd2-v", "sdxl"])
@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_builds_from_model_config(name: str, kind: str, tiny_models: dict[str, Path]) -> None:
    base = read_json(tiny_models[kind] / "scheduler" / "scheduler_config.json")
    sched = build_scheduler(name, base, sdxl=kind == "sdxl")
    for key in ("prediction_type", "beta_schedule", "beta_start", "beta_end"):
        if key in base:
            assert sched.config[key] == base[key], key
    assert isinstance(sched, A1111Scheduler)
    sched.set_timesteps(4)
    info = scheduler_info(sched, name, 4)
    assert info["class"] == type(sched).__name__ and info["sampler"] == name
    assert info["evaluations"] == len(sched.timesteps) == model_evaluations(
        name, "Automatic", 4)


def test_scheduler_info_names_the_schedule_and_sigmas(tiny_model: Path) -> None:
    base = read_json(tiny_model / "scheduler" / "scheduler_config.json")
    info = scheduler_info(build_scheduler("DPM++ 2M SDE", base), "DPM++ 2M SDE", 20)
    assert info["schedule_type"] == "Exponential"  # A1111's Automatic for it
    assert info["sigmas"][0] == pytest.approx(14.6146, abs=1e-4) and info["sigmas"][1] == 0
    info = scheduler_info(build_scheduler("Euler", base, "KL Optimal"), "Euler", 20)
    assert info["sigmas"][1] == pytest.approx(0.0292, abs=1e-4)  # A1111's KL Optimal end
    info = scheduler_info(build_scheduler("Euler a", base), "Euler a", 20, strength=0.5)
    assert info["evaluations"] == 11  # t_enc + 1


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_every_sampler_runs(name: str, engines: Callable[[str], Any],
                            make_request: Callable[..., Any]) -> None:
    events: list[object] = []
    out = engines("sd1").generate(make_request(sampler=name, steps=3), events.append)
    assert out[0].info.scheduler["sampler"] == name
    progress = [e for e in events if isinstance(e, Progress)]
    expected = model_evaluations(name, "Automatic", 3)
    assert [p.step for p in progress] == list(range(1, expected + 1))
    assert all(p.total == expected for p in progress)


@pytest.mark.parametrize("schedule", [s for s in SCHEDULE_TYPES if s != "Automatic"])
def test_every_schedule_runs(schedule: str, engines: Callable[[str], Any],
                             make_request: Callable[..., Any]) -> None:
    out = engines("sd1").generate(make_request(sampler="DPM2 a", schedule_type=schedule))
    assert out[0].info.scheduler["schedule_type"] == schedule


def test_img2img_progress_counts_a1111_steps(engines: Callable[[str], Any],
                                             make_request: Callable[..., Any],
                                             input_images: dict[str, Path]) -> None:
    events: list[object] = []
    engines("sd1").generate(make_request(sampler="Heun", steps=10, strength=0.5,
                                         init_image=str(input_images["init"])), events.append)
    progress = [e for e in events if isinstance(e, Progress)]
    # A1111: t_enc = 5, 6 Heun steps, the last (to sigma 0) with one evaluation
    assert len(progress) == progress[-1].total == 11


@pytest.mark.parametrize("sampler", sorted(TIMESTEP_SAMPLERS))
def test_timestep_samplers_refuse_a_schedule_type(sampler: str, make_request: Callable[..., Any]
                                                  ) -> None:
    with pytest.raises(RequestError, match="takes no schedule type"):
        make_request(sampler=sampler, schedule_type="Karras").validated()


def test_ddim_img2img_that_runs_no_step_is_refused(engines: Callable[[str], Any],
                                                   make_request: Callable[..., Any],
                                                   input_images: dict[str, Path]) -> None:
    # A1111's DDIM img2img runs t_enc - 1 steps: int(0.5 * 3) - 1 = 0
    request = make_request(sampler="DDIM", steps=3, strength=0.5,
                           init_image=str(input_images["init"]))
    with pytest.raises(RequestError, match="runs no step of DDIM"):
        engines("sd1").generate(request)


def test_ancestral_noise_continues_each_image_generator(
        engines: Callable[[str], Any], make_request: Callable[..., Any]) -> None:
    """A batch of two gives each image what it gets alone (A1111's per-image generators)."""
    import numpy as np

    engine = engines("sd1")
    pair = engine.generate(make_request(sampler="Euler a", seed=20, batch_size=2))
    alone = engine.generate(make_request(sampler="Euler a", seed=21))
    a, b = np.asarray(pair[1].image, np.int16), np.asarray(alone[0].image, np.int16)
    assert np.abs(a - b).max() <= 1
