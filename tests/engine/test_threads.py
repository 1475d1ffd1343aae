"""The engine's CPU threads follow other programs' load (engine/threads.py), measured between
steps; a fixed "CPU threads" setting pins them."""

from __future__ import annotations

from pathlib import Path

import torch

from sdstudio.core import threads as policy
from sdstudio.core.events import ignore_event
from sdstudio.core.request import GenerationRequest
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import threads as engine_threads
from sdstudio.engine.runner import Engine


class Machine:
    """A fake clock and CPU counters: ``other`` CPUs of foreign load, ``own`` of ours."""

    def __init__(self) -> None:
        self.now, self.busy_s, self.own_s = 0.0, 0.0, 0.0
        self.other, self.ours = 0.0, 2.0
        self.applied: list[int] = []

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.busy_s += (self.other + self.ours) * seconds
        self.own_s += self.ours * seconds

    def governor(self, cpus: int = 2, user: dict[str, str] | None = None,
                 fixed: int = 0) -> engine_threads.ThreadGovernor:
        setup = policy.ThreadSetup(cpus, tuple(range(cpus)), {}, user or {})
        return engine_threads.ThreadGovernor(
            setup, fixed, busy=lambda: self.busy_s, own=lambda: self.own_s,
            clock=lambda: self.now, apply=self.applied.append, current=lambda: 7)


def test_a_busy_program_takes_a_thread_and_gives_it_back() -> None:
    m = Machine()
    g = m.governor()
    assert g.threads == 2 and m.applied == [2]
    g.start()
    for _ in range(5):  # idle: stays at 2
        m.advance(0.25)
        g.tick()
    assert g.threads == 2 and m.applied == [2]
    m.other, m.ours = 0.67, 1.33  # another program starts
    for _ in range(3):
        m.advance(0.25)
        g.tick()
    assert g.threads == 1 and round(g.other_load, 2) == 0.67
    m.other, m.ours = 1.0, 1.0
    for _ in range(6):
        m.advance(0.25)
        g.tick()
    assert g.threads == 1
    m.other = 0.0  # it ends
    for _ in range(3):
        m.advance(0.25)
        g.tick()
    assert g.threads == 2 and m.applied == [2, 1, 2]


def test_decisions_wait_for_the_interval() -> None:
    m = Machine()
    g = m.governor()
    g.start()
    m.other = 1.5
    m.advance(engine_threads.INTERVAL_S / 2)
    g.tick()
    assert g.threads == 2  # too early to judge
    m.advance(engine_threads.INTERVAL_S)
    g.tick()
    assert g.threads == 1


def test_load_between_generations_does_not_count() -> None:
    m = Machine()
    g = m.governor()
    g.start()
    m.other, m.ours = 2.0, 0.0  # a pause between two runs, with other work
    m.advance(5.0)
    g.start()  # the next generation begins
    m.other, m.ours = 0.0, 2.0
    m.advance(0.5)
    g.tick()
    assert g.threads == 2


def test_fixed_setting_pins_and_automatic_returns() -> None:
    m = Machine()
    g = m.governor(fixed=1)
    assert g.threads == 1 and not g.adaptive
    g.start()
    m.advance(1.0)
    g.tick()
    assert g.threads == 1
    g.set_fixed(0)
    assert g.threads == 2 and g.adaptive
    g.set_fixed(10**6)
    assert g.threads == policy.MAX_CPU_THREADS


def test_the_persons_omp_num_threads_is_left_alone() -> None:
    m = Machine()
    g = m.governor(user={"OMP_NUM_THREADS": "7"})
    assert not g.adaptive and g.threads == 7 and m.applied == []
    g.start()
    m.other = 1.5
    m.advance(1.0)
    g.tick()
    assert m.applied == []
    assert "OMP_NUM_THREADS=7 (yours)" in g.describe()


def test_engine_steps_adjust_torch_threads(tiny_models: dict[str, Path]) -> None:
    """A generation whose steps see a foreign load drops to one torch thread; the setting's
    fixed count is applied by Engine.configure."""
    gov = engine_threads.governor()
    saved = (gov._busy, gov._own, gov._clock, gov.threads, gov.fixed, gov.setup)
    clock = [0.0]
    busy = [0.0]

    def tick_clock() -> float:
        clock[0] += 1.0  # every reading is a second later: each step decides
        busy[0] += 1.5  # 1.5 CPUs busy in all, none of it ours
        return clock[0]

    engine = None
    try:
        gov._clock, gov._busy, gov._own = tick_clock, lambda: busy[0], lambda: 0.0
        gov.setup = policy.ThreadSetup(2, (0, 1))  # adaptive, 2 CPUs (the suite fixes 1)
        engine = Engine(EngineSettings(device="cpu", preview_every=0))
        request = GenerationRequest(prompt="a cat", width=64, height=64, steps=3, seed=1,
                                    model=str(tiny_models["sd1"]))
        assert torch.get_num_threads() == 2  # automatic: every usable CPU
        engine.generate(request, ignore_event)
        assert torch.get_num_threads() == 1 and gov.other_load == 1.5
        engine.configure(engine.settings.replace(cpu_threads=1))
        assert torch.get_num_threads() == 1
        engine.configure(engine.settings.replace(cpu_threads=0))
        assert torch.get_num_threads() == 2
        engine.unload()  # its UNet's slice threads end with it
    finally:
        gov._busy, gov._own, gov._clock, gov.setup = saved[0], saved[1], saved[2], saved[5]
        gov.fixed = saved[4]
        gov._set(saved[3])


# ----------------------------------------------------------------- batch-parallel UNet calls
import contextlib  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@contextlib.contextmanager
def two_cpus(adaptive: bool = True) -> Iterator[engine_threads.ThreadGovernor]:
    """The process's governor as on an idle 2-CPU machine (the suite pins one thread)."""
    gov = engine_threads.governor()
    saved = (gov.setup, gov.threads, gov.fixed, torch.get_num_threads())
    gov.setup = policy.ThreadSetup(2, (0, 1), {}, {} if adaptive else {"OMP_NUM_THREADS": "2"})
    gov.fixed = 0
    gov._set(2)
    try:
        yield gov
    finally:
        gov.setup, gov.fixed = saved[0], saved[2]
        gov._set(saved[1])
        torch.set_num_threads(saved[3])


def _unet_inputs(unet: object, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    cfg = unet.config  # type: ignore[attr-defined]
    x = torch.randn(rows, cfg.in_channels, 8, 8, generator=g)
    text = torch.randn(rows, 77, cfg.cross_attention_dim, generator=g)
    return x, torch.tensor(500), text


@pytest.mark.parametrize("rows", [2, 3, 4])
def test_sliced_unet_equals_the_batched_call(tiny_models: dict[str, Path], rows: int) -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_models["sd1"], subfolder="unet").eval()
    x, t, text = _unet_inputs(unet, rows)
    mask = torch.ones(rows, 77, dtype=torch.bool)
    mask[0, 40:] = False  # a per-row cross-attention mask is sliced with its rows
    with torch.no_grad():
        expected = unet(x, t, text, encoder_attention_mask=mask, return_dict=False)[0]
    with two_cpus():
        wrapper = engine_threads.parallel_batches(unet)
        try:
            assert engine_threads.parallel_batches(unet) is wrapper  # installed once
            with torch.no_grad():
                got = unet(x, t, text, encoder_attention_mask=mask, return_dict=False)[0]
                out = unet(x, t.expand(rows), text, encoder_attention_mask=mask)
            assert wrapper.calls == 2
            assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
            assert torch.allclose(out.sample, expected, atol=1e-5, rtol=1e-5)
            assert not got.requires_grad  # the slices ran in the caller's no-grad mode
        finally:
            engine_threads.release_batches(unet)
    assert "forward" not in unet.__dict__  # and the pool's threads have ended


def test_one_row_or_one_cpu_is_not_sliced(tiny_models: dict[str, Path]) -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_models["sd1"], subfolder="unet").eval()
    wrapper = engine_threads.parallel_batches(unet)  # the suite: OMP_NUM_THREADS=1
    try:
        with torch.no_grad():
            unet(*_unet_inputs(unet, 2))
        assert wrapper.calls == 0
        with two_cpus(), torch.no_grad():
            unet(*_unet_inputs(unet, 1))
        assert wrapper.calls == 0
    finally:
        engine_threads.release_batches(unet)


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_images_with_sliced_batches_match_batched(tiny_models: dict[str, Path],
                                                  kind: str) -> None:
    """Whole generations (CFG: rows = 2 x images), a prompt and negative of different chunk
    counts (the masked cross-attention), two images per run: within one 8-bit level."""
    prompt = "a photo of a cat, " * 30  # two chunks against the negative's one
    request = GenerationRequest(prompt=prompt, negative_prompt="blurry", width=64, height=64,
                                steps=3, seed=7, batch_size=2, model=str(tiny_models[kind]))
    engine = Engine(EngineSettings(device="cpu", preview_every=0))
    try:
        batched = [np.asarray(r.image, np.int16) for r in engine.generate(request)]
        with two_cpus():
            wrapper = engine._model.pipes.base.unet.forward  # type: ignore[union-attr]
            assert isinstance(wrapper, engine_threads.BatchParallel)
            sliced = [np.asarray(r.image, np.int16) for r in engine.generate(request)]
            assert wrapper.calls >= 3
    finally:
        engine.unload()
    for a, b in zip(batched, sliced, strict=True):
        assert np.abs(a - b).max() <= 1
