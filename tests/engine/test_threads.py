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
    finally:
        gov._busy, gov._own, gov._clock, gov.setup = saved[0], saved[1], saved[2], saved[5]
        gov.fixed = saved[4]
        gov._set(saved[3])
