"""Finding other Stable Diffusion apps' model folders (core.other_apps) in fake install trees
built under tmp_path, with HOME (and the environment, and the platform) given explicitly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sdstudio.core import other_apps
from sdstudio.core.other_apps import (
    FoundFolder,
    add_folders,
    count_model_files,
    fds_section,
    find_other_apps,
    identify,
    simple_yaml,
)
from sdstudio.core.settings import EngineSettings


def touch(path: Path, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)  # sparse: a "2 GiB checkpoint" costs nothing
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def found(home: Path, **kw: object) -> dict[tuple[str, str], dict[str, int]]:
    """{(app, kind): {folder relative to home (or absolute): files}} of a search."""
    result = find_other_apps(home=home, environ=kw.pop("environ", {}),  # type: ignore[arg-type]
                             platform=str(kw.pop("platform", "linux")), **kw)  # type: ignore[arg-type]
    assert result.complete
    out: dict[tuple[str, str], dict[str, int]] = {}
    for f in result.folders():
        folder = Path(f.folder)
        name = folder.relative_to(home).as_posix() if folder.is_relative_to(home) else str(folder)
        out.setdefault((f.app, f.kind), {})[name] = f.files
    return out


def a1111(root: Path, forge: bool = False) -> Path:
    touch(root / "webui.py")
    (root / "modules").mkdir(parents=True, exist_ok=True)
    if forge:
        (root / "modules_forge").mkdir()
    touch(root / "models" / "Stable-diffusion" / "v1-5-pruned-emaonly.safetensors")
    touch(root / "models" / "Stable-diffusion" / "sub" / "dreamshaper_8.safetensors")
    write(root / "models" / "Stable-diffusion" / "Put Stable Diffusion checkpoints here.txt", "")
    touch(root / "models" / "Stable-diffusion" / "dreamshaper_8.preview.png")
    touch(root / "models" / "Lora" / "detail.safetensors")
    touch(root / "models" / "LyCORIS" / "loha.safetensors")
    touch(root / "models" / "VAE" / "vae-ft-mse.safetensors")
    touch(root / "embeddings" / "easynegative.pt")
    return root


def comfy(root: Path) -> Path:
    touch(root / "folder_paths.py")
    (root / "comfy").mkdir(parents=True)
    for kind, name in (("checkpoints", "sd_xl_base_1.0.safetensors"), ("loras", "a.safetensors"),
                       ("vae", "sdxl_vae.safetensors"), ("embeddings", "neg.safetensors")):
        touch(root / "models" / kind / name)
    write(root / "models" / "diffusers" / "sd15" / "model_index.json", "{}")
    touch(root / "models" / "diffusers" / "sd15" / "unet" / "diffusion_pytorch_model.safetensors")
    (root / "models" / "upscale_models").mkdir()
    touch(root / "models" / "upscale_models" / "4x.pth")
    return root


# ================================================================= each app, default layout
def test_automatic1111_and_forge_default_folders(tmp_path: Path) -> None:
    a1111(tmp_path / "stable-diffusion-webui")
    a1111(tmp_path / "stable-diffusion-webui-forge", forge=True)
    got = found(tmp_path)
    assert got[("AUTOMATIC1111", "checkpoints")] == {
        "stable-diffusion-webui/models/Stable-diffusion": 2}  # the .txt and .png not counted
    assert got[("AUTOMATIC1111", "loras")] == {"stable-diffusion-webui/models/Lora": 1,
                                               "stable-diffusion-webui/models/LyCORIS": 1}
    assert got[("AUTOMATIC1111", "vae")] == {"stable-diffusion-webui/models/VAE": 1}
    assert got[("AUTOMATIC1111", "embeddings")] == {"stable-diffusion-webui/embeddings": 1}
    assert got[("Forge", "checkpoints")] == {
        "stable-diffusion-webui-forge/models/Stable-diffusion": 2}


def test_upscaler_folders_of_a1111_comfyui_and_invokeai(tmp_path: Path) -> None:
    root = a1111(tmp_path / "stable-diffusion-webui")
    touch(root / "models" / "ESRGAN" / "4x-UltraSharp.pth")
    touch(root / "models" / "RealESRGAN" / "RealESRGAN_x4plus.pth")
    touch(root / "models" / "DAT" / "DAT_x4.safetensors")
    touch(root / "models" / "ESRGAN" / "readme.txt")
    touch(tmp_path / "elsewhere" / "swin" / "SwinIR_4x.pth")
    write(root / "webui-user.sh",
          f'export COMMANDLINE_ARGS="--swinir-models-path {tmp_path / "elsewhere" / "swin"}"\n')
    comfy(tmp_path / "ComfyUI")
    invoke = tmp_path / "invokeai"
    write(invoke / "invokeai.yaml", "schema_version: 4.0.2\n")
    touch(invoke / "models" / "sd-1" / "main" / "x.safetensors", 2 << 30)
    touch(invoke / "models" / "any" / "spandrel_image_to_image" / "2x.safetensors")
    got = found(tmp_path)
    assert got[("AUTOMATIC1111", "upscalers")] == {
        "stable-diffusion-webui/models/ESRGAN": 1, "stable-diffusion-webui/models/RealESRGAN": 1,
        "stable-diffusion-webui/models/DAT": 1, "elsewhere/swin": 1}
    assert got[("ComfyUI", "upscalers")] == {"ComfyUI/models/upscale_models": 1}
    assert got[("InvokeAI", "upscalers")] == {"invokeai/models/any/spandrel_image_to_image": 1}
    settings = add_folders(EngineSettings(), find_other_apps(
        home=tmp_path, environ={}, platform="linux").folders())
    assert str(tmp_path / "ComfyUI" / "models" / "upscale_models") in settings.upscaler_dirs


def test_windows_packages_one_level_down_and_drive_roots(tmp_path: Path) -> None:
    """sd.webui/webui (A1111's Windows zip), webui_forge_cu121_torch231/webui (Forge's),
    ComfyUI_windows_portable/ComfyUI, Fooocus_win64_2-5-0/Fooocus, under %USERPROFILE%."""
    profile = tmp_path / "Users" / "ann"
    a1111(profile / "Downloads" / "sd.webui" / "webui")
    a1111(profile / "Desktop" / "webui_forge_cu121_torch231" / "webui", forge=True)
    comfy(profile / "ComfyUI_windows_portable" / "ComfyUI")
    fooocus = profile / "AI" / "Fooocus_win64_2-5-0" / "Fooocus"
    touch(fooocus / "entry_with_update.py")
    touch(fooocus / "models" / "checkpoints" / "juggernautXL_v8Rundiffusion.safetensors")
    got = found(tmp_path / "elsewhere", platform="win32", environ={"USERPROFILE": str(profile)})
    assert {app for app, _ in got} == {"AUTOMATIC1111", "Forge", "ComfyUI", "Fooocus"}
    assert str(profile / "Downloads/sd.webui/webui/models/Stable-diffusion") in got[
        ("AUTOMATIC1111", "checkpoints")]
    assert str(profile / "AI/Fooocus_win64_2-5-0/Fooocus/models/checkpoints") in got[
        ("Fooocus", "checkpoints")]


def test_drive_roots_on_windows() -> None:
    bases = other_apps.base_folders(Path("C:/Users/ann"), {}, "win32")
    assert Path("D:\\") in bases and Path("C:\\") in bases
    assert Path("/opt") not in bases
    mac = other_apps.base_folders(Path("/Users/ann"), {}, "darwin")
    assert Path("/Users/ann/Applications") in mac and Path("/opt") in mac


def test_comfyui_default_folders_and_diffusers_counted_once(tmp_path: Path) -> None:
    comfy(tmp_path / "ComfyUI")
    got = found(tmp_path)
    assert got[("ComfyUI", "checkpoints")] == {"ComfyUI/models/checkpoints": 1,
                                               "ComfyUI/models/diffusers": 1}
    assert got[("ComfyUI", "loras")] == {"ComfyUI/models/loras": 1}
    assert got[("ComfyUI", "vae")] == {"ComfyUI/models/vae": 1}
    assert got[("ComfyUI", "embeddings")] == {"ComfyUI/models/embeddings": 1}


def test_comfyui_extra_model_paths_yaml(tmp_path: Path) -> None:
    """As extra_model_paths.yaml.example: an a1111 section with base_path and a multi-line
    loras value, and a section without base_path (paths relative to the yaml)."""
    root = comfy(tmp_path / "ComfyUI")
    shared = tmp_path / "shared"
    touch(shared / "models" / "Stable-diffusion" / "x.safetensors")
    touch(shared / "models" / "Lora" / "l1.safetensors")
    touch(shared / "models" / "LyCORIS" / "l2.safetensors")
    touch(shared / "models" / "VAE" / "v.safetensors")
    touch(shared / "embeddings" / "e.pt")
    touch(root / "more" / "ckpts" / "y.ckpt")
    write(root / "extra_model_paths.yaml", f"""\
#Rename this to extra_model_paths.yaml and ComfyUI will load it
a1111:
    base_path: {shared}/   # the webui's folder

    checkpoints: models/Stable-diffusion
    configs: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS
    upscale_models: |
                  models/ESRGAN
    embeddings: embeddings
    controlnet: models/ControlNet
other_ui:
    checkpoints: "more/ckpts"
    custom_nodes: path/custom_nodes
""")
    got = found(tmp_path)
    assert got[("ComfyUI", "checkpoints")]["shared/models/Stable-diffusion"] == 1
    assert got[("ComfyUI", "checkpoints")]["ComfyUI/more/ckpts"] == 1
    assert got[("ComfyUI", "loras")] == {"ComfyUI/models/loras": 1,
                                         "shared/models/Lora": 1, "shared/models/LyCORIS": 1}
    assert "shared/models/VAE" in got[("ComfyUI", "vae")]
    assert "shared/embeddings" in got[("ComfyUI", "embeddings")]


def test_comfyui_desktop_base_and_config(tmp_path: Path) -> None:
    """The Desktop app: a base folder with models/ and custom_nodes/ (no code) in Documents,
    and extra_models_config.yaml in its user-data folder (~/.config/ComfyUI on Linux)."""
    base = tmp_path / "Documents" / "ComfyUI"
    (base / "custom_nodes").mkdir(parents=True)
    touch(base / "models" / "checkpoints" / "a.safetensors")
    other = tmp_path / "big-disk" / "comfy-models"
    touch(other / "loras" / "b.safetensors")
    write(tmp_path / ".config" / "ComfyUI" / "extra_models_config.yaml", f"""\
comfyui_desktop:
  base_path: {base}
  checkpoints: models/checkpoints/
  loras: models/loras/
more:
  base_path: {other}
  loras: loras/
""")
    got = found(tmp_path)
    assert got[("ComfyUI", "checkpoints")] == {"Documents/ComfyUI/models/checkpoints": 1}
    assert got[("ComfyUI", "loras")] == {"big-disk/comfy-models/loras": 1}


def test_invokeai_typed_layout_and_models_dir(tmp_path: Path) -> None:
    """InvokeAI 3.x/4.x: <models_dir>/<base>/<type>/; models_dir from invokeai.yaml (4.x
    top level), root from INVOKEAI_ROOT."""
    root = tmp_path / "srv" / "invoke-root"
    write(root / "invokeai.yaml", "# Internal metadata\nschema_version: 4.0.2\n\n"
                                  "# Put user settings here\nmodels_dir: my-models\n")
    models = root / "my-models"
    touch(models / "sd-1" / "main" / "dreamshaper.safetensors")
    write(models / "sdxl" / "main" / "juggernaut" / "model_index.json", "{}")
    touch(models / "sd-1" / "lora" / "l.safetensors")
    touch(models / "sdxl" / "vae" / "v.safetensors")
    touch(models / "sd-1" / "embedding" / "e.pt")
    touch(models / ".download_cache" / "x.safetensors")
    got = found(tmp_path, environ={"INVOKEAI_ROOT": str(root)})
    assert got[("InvokeAI", "checkpoints")] == {"srv/invoke-root/my-models/sd-1/main": 1,
                                                "srv/invoke-root/my-models/sdxl/main": 1}
    assert got[("InvokeAI", "loras")] == {"srv/invoke-root/my-models/sd-1/lora": 1}
    assert got[("InvokeAI", "vae")] == {"srv/invoke-root/my-models/sdxl/vae": 1}
    assert got[("InvokeAI", "embeddings")] == {"srv/invoke-root/my-models/sd-1/embedding": 1}


def test_invokeai_3_nested_paths_and_home_folder(tmp_path: Path) -> None:
    root = tmp_path / "invokeai"
    write(root / "invokeai.yaml", "InvokeAI:\n  Web Server:\n    host: 127.0.0.1\n"
                                  "    allow_methods:\n    - '*'\n  Paths:\n"
                                  "    models_dir: '/nonexistent/../" + str(root)[1:]
                                  + "/m3'\n")
    touch(root / "m3" / "sd-1" / "main" / "a.ckpt")
    assert found(tmp_path)[("InvokeAI", "checkpoints")] == {"invokeai/m3/sd-1/main": 1}


def test_invokeai_key_layout_counts_checkpoints_by_size(tmp_path: Path) -> None:
    """InvokeAI 5.x+: every model in models/<key>/; a 2 GiB file is a checkpoint, a 150 MB
    one (a LoRA) is not counted."""
    root = tmp_path / "invokeai"
    write(root / "invokeai.yaml", "schema_version: 4.0.2\n")
    touch(root / "models" / "0b6a3f3e-1c1d-4b2e-9a1e-2f3b4c5d6e7f" / "sd15.safetensors",
          2 * 1024 ** 3)
    touch(root / "models" / "5c1e9f00-aaaa-bbbb-cccc-000000000001" / "lora.safetensors",
          150 * 1024 ** 2)
    touch(root / "models" / "sd-1" / "lora" / "old.safetensors")
    got = found(tmp_path)
    assert got[("InvokeAI", "checkpoints")] == {"invokeai/models": 1}
    assert got[("InvokeAI", "loras")] == {"invokeai/models/sd-1/lora": 1}


def test_fooocus_config_txt(tmp_path: Path) -> None:
    root = tmp_path / "Fooocus"
    touch(root / "entry_with_update.py")
    touch(root / "models" / "checkpoints" / "default.safetensors")
    a, b = tmp_path / "ckpt-a", tmp_path / "ckpt-b"
    touch(a / "x.safetensors")
    touch(b / "y.safetensors")
    touch(b / "z.safetensors")
    touch(root / "models" / "loras" / "l.safetensors")
    touch(tmp_path / "vae" / "v.safetensors")
    write(root / "config.txt", json.dumps({
        "path_checkpoints": [str(a), str(b)],
        "path_loras": str(tmp_path / "missing"),  # does not exist: Fooocus uses its default
        "path_vae": "../vae",
        "default_model": "x.safetensors"}))
    got = found(tmp_path)
    assert got[("Fooocus", "checkpoints")] == {"ckpt-a": 1, "ckpt-b": 2}
    assert got[("Fooocus", "loras")] == {"Fooocus/models/loras": 1}
    assert got[("Fooocus", "vae")] == {"vae": 1}


def test_swarmui_settings_fds(tmp_path: Path) -> None:
    root = tmp_path / "SwarmUI"
    other = tmp_path / "nas" / "models"
    write(root / "Data" / "Settings.fds", f"""\
# SwarmUI settings
Paths:
\t# Root path for model files.
\tModelRoot: Models;{other}
\tSDModelFolder: Stable-Diffusion;checkpoints
\tSDLoraFolder: Lora
\tOutputPath: Output
Network:
\tHost: localhost
\tSDModelFolder: not-this-section
""")
    touch(root / "Models" / "Stable-Diffusion" / "a.safetensors")
    touch(root / "Models" / "Lora" / "l.safetensors")
    touch(other / "checkpoints" / "b.safetensors")
    touch(other / "Embeddings" / "e.safetensors")
    got = found(tmp_path)
    assert got[("SwarmUI", "checkpoints")] == {"SwarmUI/Models/Stable-Diffusion": 1,
                                               "nas/models/checkpoints": 1}
    assert got[("SwarmUI", "loras")] == {"SwarmUI/Models/Lora": 1}
    assert got[("SwarmUI", "embeddings")] == {"nas/models/Embeddings": 1}


def test_webui_user_commandline_args(tmp_path: Path) -> None:
    root = a1111(tmp_path / "stable-diffusion-webui")
    elsewhere = tmp_path / "d" / "checkpoints"
    touch(elsewhere / "c.safetensors")
    touch(tmp_path / "d" / "loras" / "l.safetensors")
    write(root / "webui-user.sh", f"""#!/bin/bash
#export COMMANDLINE_ARGS="--ckpt-dir /nowhere"
export COMMANDLINE_ARGS="--xformers --ckpt-dir '{elsewhere}' --lora-dir={tmp_path}/d/loras"
""")
    got = found(tmp_path)
    assert got[("AUTOMATIC1111", "checkpoints")] == {
        "d/checkpoints": 1, "stable-diffusion-webui/models/Stable-diffusion": 2}
    assert got[("AUTOMATIC1111", "loras")]["d/loras"] == 1
    bat = write(tmp_path / "w" / "webui-user.bat",
                '@echo off\nset COMMANDLINE_ARGS=--ckpt-dir "D:\\SD Models" --medvram\n'
                'rem set COMMANDLINE_ARGS=--vae-dir X\ncall webui.bat\n')
    assert other_apps.webui_commandline_args(bat.parent) == ["--ckpt-dir", "D:\\SD Models",
                                                             "--medvram"]


def test_forge_ref_a1111_home_and_data_dir(tmp_path: Path) -> None:
    a1111(tmp_path / "other" / "my-webui")  # not in a usual place: found through Forge
    forge = tmp_path / "stable-diffusion-webui-forge"
    touch(forge / "webui.py")
    (forge / "modules").mkdir()
    (forge / "modules_forge").mkdir()
    data = tmp_path / "forge-data"
    touch(data / "models" / "Stable-diffusion" / "f.safetensors")
    write(forge / "webui-user.sh", f'export COMMANDLINE_ARGS="--data-dir {data} '
                                   f'--forge-ref-a1111-home {tmp_path}/other/my-webui"\n')
    got = found(tmp_path)
    assert got[("Forge", "checkpoints")] == {
        "forge-data/models/Stable-diffusion": 1,
        "other/my-webui/models/Stable-diffusion": 2}


def test_stability_matrix_portable_packages(tmp_path: Path) -> None:
    packages = tmp_path / "StabilityMatrix" / "Data" / "Packages"
    comfy(packages / "ComfyUI")
    a1111(packages / "stable-diffusion-webui-forge", forge=True)
    got = found(tmp_path)
    assert ("ComfyUI", "checkpoints") in got and ("Forge", "checkpoints") in got


# ====================================================================== what is not offered
def test_nothing_found_and_empty_installs_left_out(tmp_path: Path) -> None:
    assert find_other_apps(home=tmp_path, environ={}, platform="linux").installs == ()
    root = tmp_path / "ComfyUI"
    touch(root / "folder_paths.py")
    (root / "comfy").mkdir()
    for kind in ("checkpoints", "loras", "vae"):
        (root / "models" / kind).mkdir(parents=True)
    touch(root / "models" / "checkpoints" / "put_checkpoints_here")
    assert find_other_apps(home=tmp_path, environ={}, platform="linux").installs == ()
    (tmp_path / "stable-diffusion-webui" / "models" / "Stable-diffusion").mkdir(parents=True)
    touch(tmp_path / "stable-diffusion-webui" / "models" / "Stable-diffusion" / "a.safetensors")
    # no webui.py: a folder with that name is not an install
    assert find_other_apps(home=tmp_path, environ={}, platform="linux").installs == ()


def test_a_folder_is_offered_once(tmp_path: Path) -> None:
    """A ComfyUI pointing at the A1111 models (extra_model_paths) and a link to an install:
    each folder once, under the install found first."""
    webui = a1111(tmp_path / "stable-diffusion-webui")
    root = comfy(tmp_path / "ComfyUI")
    write(root / "extra_model_paths.yaml",
          f"a1111:\n  base_path: {webui}\n  checkpoints: models/Stable-diffusion\n")
    os.symlink(webui, tmp_path / "stable-diffusion-webui-link")
    result = find_other_apps(home=tmp_path, environ={}, platform="linux")
    folders = [Path(f.folder).resolve() for f in result.folders()]
    assert len(folders) == len(set(folders))
    assert [i.app for i in result.installs] == ["ComfyUI", "AUTOMATIC1111"]


def test_untrusted_config_paths_refused(tmp_path: Path) -> None:
    base, home = tmp_path, tmp_path / "home"
    assert other_apps._config_path("\\\\evil-server\\share\\models", base, home, {}) is None
    assert other_apps._config_path("//evil-server/share", base, home, {}) is None
    assert other_apps._config_path("a\x00b", base, home, {}) is None
    assert other_apps._config_path("a\nb", base, home, {}) is None
    assert other_apps._config_path("x" * 5000, base, home, {}) is None
    assert other_apps._config_path("   ", base, home, {}) is None
    assert other_apps._config_path(42, base, home, {}) is None
    assert other_apps._config_path("$SHARE/m", base, home, {"SHARE": "\\\\srv\\s"}) is None
    assert other_apps._config_path("~/m", base, home, {}) == home / "m"
    assert other_apps._config_path("${D}/m", base, home, {"D": "/data"}) == Path("/data/m")
    assert other_apps._config_path("rel/../m", base, home, {}) == base / "m"


def test_config_files_read_within_limits(tmp_path: Path) -> None:
    """A huge or non-regular config is not read; a malformed one gives defaults; the search
    never raises."""
    root = tmp_path / "Fooocus"
    touch(root / "entry_with_update.py")
    touch(root / "models" / "checkpoints" / "a.safetensors")
    write(root / "config.txt", '{"path_checkpoints": ' + "[" * 5000 + "]" * 5000 + "}")
    assert found(tmp_path)[("Fooocus", "checkpoints")] == {"Fooocus/models/checkpoints": 1}
    big = root / "config.txt"
    big.write_text(json.dumps({"path_checkpoints": str(tmp_path)}) + " " * (
        other_apps.MAX_CONFIG_BYTES + 10))
    assert other_apps._read_text(big) == ""
    os.mkfifo(tmp_path / "fifo")
    assert other_apps._read_text(tmp_path / "fifo") == ""  # a FIFO never blocks the search
    write(tmp_path / "ComfyUI" / "extra_model_paths.yaml", "\x00\t: : |\n  - [\n" * 50)
    touch(tmp_path / "ComfyUI" / "folder_paths.py")
    (tmp_path / "ComfyUI" / "comfy").mkdir()
    touch(tmp_path / "ComfyUI" / "models" / "checkpoints" / "c.safetensors")
    assert found(tmp_path)[("ComfyUI", "checkpoints")] == {"ComfyUI/models/checkpoints": 1}


def test_simple_yaml_and_fds_parsers() -> None:
    text = ("a:\n  base_path: '/x # not a comment'  # a comment\n  loras: |\n    one\n\n"
            "    two\n  vae: v\nb:\n  c:\n    d: \"e\"\nlist:\n  - item\n")
    assert simple_yaml(text) == {"a": {"base_path": "/x # not a comment", "loras": "one\ntwo",
                                       "vae": "v"}, "b": {"c": {"d": "e"}}, "list": {}}
    assert simple_yaml("::\n: x\n  - y: z\n") == {}
    assert fds_section("Paths:\n\tA: 1\n\t# c\n\tB: two words\nOther:\n\tA: 3\n", "Paths") == {
        "A": "1", "B": "two words"}


# ============================================================================== bounded
def test_count_stops_at_limits(tmp_path: Path) -> None:
    for i in range(30):
        touch(tmp_path / "m" / f"{i}.safetensors")
    assert count_model_files(tmp_path / "m", (".safetensors",), limit=10) == (10, False)
    deep = tmp_path / "deep"
    touch(deep / "1" / "2" / "3" / "x.safetensors")
    assert count_model_files(deep, (".safetensors",), max_depth=2) == (0, False)
    assert count_model_files(deep, (".safetensors",), max_depth=5) == (1, True)
    os.symlink(deep, deep / "1" / "loop")
    assert count_model_files(deep, (".safetensors",)) == (1, True)  # the loop walked once


def test_time_budget_and_cancel(tmp_path: Path) -> None:
    a1111(tmp_path / "stable-diffusion-webui")
    comfy(tmp_path / "ComfyUI")
    ticks = iter(range(10_000))
    result = find_other_apps(home=tmp_path, environ={}, platform="linux", budget_s=3,
                             clock=lambda: float(next(ticks)))
    assert not result.complete
    assert len(result.folders()) < 9
    result = find_other_apps(home=tmp_path, environ={}, platform="linux",
                             cancelled=lambda: True)
    assert not result.complete and result.installs == ()


# ============================================================================= settings
def test_add_folders_to_engine_settings() -> None:
    engine = EngineSettings(model_dirs=("/mine",), lora_dirs=("/l",))
    folders = [FoundFolder("ComfyUI", "checkpoints", "/c/ckpt", 3),
               FoundFolder("ComfyUI", "loras", "/l", 1),  # already there
               FoundFolder("ComfyUI", "loras", "/c/loras", 2),
               FoundFolder("ComfyUI", "vae", "/c/vae", 1),
               FoundFolder("ComfyUI", "embeddings", "/c/emb", 1)]
    new = add_folders(engine, folders)
    assert new.model_dirs == ("/mine", "/c/ckpt")
    assert new.lora_dirs == ("/l", "/c/loras")
    assert new.vae_dirs == ("/c/vae",)
    assert new.embedding_dirs == ("/c/emb",)
    assert add_folders(new, folders) == new
    assert new.device == engine.device


@pytest.mark.parametrize(("files", "complete", "text"), [(1, True, "1 file"),
                                                          (2, True, "2 files"),
                                                          (10000, False, "10000+ files")])
def test_count_text(files: int, complete: bool, text: str) -> None:
    assert FoundFolder("A", "vae", "/x", files, complete).count_text == text


def test_identify(tmp_path: Path) -> None:
    assert identify(tmp_path / "missing") is None
    swarm = tmp_path / "s"
    touch(swarm / "src" / "SwarmUI.csproj")
    assert identify(swarm) == "SwarmUI"
