"""What a model's configs may name, checked before anything is written, imported or loaded.

A diffusers ``model_index.json`` (in a model folder, or embedded in a single file's
safetensors metadata by ``sdstudio convert``) names its components and the library and class
of each; diffusers imports the library named there. Those names come from a file off the
internet, so they are data: they may only select among the components and classes SD Studio
loads (:data:`COMPONENT_CLASSES`, :data:`PIPELINE_CLASSES`). An embedded config is validated
whole (:func:`check_embedded_config`) before it is written out as a config folder: its
component names are from that fixed set, so every path built from them stays inside the
folder, tokenizer files come either inline or as a reference to a tokenizer shipped with SD
Studio, and configs are plain JSON objects of bounded size and depth, without the keys that
make diffusers or transformers load code or other files (``auto_map``, ``custom_pipeline``,
``_name_or_path``...).

Pure Python: no torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sdstudio.core.errors import ModelError

PIPELINE_CLASSES = frozenset({
    "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline", "StableDiffusionXLPipeline",
    "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline",
})
SCHEDULER_CLASSES = frozenset({
    "PNDMScheduler", "DDIMScheduler", "DDPMScheduler", "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler", "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "DPMSolverSDEScheduler",
    "UniPCMultistepScheduler", "DEISMultistepScheduler", "LCMScheduler", "TCDScheduler",
})
_TEXT_ENCODERS = frozenset({("transformers", "CLIPTextModel"),
                            ("transformers", "CLIPTextModelWithProjection")})
_TOKENIZERS = frozenset({("transformers", "CLIPTokenizer"),
                         ("transformers", "CLIPTokenizerFast")})
_NONE = (None, None)
# component name -> the (library, class) pairs it may name
COMPONENT_CLASSES: dict[str, frozenset[tuple[str | None, str | None]]] = {
    "unet": frozenset({("diffusers", "UNet2DConditionModel")}),
    "vae": frozenset({("diffusers", "AutoencoderKL")}),
    "text_encoder": _TEXT_ENCODERS,
    "text_encoder_2": _TEXT_ENCODERS | {_NONE},
    "tokenizer": _TOKENIZERS,
    "tokenizer_2": _TOKENIZERS | {_NONE},
    "scheduler": frozenset(("diffusers", name) for name in SCHEDULER_CLASSES),
    # optional parts SD Studio never loads (it passes None), as real folders name them
    "safety_checker": frozenset({_NONE, ("stable_diffusion", "StableDiffusionSafetyChecker")}),
    "feature_extractor": frozenset({_NONE, ("transformers", "CLIPImageProcessor"),
                                    ("transformers", "CLIPFeatureExtractor")}),
    "image_encoder": frozenset({_NONE, ("transformers", "CLIPVisionModelWithProjection")}),
}
# model_index keys that are not components
INDEX_KEYS = frozenset({"_class_name", "_diffusers_version", "requires_safety_checker",
                        "force_zeros_for_empty_prompt", "requires_aesthetics_score"})
SHIPPED_TOKENIZERS = ("clip-l", "clip-g")  # resources/tokenizers/<name>
TOKENIZER_META = ("tokenizer_config.json", "special_tokens_map.json")
TOKENIZER_FILES = ("vocab.json", "merges.txt")
# keys that make a library follow a path, import a module or fetch something
UNSAFE_KEYS = frozenset({"auto_map", "custom_pipeline", "_name_or_path", "name_or_path",
                         "tokenizer_file", "vocab_file", "merges_file", "trust_remote_code",
                         "_commit_hash", "processor_class", "feature_extractor_type"})
MAX_EMBEDDED_BYTES = 16 * 1024 * 1024  # two inline CLIP vocabularies are ~3.5 MB
MAX_DEPTH = 16  # real configs nest 3 levels deep
MAX_FILE_TEXT = 8 * 1024 * 1024


def check_model_index(index: Any, where: str) -> dict[str, Any]:
    """``index`` if it names only pipelines and components SD Studio loads; else ModelError."""
    if not isinstance(index, dict):
        raise ModelError(f"{where}: model_index.json is not a JSON object")
    pipeline = index.get("_class_name")
    if pipeline not in PIPELINE_CLASSES:
        raise ModelError(f"{where}: model_index.json names the pipeline {_show(pipeline)}, "
                         "which SD Studio does not load (Stable Diffusion 1.x/2.x/XL only)")
    for name, entry in index.items():
        if name in INDEX_KEYS:
            continue
        if name.startswith("_"):
            raise ModelError(f"{where}: model_index.json has an unknown key {_show(name)}")
        allowed = COMPONENT_CLASSES.get(name)
        if allowed is None:
            raise ModelError(f"{where}: model_index.json names a component SD Studio does not "
                             f"load: {_show(name)}")
        pair = tuple(entry) if isinstance(entry, list) and len(entry) == 2 else None
        if pair not in allowed:
            raise ModelError(f"{where}: model_index.json names {_show(entry)} for {name}, "
                             "which is not a class SD Studio loads there")
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if name not in index:
            raise ModelError(f"{where}: model_index.json has no {name}")
    return index


def components(index: Mapping[str, Any]) -> list[str]:
    """The component names of a checked index that have a class (not ``[null, null]``)."""
    return [name for name, entry in index.items()
            if name in COMPONENT_CLASSES and isinstance(entry, list) and entry[0] is not None]


def parse_embedded_config(raw: str, where: str) -> dict[str, Any]:
    """The embedded config JSON of a single file, parsed and checked whole (ModelError)."""
    if len(raw) > MAX_EMBEDDED_BYTES:
        raise ModelError(f"{where}: its embedded diffusers config is too large "
                         f"({len(raw) // 1024} KiB)")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ModelError(f"{where}: its embedded diffusers config is not valid JSON") from exc
    return check_embedded_config(data, where)


def check_embedded_config(data: Any, where: str) -> dict[str, Any]:
    """Validate an embedded config (see :func:`sdstudio.engine.ldm_layout.embedded_config`)
    and return a clean copy: only known components, tokenizers as shipped references or
    inline text, configs as JSON objects without keys that load code or files."""
    if not isinstance(data, dict):
        raise ModelError(f"{where}: its embedded diffusers config is not a JSON object")
    _check_depth(data, where)
    index = check_model_index(data.get("model_index"), where)
    names = components(index)
    extra = sorted(set(data) - {"model_index", *names})
    if extra:
        raise ModelError(f"{where}: its embedded diffusers config has unexpected entries: "
                         + ", ".join(_show(e) for e in extra[:5]))
    clean: dict[str, Any] = {"model_index": _safe_object(index, "model_index", where)}
    for name in names:
        entry = data.get(name)
        if not isinstance(entry, dict):
            raise ModelError(f"{where}: its embedded diffusers config lacks {name}")
        if name.startswith("tokenizer"):
            clean[name] = _check_tokenizer(entry, name, where)
        else:
            clean[name] = _safe_object(entry, name, where)
    return clean


def _check_tokenizer(entry: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    allowed = {*TOKENIZER_META, *TOKENIZER_FILES, "vocab_ref"}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ModelError(f"{where}: the embedded {name} has unexpected entries: "
                         + ", ".join(_show(u) for u in unknown[:5]))
    out: dict[str, Any] = {}
    for meta in TOKENIZER_META:
        if meta in entry:
            if not isinstance(entry[meta], dict):
                raise ModelError(f"{where}: the embedded {name}/{meta} is not a JSON object")
            out[meta] = _safe_object(entry[meta], f"{name}/{meta}", where)
    if "vocab_ref" in entry:
        if entry["vocab_ref"] not in SHIPPED_TOKENIZERS:
            raise ModelError(f"{where}: the embedded {name} refers to the tokenizer "
                             f"{_show(entry['vocab_ref'])}; only "
                             f"{' and '.join(SHIPPED_TOKENIZERS)} are shipped")
        out["vocab_ref"] = entry["vocab_ref"]
        return out
    for f in TOKENIZER_FILES:
        text = entry.get(f)
        if not isinstance(text, str) or not text or len(text) > MAX_FILE_TEXT:
            raise ModelError(f"{where}: the embedded {name} has no usable {f}")
        out[f] = text
    return out


def _safe_object(obj: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    bad = sorted(k for k in obj if not isinstance(k, str) or k in UNSAFE_KEYS)
    if bad:
        raise ModelError(f"{where}: the embedded {name} config has keys SD Studio does not "
                         f"accept: {', '.join(_show(b) for b in bad[:5])}")
    return dict(obj)


def _check_depth(obj: Any, where: str) -> None:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ModelError(f"{where}: its embedded diffusers config is nested too deeply")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _show(value: Any) -> str:
    """A value from a file, quoted, short and with control characters escaped."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
