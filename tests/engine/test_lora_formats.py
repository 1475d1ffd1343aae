"""Every LoRA-family format on the tiny models: the changed weights equal the format's
published formula (written out here, independently of sdstudio.engine.lora_formats), the
image changes, and removal restores every parameter bit for bit. Files that cannot be
applied are refused by name and leave the model untouched."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sdstudio.core.errors import ModelError
from sdstudio.core.request import LoraSpec
from sdstudio.core.settings import EngineSettings
from sdstudio.engine.lora import active_loras, apply_loras
from tests.engine._lora_fixtures import (
    BIASED,
    CONV1,
    CONV3,
    LINEAR,
    NORM,
    TEXT,
    Rand,
    keyed,
    kohya,
    loha_layer,
    lokr_layer,
    lora_layer,
    module,
)

W = 0.7  # the weight every format is applied at
RTOL, ATOL = 1e-5, 1e-6  # float32 rounding: the same sums in another order


@pytest.fixture(scope="module")
def pipes(tiny_models: dict[str, Path]) -> Iterator[dict[str, Any]]:
    from diffusers import DiffusionPipeline

    loaded: dict[str, Any] = {}

    class _Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, kind: str) -> Any:
            pipe = DiffusionPipeline.from_pretrained(tiny_models[kind], local_files_only=True)
            pipe.set_progress_bar_config(disable=True)
            loaded[kind] = self[kind] = pipe
            return pipe

    yield _Lazy()


def _params(pipe: Any) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for part in ("unet", "text_encoder", "text_encoder_2"):
        component = getattr(pipe, part, None)
        if component is not None:
            out.update({f"{part}.{n}": t.detach().clone()
                        for n, t in component.state_dict().items()})
    return out


def _image(pipe: Any) -> np.ndarray:
    out = pipe(prompt="a cat", num_inference_steps=2, height=64, width=64, guidance_scale=5.0,
               generator=torch.Generator().manual_seed(3), output_type="np")
    return np.asarray(out.images[0])


def _apply(pipe: Any, tmp_path: Path, name: str, state: dict[str, torch.Tensor],
           weight: float = W) -> dict[str, str]:
    save_file(state, str(tmp_path / f"{name}.safetensors"))
    return apply_loras(pipe, (LoraSpec(name, weight),),
                       EngineSettings(lora_dirs=(str(tmp_path),)))


def _check(pipe: Any, tmp_path: Path, name: str, state: dict[str, torch.Tensor],
           expected: dict[str, torch.Tensor]) -> None:
    """Apply ``state`` at W: exactly the ``expected`` parameters change, to those values; the
    image changes; removal gives back every parameter bit for bit and the same image."""
    before, image = _params(pipe), _image(pipe)
    _apply(pipe, tmp_path, name, state)
    after = _params(pipe)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(after[key], value, rtol=RTOL, atol=ATOL)
    assert np.abs(_image(pipe) - image).max() > 0
    apply_loras(pipe, (), EngineSettings(lora_dirs=(str(tmp_path),)))
    restored = _params(pipe)
    assert all(torch.equal(before[k], restored[k]) for k in before)
    assert np.array_equal(_image(pipe), image)
    assert active_loras(pipe) == []


def _weight(pipe: Any, component: str, name: str, leaf: str = "weight") -> torch.Tensor:
    return getattr(module(getattr(pipe, component), name), leaf).detach().clone()


def _pkey(pipe: Any, component: str, name: str, leaf: str = "weight") -> str:
    """The state_dict key of ``component``'s ``name`` (text encoders may be flattened)."""
    keys = getattr(pipe, component).state_dict()
    for candidate in (f"{name}.{leaf}", f"{name.removeprefix('text_model.')}.{leaf}"):
        if candidate in keys:
            return f"{component}.{candidate}"
    raise KeyError(name)


# --------------------------------------------------------------------- reference formulas
def _ref_lora(w: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    """kohya LoRA / LoCon: up (out, r) times down (r, in[, kh, kw]), per kernel position."""
    up = w["lora_up.weight"].reshape(shape[0], -1)
    down = w["lora_down.weight"]
    if "lora_mid.weight" in w:  # Tucker: up @ mid[:, :, k, l] @ down at each position
        mid, down2 = w["lora_mid.weight"], down.reshape(down.shape[0], -1)
        out = torch.zeros(shape)
        for k in range(shape[2]):
            for j in range(shape[3]):
                out[:, :, k, j] = up @ mid[:, :, k, j] @ down2
        return out
    if down.ndim == 2:
        return (up @ down).reshape(shape)
    out = torch.zeros(shape)
    for k in range(shape[2]):
        for j in range(shape[3]):
            out[:, :, k, j] = up @ down[:, :, k, j]
    return out


def _ref_cp(t: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """LyCORIS's Tucker product: wa^T @ t[:, :, k, l] @ wb at each kernel position."""
    out = torch.zeros(wa.shape[1], wb.shape[1], *t.shape[2:])
    for k in range(t.shape[2]):
        for j in range(t.shape[3]):
            out[:, :, k, j] = wa.T @ t[:, :, k, j] @ wb
    return out


def _ref_loha(w: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    if "hada_t1" in w:
        one = _ref_cp(w["hada_t1"], w["hada_w1_a"], w["hada_w1_b"])
        two = _ref_cp(w["hada_t2"], w["hada_w2_a"], w["hada_w2_b"])
    else:
        one = (w["hada_w1_a"] @ w["hada_w1_b"]).reshape(shape)
        two = (w["hada_w2_a"] @ w["hada_w2_b"]).reshape(shape)
    return one * two


def _ref_kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kronecker product block by block: block (i, j) is a[i, j] * b."""
    c, d = b.shape[:2]
    out = torch.zeros(a.shape[0] * c, a.shape[1] * d, *b.shape[2:])
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i * c:(i + 1) * c, j * d:(j + 1) * d] = a[i, j] * b
    return out


def _ref_lokr(w: dict[str, torch.Tensor]) -> torch.Tensor:
    if "lokr_w2" in w:
        w2 = w["lokr_w2"]
    elif "lokr_t2" in w:
        w2 = _ref_cp(w["lokr_t2"], w["lokr_w2_a"], w["lokr_w2_b"])
    else:
        w2 = w["lokr_w2_a"] @ w["lokr_w2_b"]
    return _ref_kron(w["lokr_w1"], w2)


def _ref_dora(w0: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor,
              weight: float) -> torch.Tensor:
    """A1111 1.10 (network.py apply_weight_decompose): W' = W0 + delta, each input column
    rescaled to the magnitude, the result reached by ``weight`` from W0."""
    merged = w0 + delta
    dims = (0, *range(2, merged.ndim))
    norm = torch.linalg.vector_norm(merged, dim=dims, keepdim=True)
    return w0 + weight * (merged * magnitude.reshape(norm.shape) / norm - w0)


# --------------------------------------------------------------------------- the formats
Builder = Callable[[Rand, torch.Tensor], dict[str, torch.Tensor]]
CASES: dict[str, tuple[str, Builder, Callable[[dict[str, torch.Tensor], torch.Tensor], Any]]] = {
    # name: (layer, factors for the layer, reference change of the layer at weight 1)
    "lora-linear": (LINEAR, lambda r, w: lora_layer(r, w, 4, 2.0),
                    lambda f, w: 2.0 / 4 * _ref_lora(f, w.shape)),
    "locon-1x1": (CONV1, lambda r, w: lora_layer(r, w, 4, 1.0),
                  lambda f, w: 1.0 / 4 * _ref_lora(f, w.shape)),
    "locon-3x3": (CONV3, lambda r, w: lora_layer(r, w, 4, 4.0),
                  lambda f, w: 4.0 / 4 * _ref_lora(f, w.shape)),
    "locon-tucker": (CONV3, lambda r, w: lora_layer(r, w, 3, 1.5, tucker=True),
                     lambda f, w: 1.5 / 3 * _ref_lora(f, w.shape)),
    "loha-linear": (LINEAR, lambda r, w: loha_layer(r, w, 4, 2.0),
                    lambda f, w: 2.0 / 4 * _ref_loha(f, w.shape)),
    "loha-conv": (CONV3, lambda r, w: loha_layer(r, w, 3, 1.0),
                  lambda f, w: 1.0 / 3 * _ref_loha(f, w.shape)),
    "loha-tucker": (CONV3, lambda r, w: loha_layer(r, w, 3, 1.0, tucker=True),
                    lambda f, w: 1.0 / 3 * _ref_loha(f, w.shape)),
    # LoKr: alpha / rank of the w2 factors; two full matrices have no rank: alpha ignored
    "lokr-factored": (LINEAR, lambda r, w: lokr_layer(r, w, 4, 2, 1.0),
                      lambda f, w: 1.0 / 2 * _ref_lokr(f)),
    "lokr-full": (LINEAR, lambda r, w: lokr_layer(r, w, 8, None, 3.0),
                  lambda f, w: _ref_lokr(f)),
    "lokr-conv-tucker": (CONV3, lambda r, w: lokr_layer(r, w, 4, 2, 1.0),
                         lambda f, w: 1.0 / 2 * _ref_lokr(f)),
    "full-diff": (LINEAR, lambda r, w: {"diff": r(*w.shape)}, lambda f, w: f["diff"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_format_applies_its_formula_and_removes_exactly(
        case: str, pipes: dict[str, Any], tmp_path: Path) -> None:
    pipe = pipes["sd1"]
    layer, build, reference = CASES[case]
    w0 = _weight(pipe, "unet", layer)
    factors = build(Rand(sorted(CASES).index(case)), w0)
    expected = {_pkey(pipe, "unet", layer): w0 + W * reference(factors, w0)}
    _check(pipe, tmp_path, case, keyed(kohya("lora_unet_", layer), factors), expected)


@pytest.mark.parametrize("layer", [LINEAR, CONV3])
def test_dora_magnitude_is_applied(layer: str, pipes: dict[str, Any], tmp_path: Path) -> None:
    pipe = pipes["sd1"]
    w0 = _weight(pipe, "unet", layer)
    rand = Rand(7)
    factors = lora_layer(rand, w0, 4, 2.0)
    magnitude_shape = (1, w0.shape[1], *[1] * (w0.ndim - 2))
    factors["dora_scale"] = rand(*magnitude_shape, scale=0.1).abs() + 0.5
    delta = 2.0 / 4 * _ref_lora(factors, w0.shape)
    expected = _ref_dora(w0, delta, factors["dora_scale"], W)
    _check(pipe, tmp_path, f"dora-{w0.ndim}", keyed(kohya("lora_unet_", layer), factors),
           {_pkey(pipe, "unet", layer): expected})
    # at weight 1 every input column's norm is the magnitude (the decomposition itself)
    _apply(pipe, tmp_path, f"dora-{w0.ndim}", keyed(kohya("lora_unet_", layer), factors), 1.0)
    merged = _weight(pipe, "unet", layer)
    norms = torch.linalg.vector_norm(merged, dim=(0, *range(2, merged.ndim)))
    torch.testing.assert_close(norms, factors["dora_scale"].flatten(), rtol=1e-5, atol=1e-6)
    apply_loras(pipe, (), EngineSettings(lora_dirs=(str(tmp_path),)))


def test_dora_per_output_channel(pipes: dict[str, Any], tmp_path: Path) -> None:
    """LyCORIS's wd_on_out layout (magnitude per output row) is normalised per row."""
    pipe = pipes["sd1"]
    w0 = _weight(pipe, "unet", LINEAR)
    rand = Rand(8)
    factors = lora_layer(rand, w0, 4, 4.0)
    factors["dora_scale"] = rand(w0.shape[0], 1, scale=0.1).abs() + 0.5
    merged = w0 + _ref_lora(factors, w0.shape)
    rows = torch.linalg.vector_norm(merged, dim=1, keepdim=True)
    expected = w0 + W * (merged * factors["dora_scale"] / rows - w0)
    _check(pipe, tmp_path, "dora-out", keyed(kohya("lora_unet_", LINEAR), factors),
           {_pkey(pipe, "unet", LINEAR): expected})


def test_norm_and_bias_changes(pipes: dict[str, Any], tmp_path: Path) -> None:
    pipe = pipes["sd1"]
    rand = Rand(9)
    gn_w, gn_b = _weight(pipe, "unet", NORM), _weight(pipe, "unet", NORM, "bias")
    lin_w, lin_b = _weight(pipe, "unet", BIASED), _weight(pipe, "unet", BIASED, "bias")
    norm = {"w_norm": rand(*gn_w.shape), "b_norm": rand(*gn_b.shape)}
    full = {"diff": rand(*lin_w.shape), "diff_b": rand(*lin_b.shape), "alpha": torch.tensor(8.0)}
    state = {**keyed(kohya("lora_unet_", NORM), norm), **keyed(kohya("lora_unet_", BIASED), full)}
    expected = {  # no rank: alpha is ignored (A1111's scale is 1 for these)
        _pkey(pipe, "unet", NORM): gn_w + W * norm["w_norm"],
        _pkey(pipe, "unet", NORM, "bias"): gn_b + W * norm["b_norm"],
        _pkey(pipe, "unet", BIASED): lin_w + W * full["diff"],
        _pkey(pipe, "unet", BIASED, "bias"): lin_b + W * full["diff_b"],
    }
    _check(pipe, tmp_path, "norm-full", state, expected)


def test_text_encoder_and_diffusers_layouts(pipes: dict[str, Any], tmp_path: Path) -> None:
    """kohya lora_te_ for SD1's text encoder, plus the PEFT / diffusers spellings."""
    pipe = pipes["sd1"]
    rand = Rand(10)
    te_w = _weight(pipe, "text_encoder", TEXT)
    unet_w = _weight(pipe, "unet", LINEAR)
    te = lora_layer(rand, te_w, 4, 1.0)
    peft = lora_layer(rand, unet_w, 2, 2.0)
    state = {**keyed(kohya("lora_te_", TEXT), te),
             f"unet.{LINEAR}.lora_A.weight": peft["lora_down.weight"],
             f"unet.{LINEAR}.lora_B.weight": peft["lora_up.weight"]}  # PEFT: no alpha, scale 1
    expected = {_pkey(pipe, "text_encoder", TEXT): te_w + W * 0.25 * _ref_lora(te, te_w.shape),
                _pkey(pipe, "unet", LINEAR): unet_w + W * _ref_lora(peft, unet_w.shape)}
    _check(pipe, tmp_path, "te-peft", state, expected)


def test_sdxl_te1_te2_and_ldm_unet_names(pipes: dict[str, Any], tmp_path: Path) -> None:
    """kohya's SDXL files: lora_te1_ / lora_te2_, and UNet layers under their LDM names
    (down_blocks.1.attentions.0 is input_blocks.4.1 with two resnets per level)."""
    pipe = pipes["sdxl"]
    rand = Rand(11)
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    ldm = "input_blocks.4.1.transformer_blocks.0.attn1.to_q"
    w1, w2 = _weight(pipe, "text_encoder", TEXT), _weight(pipe, "text_encoder_2", TEXT)
    wu = _weight(pipe, "unet", name)
    f1, f2, fu = (lora_layer(rand, w1, 4, 4.0), lora_layer(rand, w2, 4, 2.0),
                  lora_layer(rand, wu, 4, 1.0))
    state = {**keyed(kohya("lora_te1_", TEXT), f1), **keyed(kohya("lora_te2_", TEXT), f2),
             **keyed(kohya("lora_unet_", ldm), fu)}
    expected = {_pkey(pipe, "text_encoder", TEXT): w1 + W * 1.0 * _ref_lora(f1, w1.shape),
                _pkey(pipe, "text_encoder_2", TEXT): w2 + W * 0.5 * _ref_lora(f2, w2.shape),
                _pkey(pipe, "unet", name): wu + W * 0.25 * _ref_lora(fu, wu.shape)}
    _check(pipe, tmp_path, "sdxl-te", state, expected)


def test_switching_sets_and_weight_zero(pipes: dict[str, Any], tmp_path: Path) -> None:
    pipe = pipes["sd1"]
    settings = EngineSettings(lora_dirs=(str(tmp_path),))
    rand = Rand(12)
    w0 = _weight(pipe, "unet", LINEAR)
    save_file(keyed(kohya("lora_unet_", LINEAR), lora_layer(rand, w0, 4, 4.0)),
              str(tmp_path / "a.safetensors"))
    dora = lora_layer(rand, w0, 4, 4.0)
    dora["dora_scale"] = rand(1, w0.shape[1]).abs() + 0.5
    save_file(keyed(kohya("lora_unet_", LINEAR), dora), str(tmp_path / "b.safetensors"))
    before = _params(pipe)
    hashes = apply_loras(pipe, (LoraSpec("a", 0.0),), settings)
    assert list(hashes) == ["a"] and active_loras(pipe) == []
    assert all(torch.equal(before[k], v) for k, v in _params(pipe).items())
    apply_loras(pipe, (LoraSpec("a", 0.8),), settings)
    alone = _params(pipe)
    apply_loras(pipe, (LoraSpec("a", 0.8), LoraSpec("b", 0.5)), settings)
    both = _params(pipe)
    assert not torch.equal(both[_pkey(pipe, "unet", LINEAR)], alone[_pkey(pipe, "unet", LINEAR)])
    apply_loras(pipe, (LoraSpec("a", 0.8),), settings)
    assert all(torch.equal(alone[k], v) for k, v in _params(pipe).items())
    apply_loras(pipe, (), settings)
    assert all(torch.equal(before[k], v) for k, v in _params(pipe).items())


REFUSED: dict[str, tuple[Callable[[torch.Tensor], dict[str, torch.Tensor]], str]] = {
    "unknown-layer": (lambda w: {"lora_unet_no_such_layer.lora_down.weight": torch.ones(2, 2),
                                 "lora_unet_no_such_layer.lora_up.weight": torch.ones(2, 2)},
                      "not in it .*lora_unet_no_such_layer"),
    "unknown-key": (lambda w: {"something_else": torch.ones(2)}, "not a LoRA"),
    "unknown-part": (lambda w: {f"{kohya('lora_unet_', LINEAR)}.lora_down.weight":
                                torch.ones(4, w.shape[1]),
                                f"{kohya('lora_unet_', LINEAR)}.lora_up.weight":
                                torch.ones(w.shape[0], 4),
                                f"{kohya('lora_unet_', LINEAR)}.mystery": torch.ones(1)},
                     "does not know: mystery"),
    "ia3": (lambda w: {f"{kohya('lora_unet_', LINEAR)}.weight": torch.ones(w.shape[1]),
                       f"{kohya('lora_unet_', LINEAR)}.on_input": torch.tensor(True)},
            "IA3 network"),
    "oft": (lambda w: {f"{kohya('lora_unet_', LINEAR)}.oft_blocks": torch.ones(4, 8, 8)},
            "OFT network"),
    "bundled": (lambda w: {"bundle_emb.tok.string_to_param.*": torch.ones(1, 32)},
                "bundled textual-inversion"),
    "peft-dora": (lambda w: {f"unet.{LINEAR}.lora_A.weight": torch.ones(4, w.shape[1]),
                             f"unet.{LINEAR}.lora_B.weight": torch.ones(w.shape[0], 4),
                             f"unet.{LINEAR}.lora_magnitude_vector": torch.ones(w.shape[0])},
                  "PEFT layout"),
    "wrong-shape": (lambda w: {f"{kohya('lora_unet_', LINEAR)}.lora_down.weight":
                               torch.ones(4, w.shape[1] + 1),
                               f"{kohya('lora_unet_', LINEAR)}.lora_up.weight":
                               torch.ones(w.shape[0], 4)},
                    "does not fit this model's unet:"),
    "bad-dora": (lambda w: {f"{kohya('lora_unet_', LINEAR)}.lora_down.weight":
                            torch.ones(4, w.shape[1]),
                            f"{kohya('lora_unet_', LINEAR)}.lora_up.weight":
                            torch.ones(w.shape[0], 4),
                            f"{kohya('lora_unet_', LINEAR)}.dora_scale": torch.ones(1, 3)},
                 "dora_scale of shape"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_by_name_and_nothing_changes(case: str, pipes: dict[str, Any],
                                             tmp_path: Path) -> None:
    """Refused with one line, even after a good LoRA: the model keeps exactly its state."""
    pipe = pipes["sd1"]
    settings = EngineSettings(lora_dirs=(str(tmp_path),))
    w0 = _weight(pipe, "unet", LINEAR)
    good = keyed(kohya("lora_unet_", CONV3), lora_layer(Rand(13), _weight(pipe, "unet", CONV3),
                                                        4, 4.0))
    save_file(good, str(tmp_path / "good.safetensors"))
    build, message = REFUSED[case]
    save_file(build(w0), str(tmp_path / f"{case}.safetensors"))
    apply_loras(pipe, (LoraSpec("good", 1.0),), settings)
    with_good = _params(pipe)
    with pytest.raises(ModelError, match=message) as err:
        apply_loras(pipe, (LoraSpec("good", 1.0), LoraSpec(case, 1.0)), settings)
    assert "\n" not in str(err.value)
    assert all(torch.equal(with_good[k], v) for k, v in _params(pipe).items())
    apply_loras(pipe, (), settings)


def test_sequential_offload_weights(pipes: dict[str, Any], tmp_path: Path) -> None:
    """With accelerate's sequential offload the weights sit in its hooks' CPU copies (the
    module's own are on the meta device): the LoRA goes there, and comes off exactly."""
    from accelerate import cpu_offload
    from accelerate.hooks import remove_hook_from_module

    pipe = pipes["sd1"]
    settings = EngineSettings(lora_dirs=(str(tmp_path),))
    w0 = _weight(pipe, "unet", LINEAR)
    factors = lora_layer(Rand(14), w0, 4, 4.0)
    save_file(keyed(kohya("lora_unet_", LINEAR), factors), str(tmp_path / "seq.safetensors"))
    before = _params(pipe)
    cpu_offload(pipe.unet, execution_device=torch.device("cpu"))
    try:
        assert module(pipe.unet, LINEAR).weight.device.type == "meta"
        apply_loras(pipe, (LoraSpec("seq", W),), settings)
    finally:
        remove_hook_from_module(pipe.unet, recurse=True)
    torch.testing.assert_close(_weight(pipe, "unet", LINEAR),
                               w0 + W * _ref_lora(factors, w0.shape), rtol=RTOL, atol=ATOL)
    apply_loras(pipe, (), settings)
    assert all(torch.equal(before[k], v) for k, v in _params(pipe).items())
