"""The model manager's Installed tab, driven in the window with the fake engine: models by
kind from SD Studio's own folders, the configured ones and other apps' (architecture from the
files' bytes, size, hash from the cache or computed on request), search and filters, remove
to the trash (asked first), use as the default model, per-model defaults applied when the
model is chosen in the model bar, and the offline line."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdstudio.core import paths
from sdstudio.core.other_apps import FoundFolder
from sdstudio.core.settings import ModelDefaults, load_settings, model_key
from sdstudio.testing.fake_engine import FakeScript
from sdstudio.worker.model_inventory import (
    arch_from_metadata,
    arch_from_shapes,
    preferred_size,
)
from tests.ui.model_manager_helpers import (
    SD1_LORA,
    XL_LORA,
    manager_home,
    open_manager,
    rows,
    write_safetensors,
)

home = manager_home  # the fixture, under a short name


@pytest.fixture
def library(home: Path, tmp_path: Path, tiny_models: dict[str, Path]) -> dict[str, Path]:
    """Installed models of every kind, in SD Studio's own folders."""
    files = {
        "sd1": Path(shutil.copytree(tiny_models["sd1"],
                                    paths.model_dir("checkpoint") / "tiny-sd1")),
        "sdxl": Path(shutil.copytree(tiny_models["sdxl"],
                                     paths.model_dir("checkpoint") / "tiny-xl")),
        "lora1": write_safetensors(paths.model_dir("lora") / "detail-sd1.safetensors", SD1_LORA),
        "loraxl": write_safetensors(paths.model_dir("lora") / "style" / "ink-xl.safetensors",
                                    XL_LORA),
        "vae": write_safetensors(paths.model_dir("vae") / "fix.safetensors",
                                 {"encoder.conv_in.weight": [8, 3, 3, 3]}, metadata={
                                     "modelspec.architecture": "stable-diffusion-xl-v1-base/vae"}),
        "embedding": write_safetensors(paths.model_dir("embedding") / "bad-hands.safetensors",
                                       {"emb_params": [2, 768]}),
        "upscaler": paths.model_dir("upscaler") / "4x-test.pth",
        "controlnet": write_safetensors(
            paths.model_dir("controlnet") / "canny-sd15.safetensors",
            {"control_model.input_hint_block.0.weight": [16, 3, 3, 3],
             "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [8, 768]}),
    }
    files["upscaler"].parent.mkdir(parents=True, exist_ok=True)
    files["upscaler"].write_bytes(b"\x80\x02}q\x00.")  # a pickle: never opened by the listing
    return files


@pytest.fixture
def window(make_window: Any) -> Iterator[Any]:
    yield make_window(fake=FakeScript())


def test_architecture_from_metadata_and_shapes() -> None:
    assert arch_from_metadata({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}) \
        == "sdxl"
    assert arch_from_metadata({"ss_base_model_version": "sd_v1"}) == "sd1"
    assert arch_from_metadata({"ss_base_model_version": "sd_v2_768_v"}) == "sd2"
    assert arch_from_metadata({}) == ""
    assert arch_from_shapes(SD1_LORA) == "sd1"
    assert arch_from_shapes({"x.attn2.to_k.weight": (320, 1024)}) == "sd2"
    assert arch_from_shapes(XL_LORA) == "sdxl"
    assert arch_from_shapes({"clip_g": (2, 1280), "clip_l": (2, 768)}) == "sdxl"
    assert arch_from_shapes({"encoder.conv_in.weight": (8, 3, 3, 3)}) == ""
    assert [preferred_size(a) for a in ("sd1", "sd1-inpaint", "sd2", "sd2-v", "sdxl",
                                        "sdxl-inpaint", "")] == [512, 512, 512, 768, 1024,
                                                                   1024, 512]


def test_lists_every_kind_with_architecture_size_and_where(
        window: Any, qtbot: Any, library: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    comfy = tmp_path / "ComfyUI" / "models" / "loras"
    write_safetensors(comfy / "from-comfy.safetensors", SD1_LORA)
    configured = tmp_path / "my-vaes"
    write_safetensors(configured / "mine.safetensors", {"decoder.conv_in.weight": [4, 4, 3, 3]})
    window.apply_settings(window.settings.replace(
        engine=window.settings.engine.replace(vae_dirs=(str(configured),))))
    monkeypatch.setattr("sdstudio.ui.model_manager.find_other_app_folders", lambda: [
        FoundFolder("ComfyUI", "loras", str(comfy), 1)])
    manager = open_manager(window, qtbot)
    shown = rows(manager)
    assert shown["tiny-sd1"][:2] == ("Checkpoints", "SD 1.x")
    assert shown["tiny-xl"][:2] == ("Checkpoints", "SDXL")
    assert shown["detail-sd1"][:2] == ("LoRAs", "SD 1.x")
    assert shown["style/ink-xl"][:2] == ("LoRAs", "SDXL")
    assert shown["fix"][:2] == ("VAEs", "SDXL")  # its metadata says so
    assert shown["bad-hands"][:2] == ("Embeddings", "SD 1.x")
    assert shown["4x-test"][:2] == ("Upscalers", "—")
    assert shown["canny-sd15"][:2] == ("ControlNets", "SD 1.x")
    assert shown["from-comfy"][4] == "ComfyUI folder"
    assert shown["mine"][4] == "Settings"
    assert shown["detail-sd1"][4] == "SD Studio"
    assert shown["detail-sd1"][2] == "128 B" or shown["detail-sd1"][2].endswith("KB")
    assert all(r[3] == "" for r in shown.values())  # no hash computed yet
    assert manager.count_label.text() == f"{len(shown)} models"


def test_search_and_filters(window: Any, qtbot: Any, library: dict[str, Path]) -> None:
    manager = open_manager(window, qtbot)
    every = set(rows(manager))
    manager.kind_filter.setCurrentIndex(manager.kind_filter.findData("lora"))
    assert set(rows(manager)) == {"detail-sd1", "style/ink-xl"}
    manager.arch_filter.setCurrentIndex(manager.arch_filter.findData("sdxl"))
    assert set(rows(manager)) == {"style/ink-xl"}
    manager.kind_filter.setCurrentIndex(0)
    assert set(rows(manager)) == {"tiny-xl", "style/ink-xl", "fix"}
    manager.arch_filter.setCurrentIndex(manager.arch_filter.findData("?"))
    assert set(rows(manager)) == {"4x-test"}
    manager.arch_filter.setCurrentIndex(0)
    manager.search.setText("HANDS")
    assert set(rows(manager)) == {"bad-hands"}
    manager.search.setText("sd1 detail")  # every word, anywhere
    assert set(rows(manager)) == {"detail-sd1"}
    assert manager.count_label.text() == f"1 of {len(every)} models"
    manager.search.clear()
    assert set(rows(manager)) == every


def test_hash_from_the_cache_and_computed_on_request(window: Any, qtbot: Any,
                                                      library: dict[str, Path]) -> None:
    import hashlib

    from sdstudio.engine import hashing

    hashing.file_sha256(library["lora1"])  # cached before the listing: shown at once
    manager = open_manager(window, qtbot)
    expected = hashlib.sha256(library["lora1"].read_bytes()).hexdigest()[:10]
    assert rows(manager)["detail-sd1"][3] == expected
    assert manager.select_path(str(library["embedding"]))
    assert manager.hash_button.isEnabled()
    manager.compute_hash()
    want = hashlib.sha256(library["embedding"].read_bytes()).hexdigest()[:10]
    qtbot.waitUntil(lambda: rows(manager)["bad-hands"][3] == want, timeout=10_000)
    assert not manager.hash_button.isEnabled()  # known now
    manager.refresh()  # and cached: a new listing has it
    qtbot.waitUntil(lambda: manager.listed_count >= 2, timeout=10_000)
    assert rows(manager)["bad-hands"][3] == want


def test_remove_moves_to_the_trash_after_asking(window: Any, qtbot: Any,
                                                library: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    trash = tmp_path / "trash"
    trash.mkdir()
    trashed: list[str] = []

    def fake_trash(path: str) -> str:
        trashed.append(path)
        return shutil.move(path, trash / Path(path).name)

    asked: list[str] = []
    answers = iter([False, True, True])
    monkeypatch.setattr("sdstudio.ui.model_manager.move_to_trash", fake_trash)
    manager = open_manager(window, qtbot)
    monkeypatch.setattr(manager, "_ask", lambda title, text, yes: asked.append(text)
                        or next(answers))
    assert manager.select_path(str(library["lora1"]))
    assert not manager.remove_selected()  # the person said no: nothing happens
    assert library["lora1"].exists() and not trashed
    assert manager.remove_selected()
    assert "Move detail-sd1.safetensors to the trash?" in asked[-1]
    assert trashed == [str(library["lora1"])] and not library["lora1"].exists()
    assert "detail-sd1" not in rows(manager)
    assert "trash" in manager.status.message

    window.select_model(str(library["sd1"]))  # the model in use: asked, then the demo model
    assert manager.select_path(str(library["sd1"])) and manager.remove_selected()
    assert "It is the model in use" in asked[-1]
    assert window.current_model == "" and window.settings.engine.default_model == ""


def test_open_folder_shows_the_folder_of_the_file(window: Any, qtbot: Any,
                                                  library: dict[str, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr("sdstudio.ui.model_manager.QDesktopServices.openUrl",
                        lambda url: opened.append(url.toLocalFile()) or True)
    manager = open_manager(window, qtbot)
    assert manager.select_path(str(library["loraxl"]))
    manager.folder_button.click()
    assert opened == [str(library["loraxl"].parent)]


def test_use_as_default_model_is_saved(window: Any, qtbot: Any,
                                       library: dict[str, Path]) -> None:
    manager = open_manager(window, qtbot)
    assert manager.select_path(str(library["lora1"]))
    assert not manager.default_button.isEnabled()  # only checkpoints
    assert manager.select_path(str(library["sd1"]))
    assert manager.default_button.isEnabled()
    manager.use_as_default()
    assert window.current_model == str(library["sd1"])
    assert window.settings.engine.default_model == str(library["sd1"])
    assert load_settings().engine.default_model == str(library["sd1"])  # saved
    assert window.model_combo.currentData() == str(library["sd1"])


def test_per_model_defaults_are_applied_when_the_model_is_chosen(
        window: Any, qtbot: Any, library: dict[str, Path]) -> None:
    panel = window.prompt_panel
    window.refresh_addons()  # SD Studio's own VAE folder is in the VAE list
    manager = open_manager(window, qtbot)
    assert manager.select_path(str(library["sdxl"]))
    assert manager.width_spin.value() == manager.height_spin.value() == 1024  # SDXL's size
    assert "not saved yet" in manager.size_hint_label.text()
    manager.height_spin.setValue(768)  # editable
    manager.clip_skip_spin.setValue(2)
    manager.vae_combo.setCurrentIndex(manager.vae_combo.findData("fix"))
    manager.save_defaults()
    key = model_key(str(library["sdxl"]))
    assert window.settings.model_defaults[key] == ModelDefaults(1024, 768, 2, "fix")
    assert load_settings().model_defaults[key] == ModelDefaults(1024, 768, 2, "fix")

    panel.control("width").set_value(512)
    panel.control("height").set_value(512)
    window.queue.refresh_models()  # the model bar lists SD Studio's own checkpoint folder
    combo = window.model_combo
    qtbot.waitUntil(lambda: combo.findData(str(library["sdxl"])) >= 0, timeout=20_000)
    combo.setCurrentIndex(combo.findData(str(library["sd1"])))
    window._on_model_chosen(combo.currentIndex())  # no defaults of its own: unchanged
    assert window.current_model == str(library["sd1"])
    assert (panel.control("width").value(), panel.control("height").value()) == (512, 512)
    index = combo.findData(str(library["sdxl"]))
    combo.setCurrentIndex(index)
    window._on_model_chosen(index)
    assert window.current_model == str(library["sdxl"])
    assert (panel.control("width").value(), panel.control("height").value()) == (1024, 768)
    assert panel.control("clip_skip").value() == 2
    assert panel.control("vae").value() == "fix"
    panel.control("width").set_value(640)  # the person can still change them
    assert panel.request().width == 640

    manager.clear_defaults()
    assert key not in window.settings.model_defaults


def test_model_bar_lists_the_own_checkpoint_folder(window: Any, qtbot: Any,
                                                   library: dict[str, Path]) -> None:
    window.queue.refresh_models()
    qtbot.waitUntil(lambda: window.model_combo.findData(str(library["sdxl"])) >= 0,
                    timeout=20_000)


def test_offline_says_so_at_once_and_installed_still_lists(
        window: Any, qtbot: Any, library: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manager = open_manager(window, qtbot)
    panel = manager.downloads
    manager.tabs.setCurrentWidget(panel)
    assert panel.offline_bar.isVisible() and "Offline" in panel.offline_bar.message
    assert not panel.catalogue_button.isEnabled()
    panel.link_edit.setText("org/repo file.safetensors")
    assert not panel.link_button.isEnabled()
    assert panel.start("org/repo file.safetensors", None, "x") is None  # starts nothing
    assert not panel.items
    assert "tiny-sd1" in rows(manager)  # the installed list works


def test_closing_the_window_stops_the_manager_threads(make_window: Any, qtbot: Any,
                                                      home: Path) -> None:
    from sdstudio.ui.background import running_runners

    window = make_window(fake=FakeScript())
    manager = open_manager(window, qtbot)
    manager.close()  # the dialog closes; it stays with the window
    assert window.model_manager is manager
    window.close()
    assert not any(r.alive for r in running_runners())


def test_no_mnemonic_twice_on_either_tab(window: Any, qtbot: Any, home: Path) -> None:
    from tests.ui.test_mnemonics import clashes

    manager = open_manager(window, qtbot)
    for index in range(manager.tabs.count()):
        manager.tabs.setCurrentIndex(index)
        assert not clashes(manager), manager.tabs.tabText(index)


def test_catalogue_entries_are_marked_installed_by_name_or_hash() -> None:
    from sdstudio.core.catalogue import parse_catalogue
    from sdstudio.ui.model_manager_downloads import is_installed

    sha = "ab" * 32
    entry = next(iter(parse_catalogue({"entries": [{
        "id": "x", "name": "X", "kind": "vae", "architecture": "sdxl",
        "source": {"hf_repo": "org/x", "file": "x.safetensors"}, "sha256": sha,
        "licence": {"name": "MIT", "url": "https://example.invalid", "needs_acceptance": False},
        "description": "d"}]})))
    assert is_installed(entry, {("vae", "x.safetensors")})
    assert is_installed(entry, {("vae", f"sha256:{sha[:10]}")})  # renamed, hash cached
    assert not is_installed(entry, {("lora", "x.safetensors"), ("vae", "y.safetensors")})
