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
import os
import re
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from sdstudio.core import safejson
from sdstudio.core.errors import ModelError

if TYPE_CHECKING:
    import torch

Format = Literal["safetensors", "torch-zip", "torch-pickle"]

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
MAX_HEADER_DEPTH = 16  # {name: {"shape": [...]}} is 3 levels
MAX_TENSORS = 100_000  # real checkpoints: SD 1.x ~1,100 tensors, SDXL ~2,500
MAX_ZIP_ENTRIES = 2 * MAX_TENSORS  # torch.save writes one entry per storage, plus a few
# torch.save stores entries uncompressed: what a zip's entries unpack to cannot be much more
# than the file itself. A 1 MB file whose central directory promises 1 GiB is a zip bomb.
MAX_ZIP_UNPACKED_RATIO = 2
ZIP_UNPACKED_SLACK = 16 * 1024 * 1024
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


def require_regular_file(path: Path) -> os.stat_result:
    """``path``'s stat, refusing (ModelError) a folder, a FIFO, a device or a socket before
    anything opens it: opening a FIFO for reading blocks until someone writes to it."""
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "it is a folder, not a model file")
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, "it is not a regular file (a pipe, device or socket)")
    return st


def detect_format(path: Path) -> Format:
    """The file's format from its first bytes; ModelError if it is none we load safely."""
    path = Path(path)
    try:
        size = require_regular_file(path).st_size
        with path.open("rb") as fh:
            head = fh.read(16)
    except FileNotFoundError as exc:
        raise ModelError(f"Model file not found: {path}", details=str(path)) from exc
    except OSError as exc:
        raise _refuse(path, f"cannot read it ({exc.strerror or exc})") from exc
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
    # Counted in the raw bytes, before parsing: 700k entries parse into ~1 GB of objects.
    if (count := raw.count(b'"data_offsets"')) > MAX_TENSORS:
        raise _refuse(path, f"its safetensors header lists {count} tensors (at most "
                      f"{MAX_TENSORS}; a real SDXL checkpoint has ~2,500)")
    try:
        header = safejson.loads(raw, max_bytes=MAX_HEADER_BYTES, max_depth=MAX_HEADER_DEPTH)
    except ValueError as exc:
        raise _refuse(path, f"corrupt safetensors header ({exc})") from None
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


def pickle_refusal(exc: BaseException) -> str:
    """Why a pickle was refused, in SD Studio's words. torch's own message advises loading
    the file unsafely (``weights_only=False``); it is never passed on. Only the name of what
    the pickle asked for is kept, restricted to identifier characters."""
    found = re.search(r"GLOBAL ([\w.]{1,100})", str(exc))
    asks = f" (it asks for {found.group(1)})" if found else ""
    return (f"it contains pickle data that can run code{asks}, which SD Studio will not run; "
            "only plain tensors are loaded from .ckpt/.pt files. Use a .safetensors version "
            "of this model")


def _zip_entry_count(fh: BinaryIO, size: int) -> int | None:
    """The entry count a zip's end-of-central-directory record states (zip64 too), read from
    the file's tail alone; None when there is no such record."""
    tail_len = min(size, 22 + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    (total,) = struct.unpack("<H", tail[at + 10:at + 12])
    if total == 0xFFFF and at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":
        (offset,) = struct.unpack("<Q", tail[at - 12:at - 4])
        if offset < size:
            fh.seek(offset)
            record = fh.read(56)
            if record[:4] == b"PK\x06\x06" and len(record) == 56:
                (total,) = struct.unpack("<Q", record[32:40])
    return int(total)


def check_zip_sizes(path: Path) -> None:
    """Refuse (ModelError) a PyTorch zip whose headers promise more than its size allows:
    too many entries, or entries that unpack to far more than the file (a zip bomb). Reads
    only the central directory, before torch allocates anything."""
    import zipfile

    size = require_regular_file(path).st_size
    with path.open("rb") as fh:
        count = _zip_entry_count(fh, size)
        if count is not None and count > MAX_ZIP_ENTRIES:
            raise _refuse(path, f"its zip directory lists {count} entries "
                          f"(at most {MAX_ZIP_ENTRIES})")
        try:
            with zipfile.ZipFile(fh) as archive:
                infos = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise _refuse(path, f"not a readable PyTorch checkpoint (corrupt zip: "
                          f"{str(exc)[:200]})") from None
    if len(infos) > MAX_ZIP_ENTRIES:
        raise _refuse(path, f"its zip directory lists {len(infos)} entries "
                      f"(at most {MAX_ZIP_ENTRIES})")
    unpacked = sum(info.file_size for info in infos)
    allowed = MAX_ZIP_UNPACKED_RATIO * size + ZIP_UNPACKED_SLACK
    if unpacked > allowed:
        biggest = max(infos, key=lambda info: info.file_size)
        raise _refuse(
            path, f"its zip entries would unpack to {unpacked / 2**20:.0f} MiB from a "
            f"{size / 2**20:.1f} MiB file ({biggest.filename[:80]!r}: "
            f"{biggest.file_size / 2**20:.0f} MiB); refused as a possible zip bomb"
        )


def _torch_load(path: Path, fmt: Format) -> Any:
    import pickle

    import torch

    if fmt == "torch-zip":
        check_zip_sizes(path)
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
        raise _refuse(path, pickle_refusal(exc)) from exc
    except Exception as exc:  # corrupt zip, truncated pickle, wrong magic...
        raise _refuse(path, f"not a readable PyTorch checkpoint ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc


def load_object(path: Path) -> Any:
    """What a model file holds, loaded safely: a PyTorch checkpoint's whole object (only
    tensors and plain containers, through ``torch.load(weights_only=True)``; zip sizes checked
    first), a safetensors file's tensors. For files that nest their weights their own way
    (Real-ESRGAN's ``{"params_ema": {...}}``)."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "safetensors":
        return load_state_dict(path)
    return _torch_load(path, fmt)


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


MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a component config is a few KB; a vocab.json ~1 MB
MAX_CONFIG_DEPTH = 32  # real configs nest 3-4 levels deep


def read_config_json(path: Path) -> dict[str, Any]:
    """A model's JSON config file (``model_index.json``, a component's ``config.json``...) as
    a dict, read within limits on size and nesting (:mod:`sdstudio.core.safejson`), and only
    from a regular file; ModelError naming the file otherwise."""
    path = Path(path)
    try:
        data = safejson.load_file(path, max_bytes=MAX_CONFIG_BYTES, max_depth=MAX_CONFIG_DEPTH)
    except FileNotFoundError:
        raise ModelError(f"{path} is missing", details=str(path)) from None
    except ValueError as exc:
        raise ModelError(f"{path}: {exc}", details=str(path)) from None
    except OSError as exc:
        raise ModelError(f"cannot read {path} ({exc.strerror or exc})", details=str(path)) from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object", details=str(path))
    return data
