"""Safe reading of model files: the format comes from the file's bytes, never from its name.

* **safetensors** (preferred): an 8-byte little-endian header length, then a JSON header that
  starts with ``{``, then the raw tensor bytes. The header is validated completely (length within
  the file, valid JSON object, known dtypes, every tensor's byte range inside the data area and
  of the size its shape and dtype imply) *before* any tensor is read, so a truncated or corrupt
  file is refused with a clear message instead of crashing the process.
* **PyTorch zip** (``PK\\x03\\x04``, what ``torch.save`` writes since 1.6) and **legacy pickle**
  (``\\x80`` + protocol byte): loaded only through ``torch.load(weights_only=True)``, which
  refuses any pickle that would import or call anything but tensors and plain containers. The
  zip format is memory-mapped (``mmap=True``).
* Anything else is refused.

Every refusal is a :class:`~sdstudio.core.errors.ModelError` naming the file and the reason.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sdstudio.core.errors import ModelError

if TYPE_CHECKING:
    import torch

Format = Literal["safetensors", "torch-zip", "torch-pickle"]

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
SAFETENSORS_DTYPE_BYTES: dict[str, float] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F4": 0.5,
    "F6_E2M3": 0.75, "F6_E3M2": 0.75,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int  # byte offsets inside the data area
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)
    data_start: int = 0  # absolute file offset of the data area

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: info.shape for name, info in self.tensors.items()}


def _refuse(path: Path, reason: str) -> ModelError:
    return ModelError(f"Refused to load {path.name}: {reason}", details=str(path))


def detect_format(path: Path) -> Format:
    """The file's format from its first bytes; ModelError if it is none we load safely."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(16)
    except FileNotFoundError as exc:
        raise ModelError(f"Model file not found: {path}", details=str(path)) from exc
    except OSError as exc:
        raise _refuse(path, f"cannot read it ({exc.strerror or exc})") from exc
    if path.is_dir():
        raise _refuse(path, "it is a folder, not a model file")
    if len(head) >= 9 and head[8:9] == b"{":
        (length,) = struct.unpack("<Q", head[:8])
        if length > size - 8:
            raise _refuse(
                path, f"corrupt safetensors header (header length {length} is larger than "
                f"the file, {size} bytes; the file may be truncated)"
            )
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "torch-pickle"
    if not head:
        raise _refuse(path, "the file is empty")
    if head.startswith((b"<!DOCTYPE", b"<html", b"<HTML")):
        raise _refuse(path, "it is a web page (HTML), not a model; the download probably failed")
    if head.startswith(b"version https://git-lfs"):
        raise _refuse(path, "it is a Git LFS pointer, not the model itself")
    raise _refuse(path, "unknown file format (neither safetensors nor a PyTorch checkpoint)")


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """Parse and validate a safetensors header without reading any tensor data."""
    path = Path(path)
    if detect_format(path) != "safetensors":
        raise _refuse(path, "not a safetensors file (its bytes say otherwise)")
    size = path.stat().st_size
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        if length > MAX_HEADER_BYTES:
            raise _refuse(path, f"safetensors header too large ({length} bytes)")
        raw = fh.read(length)
    if len(raw) != length:
        raise _refuse(path, "truncated safetensors header")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refuse(path, f"corrupt safetensors header (invalid JSON: {exc})") from exc
    if not isinstance(header, dict):
        raise _refuse(path, "corrupt safetensors header (not a JSON object)")
    data_start = 8 + length
    data_len = size - data_start
    metadata_raw = header.pop("__metadata__", None) or {}
    if not isinstance(metadata_raw, dict):
        raise _refuse(path, "corrupt safetensors header (__metadata__ is not an object)")
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v)
                for k, v in metadata_raw.items()}
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        tensors[name] = _tensor_info(path, name, entry, data_len)
    return SafetensorsHeader(tensors, metadata, data_start)


def _tensor_info(path: Path, name: str, entry: Any, data_len: int) -> TensorInfo:
    bad = f"corrupt safetensors header (tensor {name!r}"
    if not isinstance(entry, dict):
        raise _refuse(path, f"{bad} is not described by an object)")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPE_BYTES:
        raise _refuse(path, f"{bad} has unknown dtype {dtype!r})")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _refuse(path, f"{bad} has an invalid shape)")
    if (
        not isinstance(offsets, list) or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise _refuse(path, f"{bad} has invalid data offsets)")
    start, end = offsets
    if not 0 <= start <= end:
        raise _refuse(path, f"{bad} has invalid data offsets {offsets})")
    if end > data_len:
        raise _refuse(
            path, f"tensor {name!r} lies beyond the end of the file "
            f"(offset {end} > {data_len} data bytes); the file is truncated or corrupt"
        )
    expected = math.ceil(math.prod(shape) * SAFETENSORS_DTYPE_BYTES[dtype])
    if end - start != expected:
        raise _refuse(path, f"{bad}: {end - start} bytes stored, its shape needs {expected})")
    return TensorInfo(dtype, tuple(shape), start, end)


def _unwrap(obj: Any) -> Any:
    """A1111-era checkpoints nest the weights under "state_dict" (sometimes twice)."""
    while isinstance(obj, Mapping) and "state_dict" in obj and isinstance(
        obj["state_dict"], Mapping
    ):
        obj = obj["state_dict"]
    return obj


def _torch_load(path: Path, fmt: Format) -> Any:
    import pickle

    import torch

    try:
        if path.suffix.lower() == ".safetensors":
            # torch.load dispatches on a ".safetensors" name; the bytes say pickle: read it
            # as one, through an open file so the name is not looked at.
            with path.open("rb") as fh:
                return torch.load(fh, map_location="cpu", weights_only=True)
        return torch.load(
            path, map_location="cpu", weights_only=True, mmap=(fmt == "torch-zip")
        )
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _refuse(
            path, "the checkpoint contains code or objects other than tensors, which could "
            f"run programs on this computer ({first[:200]})"
        ) from exc
    except Exception as exc:  # corrupt zip, truncated pickle, wrong magic...
        raise _refuse(path, f"not a readable PyTorch checkpoint ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc


def load_state_dict(path: Path, *, device: str = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a model file, loaded safely; ``{name: tensor}`` (non-tensors dropped)."""
    import torch

    path = Path(path)
    fmt = detect_format(path)
    if fmt == "safetensors":
        read_safetensors_header(path)  # validates before safetensors touches the data
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device=device))
        except Exception as exc:
            raise _refuse(path, f"corrupt safetensors file ({exc})") from exc
    obj = _unwrap(_torch_load(path, fmt))
    if not isinstance(obj, Mapping):
        raise _refuse(path, f"it holds a {type(obj).__name__}, not a dictionary of tensors")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise _refuse(path, "it contains no tensors")
    if device != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors


def tensor_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Names and shapes of every tensor, plus safetensors metadata, as cheaply as possible:
    from the header for safetensors (no tensor data read), through a memory-mapped safe
    ``torch.load`` for PyTorch checkpoints."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "safetensors":
        header = read_safetensors_header(path)
        return header.shapes(), header.metadata
    state = load_state_dict(path)
    return {k: tuple(v.shape) for k, v in state.items()}, {}


def is_model_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in MODEL_SUFFIXES
