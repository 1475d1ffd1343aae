"""Model files with chosen tensor names and shapes, for tests and screenshots: a valid
safetensors header and zeros after it (nothing in production imports this)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def write_safetensors(path: Path, tensors: Mapping[str, Sequence[int]], *,
                      metadata: Mapping[str, str] | None = None, dtype: str = "F32",
                      size: int | None = None) -> Path:
    """Write a safetensors file of zeros with these tensors (and ``__metadata__``). With
    ``size`` the file is made that long (sparse where the file system allows: a model of
    several GB that takes no room), at least as long as its tensors."""
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in tensors.items():
        n = math.prod(shape) * _BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = dict(metadata)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little") + raw)
        fh.truncate(max(8 + len(raw) + offset, size or 0))
    return path
