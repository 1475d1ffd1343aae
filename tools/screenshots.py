"""Render the main window in each tab to PNG files in docs/screenshots/.

Run in a real (virtual) display so window decorations, fonts and HiDPI scaling are real:

    xvfb-run -a -s "-screen 0 1280x720x24" python tools/screenshots.py [--dark]
    xvfb-run -a -s "-screen 0 1920x1080x24" python tools/screenshots.py --suffix=-1080p

The window is maximised on that screen (with a window manager such as openbox running, as a
person's desktop would have), so the shots show what a laptop or a full-HD screen shows.

It drives the real app: the real worker and engine with the tiny demo model (untrained, so
the generated images are noise), a generation in the text-to-image tab, a source image in the
image-to-image tab, a painted mask in the inpaint tab, a batch running in the batch tab (some
items done, one failed with its reason, one running), the gallery, the settings dialog and
the model manager (model files with real headers, sparse, in SD Studio's own folders).
With ``--dark`` only the text-to-image tab is rendered (as ``text-to-image-dark.png``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SDSTUDIO_HOME", tempfile.mkdtemp(prefix="sdstudio-shots-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def pump(app: Any, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.005)


def wait(app: Any, cond: Any, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise SystemExit("timed out")
        app.processEvents()
        time.sleep(0.005)


def scenery(width: int = 768, height: int = 512) -> Any:
    """A synthetic landscape (sky gradient, sun, hills, lake) as a source image."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    y = np.linspace(0, 1, height)[:, None]
    sky = np.stack([40 + 180 * y, 90 + 120 * y, 170 + 60 * y], -1) * np.ones((1, width, 1))
    img = Image.fromarray(sky.clip(0, 255).astype("uint8"))
    d = ImageDraw.Draw(img)
    d.ellipse((520, 90, 610, 180), fill=(255, 214, 140))
    for i, (base, colour) in enumerate(((330, (58, 98, 70)), (370, (40, 76, 52)))):
        pts = [(x, base + 40 * math.sin(x / (90 + 30 * i) + i)) for x in range(0, width + 8, 8)]
        d.polygon([*pts, (width, height), (0, height)], fill=colour)
    d.rectangle((0, 420, width, height), fill=(60, 110, 150))
    d.polygon([(300, 300), (340, 180), (380, 300)], fill=(230, 230, 235))
    return img.filter(ImageFilter.SMOOTH)


def sample_models() -> None:
    """Model files as a person's folders hold them (headers only, sparse) for the model
    manager's screenshot: checkpoints, LoRAs, a VAE, an embedding, an upscaler, a ControlNet."""
    from sdstudio.core.paths import model_dir
    from sdstudio.testing.model_files import write_safetensors

    def _safetensors(path: Path, tensors: dict[str, list[int]], size: int,
                     metadata: dict[str, str] | None = None) -> None:
        write_safetensors(path, tensors, metadata=metadata, dtype="F16", size=size)

    unet = "model.diffusion_model."
    ctx = unet + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
    sd1 = {"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight":
           [49408, 768], unet + "input_blocks.0.0.weight": [320, 4, 3, 3], ctx: [640, 768]}
    xl = {"conditioner.embedders.1.model.token_embedding.weight": [49408, 1280],
          unet + "input_blocks.0.0.weight": [320, 4, 3, 3], ctx: [640, 2048]}
    gib = 1024 ** 3
    _safetensors(model_dir("checkpoint") / "dreamshaper_8.safetensors", sd1, int(2.13 * gib))
    _safetensors(model_dir("checkpoint") / "sd_xl_base_1.0.safetensors", xl, int(6.94 * gib))
    lora = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"
    _safetensors(model_dir("lora") / "add_detail.safetensors", {lora: [8, 768]}, 37_861_176)
    _safetensors(model_dir("lora") / "lcm-lora-sdxl.safetensors",
                 {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": [64, 1280]},
                 393_854_592)
    _safetensors(model_dir("vae") / "sdxl_vae.safetensors", {"encoder.conv_in.weight":
                 [128, 3, 3, 3]}, 334_641_164, {"modelspec.architecture":
                                                "stable-diffusion-xl-v1-base/vae"})
    _safetensors(model_dir("embedding") / "easynegative.safetensors", {"emb_params": [8, 768]},
                 24_655)
    _safetensors(model_dir("controlnet") / "control_v11p_sd15_canny.safetensors",
                 {"input_hint_block.0.weight": [16, 3, 3, 3],
                  "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 768]},
                 1_445_157_124)
    upscaler = model_dir("upscaler") / "RealESRGAN_x4plus.pth"
    upscaler.parent.mkdir(parents=True, exist_ok=True)
    with open(upscaler, "wb") as fh:
        fh.write(b"PK\x03\x04")
        fh.truncate(67_040_989)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--dark", action="store_true",
                        help="use the dark palette (text-to-image only)")
    parser.add_argument("--suffix", default="", help="added to every file name")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = ("-dark" if args.dark else "") + args.suffix

    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["sdstudio"])
    assert isinstance(app, QApplication)
    app.setApplicationName("SD Studio")
    from sdstudio.core.settings import EngineSettings, Settings
    from sdstudio.ui.main_window import TAB_IMG2IMG, TAB_INPAINT, MainWindow
    from sdstudio.ui.settings_dialog import SettingsDialog
    from sdstudio.ui.theme import app_icon, apply_theme
    from sdstudio.worker import JobQueue

    apply_theme(app, "dark" if args.dark else "light")
    app.setWindowIcon(app_icon())
    out_dir = Path(os.environ["SDSTUDIO_HOME"]) / "outputs"
    settings = Settings(output_dir=str(out_dir), engine=EngineSettings())
    queue = JobQueue(settings=settings.engine)
    window = MainWindow(settings, queue)
    window.showMaximized()
    window.start()
    from sdstudio.app import _add_optional_panels
    from sdstudio.ui.batch_panel import BatchPanel

    _add_optional_panels(window, queue)  # the batch tab, as the app adds it
    wait(app, lambda: queue.loaded is not None)
    p = window.prompt_panel

    def shoot(name: str, widget: Any = None) -> None:
        pump(app, 0.4)
        path = args.out / f"{name}{suffix}.png"
        (widget or window).grab().save(str(path))
        print(path)

    # ---- the first start's welcome panel (over the text-to-image result), then closed
    if window.welcome is not None and not args.dark:
        pump(app, 2.0)  # its folder search runs in the background
        shoot("welcome")
        window.welcome.close_button.click()
    elif window.welcome is not None:
        window.welcome.close_button.click()

    # ---- text to image after a few generations
    p.prompt_edit.setPlainText("a lighthouse on a rocky cliff at dusk, dramatic clouds, "
                               "oil painting, warm light, highly detailed")
    p.negative_edit.setPlainText("blurry, low quality, watermark")
    p.set_size(512, 512)
    p.widget("steps").setValue(6)
    p.widget("sampler").setCurrentText("DPM++ 2M")
    p.widget("schedule_type").setCurrentText("Karras")
    p.widget("seed").setText("20240611")
    for _ in range(3):
        window.generate()
    p.widget("seed").setText("-1")
    wait(app, lambda: all(j.state.finished for j in queue.jobs()))
    p.widget("steps").setValue(150)
    long_job = window.generate()  # caught mid-way for the progress bar
    wait(app, lambda: queue.job(long_job).step >= 12)  # type: ignore[union-attr]
    window.generate()
    pump(app, 0.3)
    shoot("text-to-image")
    queue.cancel_all()
    wait(app, lambda: all(j.state.finished for j in queue.jobs()))
    p.widget("steps").setValue(6)
    if args.dark:
        window.close()
        return 0

    # ---- image to image with a source image
    src = Path(os.environ["SDSTUDIO_HOME"]) / "landscape.png"
    scenery().save(src)
    window.tabs.setCurrentIndex(TAB_IMG2IMG)
    window.source_canvas.load_file(str(src))
    p.prompt_edit.setPlainText("the same valley in winter, snow, golden hour")
    p.set_size(768, 512)
    p.widget("strength").setValue(0.6)
    window.generate()
    wait(app, lambda: all(j.state.finished for j in queue.jobs()))
    shoot("image-to-image")

    # ---- inpaint with a painted mask
    window.tabs.setCurrentIndex(TAB_INPAINT)
    canvas = window.mask_canvas
    canvas.load_file(str(src))
    canvas.set_brush_size(48)
    pump(app, 0.3)
    view = canvas.viewer

    def send(kind: Any, x: float, y: float, buttons: Any) -> None:
        pos = view.map_from_image(QPointF(x, y))
        ev = QMouseEvent(kind, pos, view.mapToGlobal(pos), Qt.MouseButton.LeftButton,
                         buttons, Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(view, ev)

    pts = [(300 + 60 * math.cos(t / 6), 230 + 50 * math.sin(t / 6)) for t in range(0, 40)]
    send(QMouseEvent.Type.MouseButtonPress, *pts[0], Qt.MouseButton.LeftButton)
    for x, y in pts[1:]:
        send(QMouseEvent.Type.MouseMove, x, y, Qt.MouseButton.LeftButton)
    send(QMouseEvent.Type.MouseButtonRelease, *pts[-1], Qt.MouseButton.NoButton)
    p.prompt_edit.setPlainText("a small wooden cabin with a glowing window")
    p.widget("mask_blur").setValue(8)
    window.generate()
    wait(app, lambda: all(j.state.finished for j in queue.jobs()))
    shoot("inpaint")

    # ---- the Control section: a canny unit on the landscape, its preview computed
    p.show_control(True)
    section = p.control_section
    unit = section.add_unit()
    assert unit is not None
    unit.slot.load_file(str(src))
    unit.set_module("canny")
    unit.res_spin.setValue(384)
    unit.preview_button.click()
    wait(app, lambda: not unit.preview.pixmap().isNull())
    window.prompt_scroll.ensureWidgetVisible(section.tabs, 0, 0)
    shoot("control")
    section.clear_units()
    p.show_control(False)

    # ---- batch: a prompt list, some items done, one failed (a damaged init image), one
    # caught running, the rest pending; a single generation queued behind it
    panel = next(window.tabs.widget(i) for i in range(window.tabs.count())
                 if isinstance(window.tabs.widget(i), BatchPanel))
    queue.clear_finished()
    home = Path(os.environ["SDSTUDIO_HOME"])
    damaged = home / "old-photo.png"
    damaged.write_bytes(src.read_bytes()[:300])  # a truncated PNG
    prompt_list = home / "overnight-landscapes.txt"
    prompt_list.write_text(
        "# landscapes for the calendar, one image each\n"
        "a lighthouse on a rocky cliff at dusk, dramatic clouds, oil painting\n"
        "a misty pine forest at dawn, soft light, watercolour\n"
        "--prompt \"a desert canyon at noon, long shadows\" --seed 7 --cfg_scale 6\n"
        f"--prompt \"the old farmhouse, restored\" --init_image {damaged} "
        "--denoising_strength 0.5\n"
        "--prompt \"a harbour at night, lanterns reflected in the water\" --steps 150\n"
        "a glacier lake under the northern lights\n"
        "an alpine meadow with wild flowers, morning dew\n"
        "--prompt \"a rainy street in a small town, umbrellas\" --negative_prompt "
        "\"people, cars\"\n", encoding="utf-8")
    p.set_size(512, 512)
    p.widget("steps").setValue(6)
    p.widget("seed").setText("1000")
    window.tabs.setCurrentWidget(panel)
    panel.open_list(prompt_list)
    panel.start()
    wait(app, lambda: any(state == "running" and line == 6
                          for line, state, _ in panel.item_states()))
    running = queue.running_job
    wait(app, lambda: running is not None and running.step >= 40)
    window.generate()  # a single image waits for the batch
    pump(app, 0.3)
    shoot("batch")
    panel.cancel()
    queue.cancel_all()
    wait(app, lambda: not panel.controller.running and not queue.busy)
    window.tabs.setCurrentIndex(0)

    # ---- gallery
    window.tabs.setCurrentWidget(window.gallery)
    window.gallery.list.setCurrentRow(0)
    pump(app, 0.8)
    shoot("gallery")

    # ---- settings dialog
    dialog = SettingsDialog(window.settings, window)
    dialog.model_dirs.add_folder(str(Path.home() / "models" / "Stable-diffusion"))
    dialog.lora_dirs.add_folder(str(Path.home() / "models" / "Lora"))
    dialog.tabs.setCurrentIndex(1)
    dialog.show()
    pump(app, 0.5)
    shoot("settings", dialog)
    dialog.tabs.setCurrentIndex(0)
    shoot("settings-output", dialog)
    dialog.tabs.setCurrentIndex(2)
    shoot("settings-device", dialog)
    dialog.close()

    # ---- the model manager (Models…): the installed models, then the Download tab (online:
    # opening it fetches nothing; HF_HUB_OFFLINE only says whether a download may start)
    from sdstudio.core.paths import model_dir

    sample_models()
    offline = os.environ.pop("HF_HUB_OFFLINE", None)
    manager = window.open_model_manager()
    wait(app, lambda: manager.listed_count >= 1)
    manager.select_path(str(model_dir("checkpoint") / "sd_xl_base_1.0.safetensors"))
    shoot("models", manager)
    manager.tabs.setCurrentIndex(1)
    manager.downloads.select_entry("sdxl-vae-fp16-fix")
    shoot("models-download", manager)
    manager.close()
    if offline is not None:
        os.environ["HF_HUB_OFFLINE"] = offline

    # ---- an error, as a person sees it
    window.tabs.setCurrentIndex(0)
    window.show_error("Could not load the model: 'broken.safetensors' is not a valid "
                      "safetensors file (the header is truncated)", "details")
    shoot("error-bar")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
