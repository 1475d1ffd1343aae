"""The LoRA-family files people download, read into per-layer weight changes computed as
AUTOMATIC1111 1.10's built-in Lora extension computes them (``extensions-builtin/Lora``).

Formats (the weight names after the layer's name in the file):

* LoRA / LoCon: ``lora_down.weight``, ``lora_up.weight``, optional ``lora_mid.weight``
  (Tucker, 3x3 convs), ``alpha``. Also the diffusers / PEFT spellings ``lora_A``/``lora_B``,
  ``lora.down``/``lora.up``, ``lora_linear_layer.down``/``up`` and attention-processor names.
  delta = up @ down (conv: up (out, r, 1, 1) @ down (r, in, kh, kw)); with a mid tensor
  delta[i,j,k,l] = sum mid[n,m,k,l] up[i,n] down[m,j].
* LyCORIS LoHa: ``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b``, optional
  ``hada_t1``/``hada_t2`` (Tucker): delta = (w1_a @ w1_b) * (w2_a @ w2_b) (Hadamard product).
* LyCORIS LoKr: ``lokr_w1`` or ``lokr_w1_a``/``_b``, ``lokr_w2`` or ``lokr_w2_a``/``_b``,
  optional ``lokr_t2``: delta = kron(w1, w2).
* Full difference (``diff``, optional ``diff_b``) and norm layers (``w_norm``, ``b_norm``).

Scale: the file's ``scale`` if given, else ``alpha / dim`` where dim is the rank (LoRA:
``lora_down``'s rows; LoHa: ``hada_w1_b``'s rows; LoKr: ``lokr_w2_b``'s, else ``lokr_w1_b``'s
rows; a LoKr of two full matrices, ``diff`` and norm layers have none), else 1.

DoRA (``dora_scale``, the magnitude): with W0 the layer's current weight and
W' = W0 + scale * delta, A1111 normalises W' per input channel (dora_scale shaped
(1, in, ...)) and applies W0 + weight * (W' * dora_scale / ||W'|| - W0). A magnitude shaped
(out, 1, ...) (LyCORIS ``wd_on_out``) is normalised per output channel the same way; A1111
1.10 mis-broadcasts that layout.

A1111 skips keys that match no layer and networks it cannot parse; here :func:`parse` refuses
the whole file by name instead (unknown layers, unknown weights, IA3 / GLoRA / OFT / BOFT,
bundled embeddings, PEFT DoRA), so nothing is ever applied half.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdstudio.core.errors import ModelError

if TYPE_CHECKING:
    import torch

# diffusers / PEFT spellings -> kohya's
_RENAMED = {
    "lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight",
    "lora.down.weight": "lora_down.weight", "lora.up.weight": "lora_up.weight",
    "lora_linear_layer.down.weight": "lora_down.weight",
    "lora_linear_layer.up.weight": "lora_up.weight",
}
_COMMON = frozenset({"alpha", "scale", "dora_scale"})
_ALLOWED = {
    "LoRA": frozenset({"lora_up.weight", "lora_down.weight", "lora_mid.weight"}) | _COMMON,
    "LoHa": frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1",
                       "hada_t2"}) | _COMMON,
    "LoKr": frozenset({"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a",
                       "lokr_w2_b", "lokr_t2"}) | _COMMON,
    "full": frozenset({"diff", "diff_b", "alpha", "scale"}),
    "norm": frozenset({"w_norm", "b_norm", "alpha", "scale"}),
}
# the weight names a dotted (diffusers-style) key may end with, longest first
_DOTTED_PARTS = tuple(sorted(
    {*_RENAMED, *(p for parts in _ALLOWED.values() for p in parts), "lora_magnitude_vector",
     "on_input", "oft_blocks", "oft_diag", "wd_for_diff"}, key=len, reverse=True))
_PROCESSOR = re.compile(r"^(.*)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Layer:
    """One layer's change from one file: ``key`` as the file names the layer, ``target`` the
    model's module name (``unet:...``, ``te1:...``), ``kind`` one of LoRA, LoCon, LoHa, LoKr,
    full, norm; ``w`` the tensors by kohya weight name; ``scale`` as described above."""

    key: str
    target: str
    kind: str
    w: Mapping[str, torch.Tensor]
    scale: float


def _kind(parts: set[str]) -> str | None:
    """A1111's module types, in its order; None when no type accepts the weights."""
    if {"lora_up.weight", "lora_down.weight"} <= parts:
        return "LoRA"
    if {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} <= parts:
        return "LoHa"
    if {"weight", "on_input"} <= parts:
        return "IA3"
    if (("lokr_w1" in parts or {"lokr_w1_a", "lokr_w1_b"} <= parts)
            and ("lokr_w2" in parts or {"lokr_w2_a", "lokr_w2_b"} <= parts)):
        return "LoKr"
    if "diff" in parts:
        return "full"
    if {"w_norm", "b_norm"} <= parts:
        return "norm"
    if {"a1.weight", "a2.weight", "b1.weight", "b2.weight"} <= parts:
        return "GLoRA"
    if parts & {"oft_blocks", "oft_diag"}:
        return "OFT"
    return None


def split_key(key: str) -> tuple[str, str] | None:
    """(layer name, kohya weight name) of one file key; None when it is neither layout."""
    if key.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")):
        layer, _, part = key.partition(".")
        return (layer, _RENAMED.get(part, part)) if part else None
    match = _PROCESSOR.match(key)
    if match:
        proj = "to_out.0" if match.group(2) == "to_out" else match.group(2)
        return f"{match.group(1)}.{proj}", f"lora_{match.group(3)}.weight"
    for part in _DOTTED_PARTS:
        if key.endswith("." + part):
            return key[: -len(part) - 1], _RENAMED.get(part, part)
    return None


def _listed(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _scalar(file: str, key: str, tensor: Any) -> float:
    if tensor.numel() != 1:
        raise ModelError(f"LoRA {file}: {key} is not a single number (shape "
                         f"{tuple(tensor.shape)})")
    value = float(tensor.reshape(()).item())
    if value != value or value in (float("inf"), float("-inf")):
        raise ModelError(f"LoRA {file}: {key} is not a finite number")
    return value


def _rank(kind: str, w: Mapping[str, Any]) -> int | None:
    if kind in ("LoRA", "LoCon"):
        return int(w["lora_down.weight"].shape[0])
    if kind == "LoHa":
        return int(w["hada_w1_b"].shape[0])
    if kind == "LoKr":
        for name in ("lokr_w2_b", "lokr_w1_b"):
            if name in w:
                return int(w[name].shape[0])
    return None


def parse(file: str, state: Mapping[str, torch.Tensor],
          modules: Mapping[str, tuple[str, Any]]) -> list[Layer]:
    """Every layer of a LoRA-family file, checked against ``modules`` (file layer name ->
    (target name, module)); ModelError naming what cannot be applied, before anything is."""
    if any(k.startswith("bundle_emb.") for k in state):
        raise ModelError(f"LoRA {file} carries bundled textual-inversion embeddings "
                         "(bundle_emb.*), which SD Studio does not load; nothing was applied")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        split = split_key(key)
        if split is None:
            unknown.append(key)
            continue
        layer, part = split
        if part in groups.setdefault(layer, {}):
            raise ModelError(f"LoRA {file}: {layer} has {part} twice (in two spellings)")
        groups[layer][part] = tensor
    if not groups:
        raise ModelError(f"{file} is not a LoRA (no lora_* weights)")
    if unknown:
        raise ModelError(f"LoRA {file}: {len(unknown)} key(s) are not LoRA weights SD Studio "
                         f"knows ({_listed(sorted(unknown))}); nothing was applied")
    missing = sorted(k for k in groups if k not in modules)
    if missing:
        raise ModelError(f"LoRA {file} does not fit this model: {len(missing)} of its "
                         f"{len(groups)} layers are not in it ({_listed(missing)})")
    layers: list[Layer] = []
    for key, w in groups.items():
        target, module = modules[key]
        kind = _kind(set(w))
        if kind is None:
            raise ModelError(f"LoRA {file}: layer {key} has weights of no format SD Studio "
                             f"knows ({', '.join(sorted(w))})")
        if kind not in _ALLOWED:
            raise ModelError(f"LoRA {file} is a LyCORIS {kind} network, which SD Studio "
                             "cannot apply; nothing was applied")
        extra = sorted(set(w) - _ALLOWED[kind])
        if "lora_magnitude_vector" in extra:
            raise ModelError(f"LoRA {file} is a DoRA in the PEFT layout "
                             "(lora_magnitude_vector), which SD Studio cannot apply; "
                             "the LyCORIS/kohya layout (dora_scale) works")
        if extra:
            raise ModelError(f"LoRA {file}: layer {key} ({kind}) has weights SD Studio does "
                             f"not know: {', '.join(extra)}")
        bad = [p for p, t in w.items() if not t.is_floating_point()]
        if bad:
            raise ModelError(f"LoRA {file}: {key}.{bad[0]} is not floating point")
        if kind == "LoRA" and module.weight.ndim == 4:
            kind = "LoCon"
        if "scale" in w:
            scale = _scalar(file, f"{key}.scale", w["scale"])
        else:
            rank = _rank(kind, w)
            alpha = _scalar(file, f"{key}.alpha", w["alpha"]) if "alpha" in w else None
            scale = alpha / rank if rank and alpha is not None else 1.0
        layers.append(Layer(key, target, kind, w, scale))
    return layers


def metadata_hash(metadata: Mapping[str, str]) -> str | None:
    """kohya's ``sshs_model_hash`` (what A1111 1.10 uses before hashing the file itself)
    when it is a sha256 hex digest; None otherwise."""
    value = str(metadata.get("sshs_model_hash", "")).strip().lower()
    return value if _HEX64.match(value) else None


# ------------------------------------------------------------------------------ the math
def _make_cp(t: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """LyCORIS's Tucker rebuild: t (r, r, kh, kw), wa (r, out), wb (r, in)."""
    import torch

    return torch.einsum("i j k l, j r, i p -> p r k l", t, wb, wa)


def _lora(w: Mapping[str, torch.Tensor], conv: bool) -> torch.Tensor:
    import torch

    up, down = w["lora_up.weight"], w["lora_down.weight"]
    mid = w.get("lora_mid.weight")
    up2 = up.reshape(up.shape[0], -1)
    down2 = down.reshape(down.shape[0], -1)
    if mid is not None:
        if not conv or mid.ndim != 4:
            raise ValueError("lora_mid (Tucker) needs a convolution and a 4-d mid weight")
        return torch.einsum("n m k l, i n, m j -> i j k l", mid, up2, down2)
    delta = up2 @ down2
    if conv and down.ndim == 4:
        return delta.reshape(up.shape[0], down.shape[1], *down.shape[2:])
    return delta


def _loha(w: Mapping[str, torch.Tensor]) -> torch.Tensor:
    w1a, w1b, w2a, w2b = (w[k] for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"))
    if "hada_t1" in w:
        one = _make_cp(w["hada_t1"], w1a, w1b)
    else:
        one = w1a.reshape(w1a.shape[0], -1) @ w1b.reshape(w1b.shape[0], -1)
    if "hada_t2" in w:
        two = _make_cp(w["hada_t2"], w2a, w2b)
    else:
        two = (w2a.reshape(w2a.shape[0], -1) @ w2b.reshape(w2b.shape[0], -1))
    if one.shape != two.shape:
        two = two.reshape(one.shape)
    return one * two


def _lokr(w: Mapping[str, torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    import torch

    w1 = w["lokr_w1"] if "lokr_w1" in w else w["lokr_w1_a"] @ w["lokr_w1_b"]
    if "lokr_w2" in w:
        w2 = w["lokr_w2"]
    elif "lokr_t2" in w:
        w2 = _make_cp(w["lokr_t2"], w["lokr_w2_a"], w["lokr_w2_b"])
    else:
        w2 = w["lokr_w2_a"] @ w["lokr_w2_b"]
    if w2.ndim == 4:
        w1 = w1.reshape(*w1.shape, 1, 1)
    delta = torch.kron(w1, w2.contiguous())
    return delta.reshape(shape) if len(shape) == 4 else delta


def _fit(delta: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``delta`` in the layer's shape (A1111: same element count reshapes; a 4-channel conv
    change on a 9-channel inpainting input is zero-padded); ValueError when it does not fit."""
    import torch

    if delta.numel() == _numel(shape):
        return delta.reshape(shape)
    if (len(shape) == 4 and shape[1] == 9 and delta.ndim == 4 and delta.shape[1] == 4
            and (delta.shape[0], *delta.shape[2:]) == (shape[0], *shape[2:])):
        return torch.nn.functional.pad(delta, (0, 0, 0, 0, 0, 5))
    raise ValueError(f"a change of shape {tuple(delta.shape)} does not fit the layer's "
                     f"{tuple(shape)}")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _dora(delta: torch.Tensor, orig: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """A1111's ``apply_weight_decompose``: the change that takes ``orig`` to the decomposed
    merged weight (see the module docstring)."""
    merged = orig + delta
    out, inp = int(merged.shape[0]), int(merged.shape[1])
    ones = [1] * (merged.ndim - 2)
    if magnitude.shape[0] == 1 and magnitude.numel() == inp:  # A1111: per input channel
        norm = merged.transpose(0, 1).reshape(inp, -1).norm(dim=1).reshape(1, inp, *ones)
    elif magnitude.numel() == out and magnitude.shape[0] == out:  # LyCORIS wd_on_out
        norm = merged.reshape(out, -1).norm(dim=1).reshape(out, 1, *ones)
    else:
        raise ValueError(f"dora_scale of shape {tuple(magnitude.shape)} fits neither the "
                         f"inputs nor the outputs of a {tuple(merged.shape)} layer")
    return merged * (magnitude.reshape(norm.shape) / norm) - orig


def layer_delta(layer: Layer, orig: torch.Tensor, multiplier: float,
                has_bias: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight change, bias change or None) of ``layer`` at ``multiplier`` on a layer whose
    current weight is ``orig``, in float32 (float64 for a float64 layer). Works on the meta
    device too (shapes only), which is how :func:`check_fits` tries every layer first."""
    import torch

    dtype = torch.float64 if orig.dtype == torch.float64 else torch.float32
    w = {k: v.to(device=orig.device, dtype=dtype) for k, v in layer.w.items()}
    shape = tuple(orig.shape)
    conv = len(shape) == 4
    if layer.kind in ("LoRA", "LoCon"):
        delta = _lora(w, conv)
    elif layer.kind == "LoHa":
        delta = _loha(w)
    elif layer.kind == "LoKr":
        delta = _lokr(w, shape)
    elif layer.kind == "full":
        delta = w["diff"]
    else:  # norm
        delta = w["w_norm"]
    delta = _fit(delta, shape) * layer.scale
    bias = w.get("diff_b", w.get("b_norm"))
    if bias is not None:
        if not has_bias:
            raise ValueError("it changes a bias the layer does not have")
        if bias.numel() != shape[0]:
            raise ValueError(f"a bias change of {bias.numel()} values does not fit the "
                             f"layer's {shape[0]} outputs")
        bias = bias.reshape(shape[0]) * multiplier
    if "dora_scale" in w:
        delta = _dora(delta, orig.to(dtype), w["dora_scale"])
    return delta * multiplier, bias


def check_fits(file: str, layers: list[Layer], modules: Mapping[str, tuple[str, Any]]) -> None:
    """Run every layer's computation on the meta device (no memory, no change): a layer that
    does not fit its module is refused by name before anything is applied."""
    import torch

    for layer in layers:
        module = modules[layer.key][1]
        meta = Layer(layer.key, layer.target, layer.kind,
                     {k: v.to("meta") for k, v in layer.w.items()}, layer.scale)
        orig = torch.empty(tuple(module.weight.shape), device="meta", dtype=torch.float32)
        try:
            layer_delta(meta, orig, 1.0, getattr(module, "bias", None) is not None)
        except (ValueError, RuntimeError, IndexError, KeyError) as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ModelError(f"LoRA {file}: layer {layer.key} ({layer.kind}) does not fit "
                             f"this model's {layer.target} ({first})") from None
