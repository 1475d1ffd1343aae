"""The model manager's Download tab against a file server and a fake Hugging Face hub on
127.0.0.1 (tests/downloads' fixtures; every other address refused): a catalogue entry end to
end into its folder (licence accepted first, progress shown, checked by the safe loader on the
worker, listed), cancel then resume (byte-identical), a hostile pickle refused and never
listed, a server that cannot be reached, and the threads stopped when the window closes."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from sdstudio.core import paths
from sdstudio.core.catalogue import parse_catalogue
from sdstudio.testing.fake_engine import FakeScript
from sdstudio.ui.model_manager_downloads import (
    CANCELLED,
    DONE,
    DOWNLOADING,
    FAILED,
    INSTALLED_COLUMN,
)
from tests.downloads import conftest as download_fixtures
from tests.downloads.helpers import Server
from tests.ui.model_manager_helpers import (
    SD1_LORA,
    manager_home,
    open_manager,
    rows,
    write_safetensors,
)

REPO = "test/tiny-lora"
# tests/downloads' fixtures: the file server and fake hub on 127.0.0.1, every other address
# refused (autouse here too), quick retries
server = download_fixtures.server
fake_hub = download_fixtures.fake_hub
online = download_fixtures.online
no_network = download_fixtures.no_network
fast_retries = download_fixtures.fast_retries


home = manager_home  # the fixture, under a short name


def lora_bytes(tmp_path: Path, rank: int = 4) -> bytes:
    shapes = {k: [rank, 768] for k in SD1_LORA}
    shapes["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up"
           ".weight"] = [320, rank]
    return write_safetensors(tmp_path / f"lora-{rank}.safetensors", shapes).read_bytes()


def catalogue(data: bytes, needs_acceptance: bool = True) -> Any:
    return parse_catalogue({"entries": [{
        "id": "tiny-lora", "name": "Tiny LoRA", "kind": "lora", "architecture": "sd1",
        "source": {"hf_repo": REPO, "file": "detail.safetensors"},
        "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "licence": {"name": "Test licence", "url": "https://example.invalid/licence",
                    "needs_acceptance": needs_acceptance},
        "description": "a tiny LoRA for the tests"}]})


def manager_with(window: Any, qtbot: Any, cat: Any) -> Any:
    manager = open_manager(window, qtbot)
    panel = manager.downloads
    panel.catalogue = cat
    panel._fill_catalogue()
    manager.tabs.setCurrentWidget(panel)
    return manager


def test_catalogue_download_end_to_end(make_window: Any, qtbot: Any, home: Path,
                                       tmp_path: Path, fake_hub: Server,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    data = lora_bytes(tmp_path)
    fake_hub.hub[REPO] = {"detail.safetensors": data}
    window = make_window(fake=FakeScript())
    manager = manager_with(window, qtbot, catalogue(data))
    panel = manager.downloads
    asked: list[str] = []
    monkeypatch.setattr(panel, "ask_licence", lambda source: asked.append(
        source.licence.name) or True)
    seen: list[tuple[str, str]] = []
    panel.itemChanged.connect(lambda i: seen.append((panel.items[i].state,
                                                     panel.items[i].detail)))
    assert panel.select_entry("tiny-lora")
    assert panel.catalogue_view.currentItem().text(INSTALLED_COLUMN) == ""  # not installed yet
    item = panel.download_selected()
    assert item is not None
    qtbot.waitUntil(lambda: item.state in (DONE, FAILED, CANCELLED), timeout=60_000)
    assert item.state == DONE, item.detail
    assert asked == ["Test licence"]  # shown and accepted before it started
    target = paths.model_dir("lora") / "detail.safetensors"
    assert target.read_bytes() == data and item.path == str(target)
    assert any(state == DOWNLOADING and " of " in detail for state, detail in seen)
    assert ("checking", "Checking the file with the safe loader…") in seen
    checks = [j for j in window.queue.jobs() if j.label == "Check detail.safetensors.part"]
    assert [j.state.value for j in checks] == ["done"]  # on the worker, before the move
    qtbot.waitUntil(lambda: "detail" in rows(manager), timeout=20_000)
    assert rows(manager)["detail"][:2] == ("LoRAs", "SD 1.x")
    assert rows(manager)["detail"][3] == hashlib.sha256(data).hexdigest()[:10]
    assert panel.catalogue_view.currentItem().text(INSTALLED_COLUMN) == "✓ installed"
    assert not list((paths.model_dir("lora") / ".downloads").glob("*.part"))


def test_a_licence_not_accepted_downloads_nothing(make_window: Any, qtbot: Any, home: Path,
                                                  tmp_path: Path, fake_hub: Server,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    data = lora_bytes(tmp_path)
    fake_hub.hub[REPO] = {"detail.safetensors": data}
    window = make_window(fake=FakeScript())
    panel = manager_with(window, qtbot, catalogue(data)).downloads
    monkeypatch.setattr(panel, "ask_licence", lambda source: False)
    panel.select_entry("tiny-lora")
    item = panel.download_selected()
    qtbot.waitUntil(lambda: item.state == CANCELLED, timeout=20_000)
    assert "not accepted" in item.detail
    assert not any("/cdn/" in path for _m, path, _h in fake_hub.requests)  # nothing fetched
    assert not (paths.model_dir("lora") / "detail.safetensors").exists()


def test_cancel_then_resume_gives_the_same_bytes(make_window: Any, qtbot: Any, home: Path,
                                                 tmp_path: Path, server: Server,
                                                 online: None) -> None:
    import threading

    data = lora_bytes(tmp_path, rank=64)  # ~200 KB: many 4 KB chunks
    url = server.add("/files/big-lora.safetensors", data, etag='"v1"')
    release = threading.Event()
    server.throttle = lambda offset: release.wait(10) if offset >= len(data) // 2 else None
    window = make_window(fake=FakeScript())
    panel = manager_with(window, qtbot, catalogue(data)).downloads
    panel.link_edit.setText(url)
    panel.link_kind.setCurrentIndex(panel.link_kind.findData("lora"))
    item = panel.download_link()
    assert item is not None and panel.link_edit.text() == ""
    qtbot.waitUntil(lambda: item.progress is not None and item.progress.done > 0,
                    timeout=20_000)
    row = panel.rows[item.id]
    assert row.cancel_button.isVisibleTo(panel) and not row.resume_button.isVisibleTo(panel)
    row.cancel_button.click()
    release.set()  # the server goes on; the download stops at its next chunk
    qtbot.waitUntil(lambda: item.state == CANCELLED, timeout=20_000)
    kept = item.progress.done if item.progress else 0
    assert 0 < kept < len(data)
    assert "Resume continues" in item.detail
    assert row.resume_button.isVisibleTo(panel)
    assert not (paths.model_dir("lora") / "big-lora.safetensors").exists()
    server.throttle = None
    requests_before = len(server.requests)
    row.resume_button.click()
    qtbot.waitUntil(lambda: item.state in (DONE, FAILED), timeout=60_000)
    assert item.state == DONE, item.detail
    assert (paths.model_dir("lora") / "big-lora.safetensors").read_bytes() == data
    resumed = server.requests[requests_before:]
    assert any(h.get("Range", "").startswith("bytes=") and h["Range"] != "bytes=0-"
               for _m, _p, h in resumed)  # the partial file was reused


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_a_hostile_pickle_is_refused_and_never_listed(make_window: Any, qtbot: Any, home: Path,
                                                      tmp_path: Path, server: Server,
                                                      online: None) -> None:
    marker = tmp_path / "pwned"
    url = server.add("/files/evil.ckpt", pickle.dumps({"state_dict": _Hostile(marker)},
                                                     protocol=2))
    window = make_window(fake=FakeScript())
    manager = manager_with(window, qtbot, catalogue(b"x"))
    panel = manager.downloads
    panel.link_edit.setText(url)
    panel.link_kind.setCurrentIndex(panel.link_kind.findData("checkpoint"))
    item = panel.download_link()
    qtbot.waitUntil(lambda: item.state in (DONE, FAILED), timeout=60_000)
    assert item.state == FAILED
    assert "refused" in item.detail and "evil.ckpt" in panel.status.message
    assert not marker.exists()  # never unpickled
    folder = paths.model_dir("checkpoint")
    assert not (folder / "evil.ckpt").exists()
    assert not list(folder.rglob("evil.ckpt*"))  # the partial deleted too
    manager.refresh()
    qtbot.waitUntil(lambda: manager.listed_count >= 2, timeout=20_000)
    assert "evil" not in rows(manager)
    window.queue.refresh_models()
    qtbot.wait(200)
    assert window.model_combo.findData(str(folder / "evil.ckpt")) < 0


def test_an_unreachable_server_says_so_in_one_line(make_window: Any, qtbot: Any, home: Path,
                                                   online: None) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    window = make_window(fake=FakeScript())
    manager = manager_with(window, qtbot, catalogue(b"x"))
    panel = manager.downloads
    item = panel.start(f"http://127.0.0.1:{port}/x.safetensors", "lora", "x")
    qtbot.waitUntil(lambda: item.state in (DONE, FAILED), timeout=60_000)
    assert item.state == FAILED
    assert "\n" not in panel.status.message and "connection" in panel.status.message
    assert rows(manager) == {}  # the installed list still works (empty here)


def test_closing_the_window_cancels_a_download_and_stops_threads(
        make_window: Any, qtbot: Any, home: Path, tmp_path: Path, server: Server,
        online: None) -> None:
    import threading

    from sdstudio.ui.background import running_runners

    data = lora_bytes(tmp_path, rank=64)
    url = server.add("/files/slow.safetensors", data)
    gate = threading.Event()
    server.throttle = lambda offset: gate.wait(10) if offset >= 8192 else None
    window = make_window(fake=FakeScript())
    manager = manager_with(window, qtbot, catalogue(data))
    item = manager.downloads.start(url, "lora", "slow")
    qtbot.waitUntil(lambda: item.progress is not None and item.progress.done > 0,
                    timeout=20_000)
    manager.close()  # the manager closes: the download goes on in the background
    assert item.state == DOWNLOADING
    gate.set()
    window.close()
    assert item.token.cancelled
    assert not any(r.alive for r in running_runners())
    assert not (paths.model_dir("lora") / "slow.safetensors").exists()


def test_a_catalogue_checkpoint_lands_in_the_model_bar_with_its_size(
        make_window: Any, qtbot: Any, home: Path, tmp_path: Path, fake_hub: Server,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sdstudio.core.settings import ModelDefaults

    unet = "model.diffusion_model."
    data = write_safetensors(tmp_path / "xl.safetensors", {  # an SDXL layout, tiny shapes
        "conditioner.embedders.1.model.token_embedding.weight": [4, 1280],
        unet + "input_blocks.0.0.weight": [8, 4, 3, 3],
        unet + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": [4, 2048]},
        dtype="F16").read_bytes()
    fake_hub.hub["test/tiny-xl"] = {"xl-base.safetensors": data}
    cat = parse_catalogue({"entries": [{
        "id": "tiny-xl", "name": "Tiny XL", "kind": "checkpoint", "architecture": "sdxl",
        "source": {"hf_repo": "test/tiny-xl", "file": "xl-base.safetensors"},
        "licence": {"name": "MIT", "url": "https://example.invalid/mit",
                    "needs_acceptance": False},
        "description": "an SDXL checkpoint's header"}]})
    window = make_window(fake=FakeScript())
    manager = manager_with(window, qtbot, cat)
    panel = manager.downloads
    monkeypatch.setattr(panel, "ask_licence", lambda source: pytest.fail("no licence to ask"))
    panel.select_entry("tiny-xl")
    item = panel.download_selected()
    qtbot.waitUntil(lambda: item.state in (DONE, FAILED, CANCELLED), timeout=60_000)
    assert item.state == DONE, item.detail
    target = paths.model_dir("checkpoint") / "xl-base.safetensors"
    assert target.read_bytes() == data
    assert window.settings.model_defaults["xl-base"] == ModelDefaults(width=1024, height=1024)
    qtbot.waitUntil(lambda: rows(manager).get("xl-base", ("",))[0] == "Checkpoints",
                    timeout=20_000)
    assert rows(manager)["xl-base"][1] == "SDXL"
    combo = window.model_combo
    qtbot.waitUntil(lambda: combo.findData(str(target)) >= 0, timeout=20_000)
    window.prompt_panel.control("width").set_value(512)
    combo.setCurrentIndex(combo.findData(str(target)))
    window._on_model_chosen(combo.currentIndex())
    assert window.prompt_panel.request().width == 1024


def test_a_file_that_cannot_be_checked_is_kept_for_resume(make_window: Any, qtbot: Any,
                                                          home: Path, tmp_path: Path,
                                                          server: Server, online: None) -> None:
    def no_engine(settings: Any) -> Any:
        raise RuntimeError("torch is missing")

    data = lora_bytes(tmp_path)
    url = server.add("/files/kept.safetensors", data)
    window = make_window(factory=no_engine)
    qtbot.waitUntil(lambda: window.queue.engine_ok is False, timeout=20_000)
    manager = manager_with(window, qtbot, catalogue(data))
    panel = manager.downloads
    item = panel.start(url, "lora", "kept")
    qtbot.waitUntil(lambda: item.state in (DONE, FAILED, CANCELLED), timeout=60_000)
    assert item.state == FAILED and "not checked" in item.detail, item.detail
    assert panel.rows[item.id].resume_button.isVisibleTo(panel)
    assert not (paths.model_dir("lora") / "kept.safetensors").exists()  # not installed ...
    part = paths.model_dir("lora") / ".downloads" / "kept.safetensors.part"
    assert part.read_bytes() == data  # ... and not deleted either


def test_tokens_are_masked_and_saved(make_window: Any, qtbot: Any, home: Path) -> None:
    from PySide6.QtWidgets import QLineEdit

    from sdstudio.core.settings import load_settings

    window = make_window(fake=FakeScript())
    panel = open_manager(window, qtbot).downloads
    assert panel.hf_token.echoMode() == QLineEdit.EchoMode.Password
    assert panel.civitai_token.echoMode() == QLineEdit.EchoMode.Password
    panel.hf_token.setText(" hf_abc ")
    panel.civitai_token.setText("civ123")
    panel.save_tokens()
    assert window.settings.downloads.hf_token == "hf_abc"
    saved = load_settings().downloads
    assert (saved.hf_token, saved.civitai_token) == ("hf_abc", "civ123")
