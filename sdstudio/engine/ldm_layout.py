"""The single-file (original CompVis/LDM) layout that ``convert`` writes and ``single_file``
reads: the key prefix of each component, and the diffusers configs a file can carry in its
safetensors metadata (:data:`CONFIG_METADATA_KEY`) so that custom-size models round-trip
exactly.

Pure Python and JSON (no torch): both :mod:`sdstudio.engine.convert` and
:mod:`sdstudio.engine.single_file` import it, so the dependency between those two runs one
way (``convert`` -> ``single_file`` -> here).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdstudio.core import paths, safejson
from sdstudio.core.errors import ModelError
from sdstudio.engine.config_check import check_embedded_config

CONFIG_METADATA_KEY = "sdstudio.diffusers_config"

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_TEXT1_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TEXT2_PREFIX = "conditioner.embedders.1.model."


def read_config(path: Path) -> dict[str, Any]:
    """A JSON config file as a dict, read within safejson's limits (a ValueError, or OSError,
    propagates as it is)."""
    data = safejson.load_file(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def embedded_config(folder: Path) -> dict[str, Any]:
    """The folder's configs as one JSON-able dict (what :data:`CONFIG_METADATA_KEY` holds).

    Tokenizers are stored by reference (``"clip-l"`` / ``"clip-g"``, the files shipped in
    ``resources/tokenizers``) when they are the standard CLIP vocabulary, else in full.
    """
    folder = Path(folder)
    index = read_config(folder / "model_index.json")
    data: dict[str, Any] = {"model_index": index}
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        sub = folder / name
        if name.startswith("tokenizer"):
            data[name] = _tokenizer_entry(sub)
        elif name == "scheduler":
            data[name] = read_config(sub / "scheduler_config.json")
        else:
            data[name] = read_config(sub / "config.json")
    return data


def _tokenizer_entry(sub: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for meta in ("tokenizer_config.json", "special_tokens_map.json"):
        if (sub / meta).is_file():
            entry[meta] = read_config(sub / meta)
    shipped = paths.resources_dir() / "tokenizers"
    for ref in ("clip-l", "clip-g"):
        if all(
            (sub / f).is_file() and (sub / f).read_bytes() == (shipped / ref / f).read_bytes()
            for f in ("vocab.json", "merges.txt")
        ):
            entry["vocab_ref"] = ref
            return entry
    entry["vocab.json"] = (sub / "vocab.json").read_text(encoding="utf-8")
    entry["merges.txt"] = (sub / "merges.txt").read_text(encoding="utf-8")
    return entry


def materialize_config(data: Mapping[str, Any], dest: Path, where: str = "the model") -> Path:
    """Write an :func:`embedded_config` dict back out as a diffusers config folder. The dict
    comes from a model file: it is validated whole first
    (:func:`~sdstudio.engine.config_check.check_embedded_config`, ModelError), and every
    path written is checked to be inside ``dest``."""
    data = check_embedded_config(data, where)
    shipped = paths.resources_dir() / "tokenizers"
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    (dest / "model_index.json").write_text(json.dumps(data["model_index"], indent=2))
    for name, entry in data.items():
        if name == "model_index":
            continue
        sub = dest / name
        if sub.resolve().parent != root:  # names are from a fixed set; this is a backstop
            raise ModelError(f"{where}: the embedded config names a folder outside its own")
        sub.mkdir(exist_ok=True)
        if name.startswith("tokenizer"):
            for meta in ("tokenizer_config.json", "special_tokens_map.json"):
                if meta in entry:
                    (sub / meta).write_text(json.dumps(entry[meta], indent=2))
            for f in ("vocab.json", "merges.txt"):
                if "vocab_ref" in entry:
                    (sub / f).write_bytes((shipped / entry["vocab_ref"] / f).read_bytes())
                else:
                    (sub / f).write_text(entry[f], encoding="utf-8")
        elif name == "scheduler":
            (sub / "scheduler_config.json").write_text(json.dumps(entry, indent=2))
        else:
            (sub / "config.json").write_text(json.dumps(entry, indent=2))
    return dest
