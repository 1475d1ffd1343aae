"""The hostile-config attack through the commands people run: ``sdstudio generate --model``
and a prompt-list line's ``--model``. Each refuses with one line (exit 2) and writes nothing
outside SD Studio's folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdstudio.engine.ldm_layout import embedded_config
from tests.engine._ldm_fixtures import write_single_file
from tests.engine.test_hostile_configs import _with_metadata


def _hostile(tiny_models: dict[str, Path], tmp_path: Path, victim: Path) -> Path:
    single = write_single_file(tiny_models["sd1"], tmp_path / "tiny.safetensors")
    cfg = embedded_config(tiny_models["sd1"])
    cfg["model_index"][str(victim / "planted")] = ["diffusers", "AutoencoderKL"]
    cfg[str(victim / "planted")] = {"in_channels": 3}
    return _with_metadata(single, tmp_path / "hostile.safetensors", json.dumps(cfg))


def test_generate_and_batch_refuse_a_hostile_model(run_cli: Any, tiny_models: dict[str, Path],
                                                   tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    model = _hostile(tiny_models, tmp_path, victim)
    proc = run_cli(["generate", "--prompt", "x", "--model", str(model), "--width", "64",
                    "--height", "64", "--steps", "1", "--out", str(tmp_path / "out")])
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "hostile.safetensors" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    listing = tmp_path / "list.txt"
    listing.write_text(f'--prompt "a cat" --model "{model}" --width 64 --height 64 --steps 1\n')
    proc = run_cli(["batch", str(listing), "--out", str(tmp_path / "batch")])
    assert proc.returncode == 1, proc.stderr  # the line's image failed, with its reason
    assert "component SD Studio does not load" in proc.stderr
    assert list(victim.iterdir()) == []
