"""Emphasis and BREAK equal a reference written here from A1111's documented algorithm
(modules/sd_hijack_clip.py, modules/sd_emphasis.py), independent of engine.text: the token
weights are written by hand per prompt, each chunk is [BOS] + tokens + [EOS] + padding
(EOS for CLIP ViT-L, 0 after the first EOS for OpenCLIP), encoded, its hidden states
multiplied by the weights and ("Original") rescaled to the chunk's mean before weighting.

The tiny models' final layer norms are untrained (weight 1, bias 0), so the mean of a chunk
after the norm is ~1e-9 and "Original"'s mean restore would be 0 / 0; the pipes here get
final norms with non-zero parameters, as trained CLIP models have.

Tolerance: float32 rounding, 1e-5 absolute on hidden states of magnitude ~1 (measured: the
hidden states are bit-identical, SDXL's pooled output within 2.4e-7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sdstudio.core.request import Mode
from sdstudio.engine.text import encode_prompts

CPU = torch.device("cpu")
BOS, EOS = 49406, 49407
TOL = 1e-5
R, S = 1.1, 1 / 1.1  # (x) and [x]

# prompt -> (chunks of (word, weight) as A1111's parser and chunker make them), by hand
CASES: dict[str, list[list[tuple[str, float]]]] = {
    "a (cat:1.5) [dog]": [[("a", 1.0), ("cat", 1.5), ("dog", S)]],
    "((red)) BREAK blue sky": [[("red", R * R)], [("blue", 1.0), ("sky", 1.0)]],
    "[[sea]], (sun:0.5) BREAK (moon": [[("sea", S * S), (",", 1.0), ("sun", 0.5)],
                                        [("moon", R)]],
    r"\(tree\) (leaf:1.3)": [[("(", 1.0), ("tree", 1.0), (")", 1.0), ("leaf", 1.3)]],
}


def _final_norm(encoder: Any) -> Any:
    return getattr(encoder, "text_model", encoder).final_layer_norm


def _realistic(pipe: Any, seed: int = 7) -> Any:
    gen = torch.Generator().manual_seed(seed)
    for encoder in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if encoder is None:
            continue
        norm = _final_norm(encoder)
        with torch.no_grad():
            norm.weight.copy_(1 + 0.3 * torch.randn(norm.weight.shape, generator=gen))
            norm.bias.copy_(0.3 + 0.5 * torch.randn(norm.bias.shape, generator=gen))
    return pipe


@pytest.fixture(scope="module")
def pipes(tiny_models: dict[str, Path]) -> Iterator[Callable[[str], Any]]:
    from diffusers import DiffusionPipeline

    made: dict[str, Any] = {}

    def get(kind: str) -> Any:
        if kind not in made:
            pipe = DiffusionPipeline.from_pretrained(str(tiny_models[kind]))
            pipe.set_progress_bar_config(disable=True)
            made[kind] = _realistic(pipe)
        return made[kind]

    yield get


def _word_id(tokenizer: Any, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    assert len(ids) == 1, word
    return int(ids[0])


def _reference(pipe: Any, kind: str, chunks: list[list[tuple[int, float]]],
               mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A1111's encoding of hand-made chunks of (token id, weight)."""
    if kind == "sdxl":  # both encoders' penultimate layer, no final norm; pooled from the 2nd
        encoders = [(pipe.text_encoder, EOS, -2), (pipe.text_encoder_2, 0, -2)]
    elif kind.startswith("sd2"):  # OpenCLIP: pad 0; diffusers' encoder already ends early
        encoders = [(pipe.text_encoder, 0, None)]
    else:
        encoders = [(pipe.text_encoder, EOS, None)]
    per_encoder, pooled = [], None
    for model, pad, layer in encoders:
        rows, weights = [], []
        for chunk in chunks:
            ids = [BOS] + [t for t, _ in chunk] + [EOS] + [pad] * (75 - len(chunk))
            rows.append(ids)
            weights.append([1.0] + [w for _, w in chunk] + [1.0] * (76 - len(chunk)))
        out = model(torch.tensor(rows), output_hidden_states=True)
        z = out.last_hidden_state if layer is None else out.hidden_states[layer]
        encoded = []
        for i in range(len(chunks)):
            zi = z[i]
            if mode in ("Original", "No norm"):
                weighted = zi * torch.tensor(weights[i])[:, None]
                if mode == "Original":
                    weighted = weighted * (zi.mean() / weighted.mean())
                zi = weighted
            encoded.append(zi)
        per_encoder.append(torch.cat(encoded)[None])
        if kind == "sdxl" and model is pipe.text_encoder_2:
            pooled = out.text_embeds[:1]  # transformers' own pooled output of chunk 1
    return torch.cat(per_encoder, dim=-1), pooled


def _hand_chunks(pipe: Any, prompt: str, mode: str) -> list[list[tuple[int, float]]]:
    tok = pipe.tokenizer
    if mode == "None":  # no parsing: the whole text, weight 1, one chunk here
        return [[(int(t), 1.0) for t in tok(prompt, add_special_tokens=False).input_ids]]
    return [[(_word_id(tok, w), weight if mode != "Ignore" else 1.0) for w, weight in chunk]
            for chunk in CASES[prompt]]


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sd2-v", "sdxl"])
@pytest.mark.parametrize("mode", ["Original", "No norm", "Ignore", "None"])
def test_emphasis_and_break_equal_a1111_reference(pipes: Callable[[str], Any], kind: str,
                                                  mode: str) -> None:
    pipe = pipes(kind)
    worst = 0.0
    with torch.no_grad():
        for prompt in CASES:
            hand = _hand_chunks(pipe, prompt, mode)
            want, want_pooled = _reference(pipe, kind, hand, mode)
            # the same text as prompt and negative: both sides encode alike, no padding
            enc = encode_prompts(pipe, prompt, prompt, emphasis=mode, device=CPU)
            assert enc.prompt_chunks == len(hand) and enc.prompt_mask is None, prompt
            for got in (enc.prompt_embeds, enc.negative_prompt_embeds):
                assert got.shape == want.shape, prompt
                worst = max(worst, float((got - want).abs().max()))
            if want_pooled is not None:
                assert enc.pooled is not None
                assert torch.allclose(enc.pooled, want_pooled, atol=TOL), prompt
    assert worst <= TOL, worst


def test_weights_change_the_encoding(pipes: Callable[[str], Any]) -> None:
    """The reference above could pass with weights ignored everywhere: not so."""
    pipe = pipes("sd1")
    with torch.no_grad():
        plain = encode_prompts(pipe, "a cat dog", "", device=CPU).prompt_embeds
        for mode in ("Original", "No norm"):
            weighted = encode_prompts(pipe, "a (cat:1.5) [dog]", "", emphasis=mode,
                                      device=CPU).prompt_embeds
            assert float((weighted - plain).abs().max()) > 1e-2
        ignored = encode_prompts(pipe, "a (cat:1.5) [dog]", "", emphasis="Ignore",
                                 device=CPU).prompt_embeds
        assert torch.equal(ignored, plain)
        original = encode_prompts(pipe, "a (cat:1.5) [dog]", "", device=CPU).prompt_embeds
    assert float(original.mean()) == pytest.approx(float(plain.mean()), rel=1e-4)


@pytest.fixture(scope="module")
def sd1_engine(tiny_models: dict[str, Path]) -> Iterator[Any]:
    from sdstudio.engine import Engine

    eng = Engine()
    eng.load(str(tiny_models["sd1"]))
    _realistic(eng._model.pipes.get(Mode.TXT2IMG))  # its own engine: the shared one unchanged
    yield eng
    eng.unload()


def _pixels(eng: Any, make_request: Callable[..., Any], prompt: str, **kw: Any) -> np.ndarray:
    out = eng.generate(make_request(prompt=prompt, negative_prompt="ugly", steps=2, **kw))[0]
    return np.asarray(out.image)


def test_weight_one_is_the_plain_prompt(sd1_engine: Any,
                                        make_request: Callable[..., Any]) -> None:
    plain = _pixels(sd1_engine, make_request, "a photo of a cat")
    assert np.array_equal(plain, _pixels(sd1_engine, make_request, "a photo of a (cat:1.0)"))
    assert np.array_equal(plain, _pixels(sd1_engine, make_request, "(a photo of a cat:1)"))
    emphasized = _pixels(sd1_engine, make_request, "a photo of a (cat)")
    assert not np.array_equal(plain, emphasized)
    # Ignore: the syntax is parsed away and the weights unused
    assert np.array_equal(plain, _pixels(sd1_engine, make_request, "a photo of a (cat:1.5)",
                                         emphasis="Ignore"))
    # None: the brackets are text, other tokens, another image
    assert not np.array_equal(plain, _pixels(sd1_engine, make_request, "a photo of a (cat)",
                                             emphasis="None"))


def test_window_counter_follows_the_emphasis_setting(qtbot: Any) -> None:
    """The prompt panel's "n/75" counts what the engine will encode with the panel's own
    Emphasis setting, and counts again when that setting changes."""
    from sdstudio.ui.prompt_panel import PromptPanel

    panel = PromptPanel()
    qtbot.addWidget(panel)
    panel.prompt_edit.setPlainText("a (cat:1.2) BREAK dog")
    qtbot.waitUntil(lambda: panel.prompt_counter.text() == "76/150", timeout=5000)
    panel.control("emphasis").set_value("None")  # brackets and BREAK are text
    qtbot.waitUntil(lambda: panel.prompt_counter.text() == "10/75", timeout=5000)
    panel.shutdown()
