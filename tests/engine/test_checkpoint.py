"""Safe loading: a model file's format comes from its bytes; pickles load only with
weights_only=True; malicious, renamed, truncated and corrupt files are refused cleanly."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdstudio.core.errors import ModelError
from sdstudio.engine import checkpoint


class _Evil:
    """Unpickling this would create a marker file (os.system-style code execution)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _good_tensors() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
            "b.bias": torch.ones(4, dtype=torch.float16)}


@pytest.fixture()
def safetensors_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.safetensors"
    save_file(_good_tensors(), str(path), metadata={"format": "pt"})
    return path


def _malicious(tmp_path: Path, name: str, *, zip_format: bool) -> tuple[Path, Path]:
    marker = tmp_path / f"PWNED-{name}"
    path = tmp_path / name
    payload = {"state_dict": {"w": torch.zeros(2), "evil": _Evil(marker)}}
    if zip_format:
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh, protocol=2)
    assert not marker.exists()
    return path, marker


def test_detects_formats_from_bytes(tmp_path: Path, safetensors_file: Path) -> None:
    assert checkpoint.detect_format(safetensors_file) == "safetensors"
    renamed = tmp_path / "model.ckpt"
    renamed.write_bytes(safetensors_file.read_bytes())
    assert checkpoint.detect_format(renamed) == "safetensors"
    zipped = tmp_path / "weights.safetensors"
    torch.save({"w": torch.zeros(1)}, zipped)
    assert checkpoint.detect_format(zipped) == "torch-zip"
    legacy = tmp_path / "legacy.bin"
    torch.save({"w": torch.zeros(1)}, legacy, _use_new_zipfile_serialization=False)
    assert checkpoint.detect_format(legacy) == "torch-pickle"


@pytest.mark.parametrize("name,zip_format", [
    ("evil.ckpt", True), ("evil.safetensors", True),
    ("evil-legacy.ckpt", False), ("evil-legacy.safetensors", False),
])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, name: str,
                                                    zip_format: bool) -> None:
    path, marker = _malicious(tmp_path, name, zip_format=zip_format)
    with pytest.raises(ModelError) as err:
        checkpoint.load_state_dict(path)
    assert name in str(err.value)
    assert "refused" in str(err.value).lower()
    with pytest.raises(ModelError):
        checkpoint.tensor_shapes(path)
    assert not marker.exists()


@pytest.mark.parametrize("name,zip_format", [("evil.ckpt", True), ("evil-legacy.pt", False)])
def test_pickle_refusal_does_not_pass_on_torchs_unsafe_advice(tmp_path: Path, name: str,
                                                             zip_format: bool) -> None:
    path, marker = _malicious(tmp_path, name, zip_format=zip_format)
    with pytest.raises(ModelError) as err:
        checkpoint.load_state_dict(path)
    message = str(err.value)
    assert "pickle data that can run code" in message and "will not run" in message
    for advice in ("weights_only", "two options", "unsafe", "trust", "add_safe_globals"):
        assert advice not in message.lower(), message
    assert "\n" not in message and "\x1b" not in message
    assert not marker.exists()


def test_pickle_renamed_safetensors_is_not_read_as_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "renamed.safetensors"
    torch.save({"w": torch.zeros(3)}, path)  # a plain (harmless) torch checkpoint
    with pytest.raises(ModelError, match="not a safetensors file"):
        checkpoint.read_safetensors_header(path)
    # the loader handles it by its bytes: the safe pickle path, tensors only
    assert set(checkpoint.load_state_dict(path)) == {"w"}


def test_a1111_state_dict_wrapper_is_unwrapped(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"x": torch.ones(2), "y": torch.zeros(1)}, "global_step": 7,
                "epoch": 1}, path)
    loaded = checkpoint.load_state_dict(path)
    assert set(loaded) == {"x", "y"} and torch.equal(loaded["x"], torch.ones(2))


def test_good_safetensors_header_and_load(safetensors_file: Path) -> None:
    header = checkpoint.read_safetensors_header(safetensors_file)
    assert header.shapes() == {"a.weight": (2, 3), "b.bias": (4,)}
    assert header.metadata == {"format": "pt"}
    loaded = checkpoint.load_state_dict(safetensors_file)
    assert torch.equal(loaded["a.weight"], _good_tensors()["a.weight"])


def _rewrite_header(path: Path, out: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    mutate(header)
    new = json.dumps(header).encode()
    out.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    return out


def _corrupt_variants(src: Path, tmp: Path) -> dict[str, Path]:
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    variants: dict[str, Path] = {}
    variants["truncated"] = tmp / "truncated.safetensors"
    variants["truncated"].write_bytes(raw[:-10])
    variants["header-cut"] = tmp / "header-cut.safetensors"
    variants["header-cut"].write_bytes(raw[: 8 + n // 2])
    variants["huge-length"] = tmp / "huge.safetensors"
    variants["huge-length"].write_bytes(struct.pack("<Q", 2**40) + raw[8:])
    variants["bad-json"] = tmp / "badjson.safetensors"
    variants["bad-json"].write_bytes(raw[:8] + b"{" + b"\xff" * (n - 1) + raw[8 + n:])
    variants["not-object"] = tmp / "list.safetensors"
    body = b"[1, 2]".ljust(n, b" ")
    variants["not-object"].write_bytes(raw[:8] + b"{" + body[1:] + raw[8 + n:])

    def out_of_range(h: dict) -> None:  # type: ignore[type-arg]
        h["a.weight"]["data_offsets"] = [0, 10**9]

    def wrong_size(h: dict) -> None:  # type: ignore[type-arg]
        h["a.weight"]["shape"] = [100, 100]

    def bad_dtype(h: dict) -> None:  # type: ignore[type-arg]
        h["a.weight"]["dtype"] = "EVIL"

    def negative(h: dict) -> None:  # type: ignore[type-arg]
        h["b.bias"]["data_offsets"] = [8, 0]

    for name, fn in [("offsets", out_of_range), ("size", wrong_size), ("dtype", bad_dtype),
                     ("negative", negative)]:
        variants[name] = _rewrite_header(src, tmp / f"{name}.safetensors", fn)
    variants["empty"] = tmp / "empty.safetensors"
    variants["empty"].write_bytes(b"")
    variants["html"] = tmp / "page.safetensors"
    variants["html"].write_bytes(b"<!DOCTYPE html><html>404</html>")
    variants["garbage"] = tmp / "garbage.ckpt"
    variants["garbage"].write_bytes(os.urandom(64).replace(b"PK", b"pk").replace(b"\x80", b"\x81"))
    variants["bad-zip"] = tmp / "badzip.ckpt"
    variants["bad-zip"].write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    return variants


def test_corrupt_files_are_refused_with_their_name(tmp_path: Path,
                                                   safetensors_file: Path) -> None:
    for label, path in _corrupt_variants(safetensors_file, tmp_path).items():
        with pytest.raises(ModelError) as err:
            checkpoint.load_state_dict(path)
        message = str(err.value)
        assert path.name in message, (label, message)
        assert "\n" not in message


def test_corrupt_files_never_crash_the_process(tmp_path: Path, safetensors_file: Path) -> None:
    """Each file is loaded in a fresh interpreter: it must exit cleanly with a ModelError."""
    variants = _corrupt_variants(safetensors_file, tmp_path)
    evil, marker = _malicious(tmp_path, "evil2.safetensors", zip_format=True)
    files = [*variants.values(), evil]
    code = (
        "import sys\n"
        "from sdstudio.core.errors import ModelError\n"
        "from sdstudio.engine.checkpoint import load_state_dict\n"
        "refused = 0\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        load_state_dict(p)\n"
        "    except ModelError:\n"
        "        refused += 1\n"
        "print(refused)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *map(str, files)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(len(files))
    assert not marker.exists()


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        checkpoint.load_state_dict(tmp_path / "nope.safetensors")
    with pytest.raises(ModelError):
        checkpoint.detect_format(tmp_path)


def test_pickle_with_no_tensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.ckpt"
    torch.save({"step": 1}, path)
    with pytest.raises(ModelError, match="no tensors"):
        checkpoint.load_state_dict(path)
