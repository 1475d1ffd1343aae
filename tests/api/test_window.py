"""The window's "Allow other programs to use SD Studio" switch: the API served from the
running window over its own queue (pytest-qt, the fake engine behind the window's worker)."""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import Client, pump_until


@pytest.fixture
def window(qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from sdstudio.core.settings import ApiSettings, EngineSettings, Settings, save_settings
    from sdstudio.testing.fake_engine import FakeScript, fake_engine_factory
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.worker import JobQueue

    monkeypatch.setenv("SDSTUDIO_CONFIG_DIR", str(tmp_path / "config"))
    settings = Settings(output_dir=str(tmp_path / "out"), engine=EngineSettings(),
                        api=ApiSettings(enabled=True, port=0), ui={"welcome": "dismissed"})
    save_settings(settings)
    queue = JobQueue(engine_factory=fake_engine_factory(FakeScript(step_delay=0.02)),
                     settings=settings.engine)
    win = MainWindow(settings, queue)
    win.shutdown_timeout_ms = 20_000
    qtbot.addWidget(win)
    win.show()
    win.start()
    yield win
    win.close()
    assert not queue.running


def test_api_and_window_jobs_share_the_queue(window: Any) -> None:
    from sdstudio.app import _serve_api

    controller = _serve_api(window, window.queue)
    assert controller is not None and controller.running
    client = Client(controller.server.port)
    from sdstudio.core.request import GenerationRequest

    window.prompt_panel.set_request(GenerationRequest(prompt="from the window", steps=10,
                                                      width=64, height=64))
    first = window.generate()
    assert first is not None
    pending = client.start("POST", "/sdapi/v1/txt2img",
                           {"prompt": "from a program", "width": 64, "height": 64,
                            "steps": 5, "save_images": True})
    pump_until(lambda: len(window.queue.jobs()) == 2)
    second = window.generate()
    reply = pending.result()
    assert reply.status == 200 and len(reply.data["images"]) == 1
    pump_until(lambda: all(j.state.value == "done" for j in window.queue.jobs()))
    jobs = window.queue.jobs()
    assert [j.id for j in jobs] == [first, jobs[1].id, second]
    assert [j.source for j in jobs] == ["window", "api", "window"]
    assert jobs[1].title.startswith("API: from a program")
    assert jobs[0].ended <= jobs[1].started and jobs[1].ended <= jobs[2].started  # in order
    api_image = jobs[1].images[0]
    assert api_image in window.gallery.paths()  # saved (save_images) and in the gallery

    # the switch follows the settings; the server ends with the window
    port = controller.server.port
    window.apply_settings(window.settings.replace(
        api=window.settings.api.replace(enabled=False)))
    assert not controller.running
    window.apply_settings(window.settings.replace(
        api=window.settings.api.replace(enabled=True)))
    assert controller.running
    port = controller.server.port
    assert client.__class__(port).get("/sdapi/v1/samplers").status == 200
    window.close()
    assert not controller.running
    with pytest.raises(OSError):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/sdapi/v1/samplers")
        conn.getresponse()


def test_another_address_needs_a_token(window: Any) -> None:
    from sdstudio.app import _serve_api

    window.settings = window.settings.replace(
        api=window.settings.api.replace(host="0.0.0.0"))
    errors: list[str] = []
    window.show_error = lambda message, details="": errors.append(message)
    controller = _serve_api(window, window.queue)
    assert controller is not None and not controller.running
    assert errors and "token" in errors[0]


def test_settings_dialog_edits_the_switch(qtbot: Any) -> None:
    from sdstudio.core.settings import Settings
    from sdstudio.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    assert not dialog.api_enabled.isChecked()
    dialog.api_enabled.setChecked(True)
    dialog.api_port.setValue(7861)
    dialog.api_token.setText(" t0ken ")
    dialog.api_origins.setText("http://localhost:3000, https://example.org")
    api = dialog.result_settings().api
    assert (api.enabled, api.host, api.port, api.token) == (True, "127.0.0.1", 7861, "t0ken")
    assert api.cors_origins == ("http://localhost:3000", "https://example.org")
