"""UI test fixtures: a guard that fails any test leaving a worker QThread or a background
runner running, isolated settings/output folders per test, and a main-window factory running
either the real engine (tiny models) or the scriptable fake engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def no_running_qthreads() -> Iterator[None]:
    """Fail a test that leaves the worker's QThread (or a background runner) running."""
    from sdstudio.ui.background import running_runners
    from sdstudio.worker import running_threads

    yield
    alive = running_threads()
    runners = running_runners()
    for thread in alive:
        thread.quit()
        thread.wait(3000)
    for runner in runners:
        runner.stop()
    assert not alive, f"test left {len(alive)} worker QThread(s) running"
    assert not runners, f"test left {len(runners)} background runner(s) running"


@pytest.fixture(autouse=True)
def clipboard_released() -> Iterator[None]:
    """After each test, what the app does at exit: mime data made in Python leaves the
    clipboard (Qt would delete it after the interpreter, crashing the process at exit)."""
    yield
    from sdstudio.ui.result_actions import release_clipboard

    release_clipboard()


@pytest.fixture
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings under tmp_path/config for this test only."""
    config = tmp_path / "config"
    monkeypatch.setenv("SDSTUDIO_CONFIG_DIR", str(config))
    return config


@pytest.fixture
def make_window(qtbot: Any, tmp_path: Path, isolated_config: Path
                ) -> Iterator[Callable[..., Any]]:
    """``make_window(model=..., fake=None|FakeScript, start=True, factory=None)`` -> a shown
    MainWindow.

    With ``fake`` a FakeEngine runs behind the worker; with ``factory`` whatever engine it
    makes (in the worker thread); otherwise the real engine loads ``model`` (a tiny model
    folder). Windows are closed (worker stopped) at teardown."""
    from sdstudio.core.settings import EngineSettings, Settings, save_settings
    from sdstudio.testing.fake_engine import fake_engine_factory
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.worker import JobQueue

    windows: list[Any] = []

    def make(model: str = "", fake: Any = None, start: bool = True,
             settings: Settings | None = None, factory: Any = None) -> Any:
        if settings is None:
            # the welcome panel (a first start) has its own tests: not in every window
            settings = Settings(output_dir=str(tmp_path / "out"),
                                engine=EngineSettings(default_model=model),
                                ui={"welcome": "dismissed"})
            save_settings(settings)
        if factory is None and fake is not None:
            factory = fake_engine_factory(fake)
        queue = JobQueue(engine_factory=factory, settings=settings.engine)
        window = MainWindow(settings, queue)
        window.shutdown_timeout_ms = 20_000  # a loaded CI machine: never leave the thread
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        window.activateWindow()  # window shortcuts (Ctrl+Enter, Esc) need an active window
        with qtbot.waitActive(window, timeout=3000):
            pass
        windows.append(window)
        if start:
            window.start()
        return window

    yield make
    for window in windows:
        window.close()
        assert not window.queue.running
