"""Long prompts in 75-token chunks (as AUTOMATIC1111), token counts, the shared counter,
clip skip per family, textual-inversion embeddings kept whole in a chunk."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from sdstudio.core import tokens
from sdstudio.core.request import EMPHASIS_MODES, Mode
from sdstudio.engine.text import count_tokens, encode_prompts

CPU = torch.device("cpu")


def test_count_tokens_known_ids() -> None:
    assert count_tokens("a photo of a cat") == 5
    assert count_tokens("") == 0
    assert count_tokens("cat " * 100) == 100


def test_count_tokens_needs_no_torch() -> None:
    code = ("import sys; from sdstudio.engine.text import count_tokens; "
            "n = count_tokens('a photo of a cat'); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(n)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"


def test_short_prompt_matches_diffusers(engines: Callable[[str], Any]) -> None:
    pipe = engines("sd1")._model.pipes.get(Mode.TXT2IMG)
    ours = encode_prompts(pipe, "a photo of a cat", "blurry", device=CPU)
    theirs, neg = pipe.encode_prompt("a photo of a cat", "cpu", 1, True, "blurry")
    assert torch.allclose(ours.prompt_embeds, theirs, atol=1e-6)
    assert torch.allclose(ours.negative_prompt_embeds, neg, atol=1e-6)
    assert ours.prompt_mask is None and not ours.notes  # equal lengths: nothing masked


def test_long_prompt_is_chunked_not_cut(engines: Callable[[str], Any],
                                        make_request: Callable[..., Any]) -> None:
    eng = engines("sd1")
    pipe = eng._model.pipes.get(Mode.TXT2IMG)
    long_prompt = ", ".join(["a red cat"] * 40)  # 40*3 + 39 commas = 159 tokens
    assert len(tokens.encode(long_prompt)) == 159
    enc = encode_prompts(pipe, long_prompt, "", device=CPU)
    # A1111's count: the 76th token is a comma and opens chunk 2; chunk 2 ends 2 tokens
    # after a comma, those 2 move to chunk 3 (11 tokens)
    assert enc.prompt_tokens == count_tokens(long_prompt) == 75 * 2 + 11
    assert enc.chunks == enc.prompt_chunks == 3 and enc.negative_chunks == 1
    assert enc.prompt_embeds.shape[1] == 77 * 3
    assert enc.negative_prompt_embeds.shape == enc.prompt_embeds.shape
    assert enc.negative_mask is not None and int(enc.negative_mask.sum()) == 77
    assert enc.notes and "prompt 3 chunk(s), negative 1" in enc.notes[0]
    # the text after token 75 changes the result (it is not silently dropped)
    other = encode_prompts(pipe, long_prompt + ", a blue dog", "", device=CPU)
    assert not torch.allclose(enc.prompt_embeds, other.prompt_embeds)
    out = eng.generate(make_request(prompt=long_prompt, negative_prompt="ugly", steps=1))[0]
    assert out.info.prompt_tokens == 161 and out.info.negative_tokens == 1
    assert any("negative 1: each attended at its own length" in n for n in out.info.notes)


def test_long_prompt_sdxl_pooled(engines: Callable[[str], Any],
                                 make_request: Callable[..., Any]) -> None:
    eng = engines("sdxl")
    pipe = eng._model.pipes.get(Mode.TXT2IMG)
    long_prompt = " ".join(["cat"] * 80)
    enc = encode_prompts(pipe, long_prompt, "", device=CPU)
    assert enc.chunks == 2 and enc.prompt_embeds.shape == (1, 154, 64)
    assert enc.pooled is not None and enc.pooled.shape == (1, 32)
    assert enc.negative_chunks == 1  # A1111: an empty SDXL negative is one chunk of zeros
    assert torch.count_nonzero(enc.negative_prompt_embeds) == 0
    assert torch.count_nonzero(enc.negative_pooled) == 0
    # the pooled output is the first chunk's: text after token 75 leaves it alone
    more = encode_prompts(pipe, long_prompt + " dog dog", "", device=CPU)
    assert torch.equal(enc.pooled, more.pooled)
    out = eng.generate(make_request("sdxl", prompt=long_prompt, steps=1))[0]
    assert out.info.prompt_tokens == 80


def test_sdxl_short_prompt_matches_diffusers(engines: Callable[[str], Any]) -> None:
    pipe = engines("sdxl")._model.pipes.get(Mode.TXT2IMG)
    ours = encode_prompts(pipe, "a photo of a cat", "blurry", device=CPU)
    p, n, pp, np_ = pipe.encode_prompt("a photo of a cat", device="cpu",
                                       negative_prompt="blurry")
    assert torch.allclose(ours.prompt_embeds, p, atol=1e-6)
    assert torch.allclose(ours.negative_prompt_embeds, n, atol=1e-6)
    assert torch.allclose(ours.pooled, pp, atol=1e-6)
    assert torch.allclose(ours.negative_pooled, np_, atol=1e-6)


COUNTER_PROMPTS = [
    "",
    "a photo of a cat",
    "a (cat:1.3) BREAK [dog], ((sky))",
    "BREAK a cat BREAK",
    ", ".join(["a b c d e"] * 30),  # the comma backtrack moves tokens twice
    ", ".join(["masterpiece best quality"] * 50),  # 199 tokens, 3 chunks
    " ".join(["cat"] * 75),
    " ".join(["cat"] * 76),
    r"\(escaped\) (open [nested:0.5 text",
    "a cat <lora:detail:0.7>, (BREAK) BREAK sky",
]


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_counter_and_encoder_agree(engines: Callable[[str], Any], kind: str) -> None:
    """The window's counter (core.tokens, no torch) and the encoder give the same token count
    and chunk count for every emphasis mode."""
    from sdstudio.core.request import GenerationRequest

    pipe = engines(kind)._model.pipes.get(Mode.TXT2IMG)
    for text in COUNTER_PROMPTS:
        clean, _ = GenerationRequest(prompt=text).prompt_loras()
        for mode in EMPHASIS_MODES:
            enc = encode_prompts(pipe, clean, "x", emphasis=mode, device=CPU)
            count = count_tokens(text, emphasis=mode)
            assert enc.prompt_tokens == count, (text, mode)
            assert enc.prompt_chunks == tokens.chunk_info(count)[1] // 75, (text, mode)
            assert enc.prompt_embeds.shape[1] == 77 * enc.chunks


def test_clip_skip_as_a1111(engines: Callable[[str], Any]) -> None:
    """SD 1.x: the N-th layer from the end through the final norm; SD 2.x and SDXL: clip skip
    has no effect in A1111, and a note says so."""
    pipe = engines("sd1")._model.pipes.get(Mode.TXT2IMG)
    enc = encode_prompts(pipe, "a cat", "", clip_skip=2, device=CPU)
    row = [tokens.BOS_ID, *tokens.encode("a cat"), *[tokens.EOS_ID] * 74]
    with torch.no_grad():
        out = pipe.text_encoder(torch.tensor([row]), output_hidden_states=True)
        want = pipe.text_encoder.final_layer_norm(out.hidden_states[-2])
    assert torch.allclose(enc.prompt_embeds, want, atol=1e-6)
    assert not torch.allclose(enc.prompt_embeds, out.last_hidden_state, atol=1e-3)
    for kind in ("sd2", "sdxl"):
        pipe = engines(kind)._model.pipes.get(Mode.TXT2IMG)
        one = encode_prompts(pipe, "a cat", "dog", clip_skip=1, device=CPU)
        two = encode_prompts(pipe, "a cat", "dog", clip_skip=2, device=CPU)
        assert torch.equal(one.prompt_embeds, two.prompt_embeds), kind
        assert two.notes == [f"clip skip 2 has no effect on {kind.upper()} models, as in "
                             "A1111"]


def test_embedding_vectors_stay_in_one_chunk(tiny_models: dict[str, Path]) -> None:
    """A 3-vector textual inversion after 73 tokens does not fit in chunk 1: chunk 1 is
    padded and the embedding starts chunk 2 (A1111's tokenize_line)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_models["sd1"]))
    pipe.set_progress_bar_config(disable=True)
    width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    vectors = torch.randn(3, width, generator=torch.Generator().manual_seed(3))
    pipe.load_textual_inversion({"mystyle": vectors}, token="mystyle")
    ids = pipe.tokenizer.convert_tokens_to_ids(["mystyle", "mystyle_1", "mystyle_2"])
    cat = tokens.encode("cat")[0]
    eos, bos = tokens.EOS_ID, tokens.BOS_ID
    enc = encode_prompts(pipe, " ".join(["cat"] * 73) + " (mystyle:1.2)", "", device=CPU,
                         emphasis="No norm")
    assert enc.prompt_chunks == 2 and enc.prompt_tokens == 75 + 3
    rows = torch.tensor([[bos, *[cat] * 73, eos, eos, eos],
                         [bos, *ids, *[eos] * 73]])
    weights = torch.ones(2, 77)
    weights[1, 1:4] = 1.2
    with torch.no_grad():
        hidden = pipe.text_encoder(rows).last_hidden_state * weights.unsqueeze(-1)
    assert torch.allclose(enc.prompt_embeds, hidden.reshape(1, 154, -1), atol=1e-6)
    # with 72 tokens before it, it fits: one chunk
    fits = encode_prompts(pipe, " ".join(["cat"] * 72) + " mystyle", "", device=CPU)
    assert fits.prompt_chunks == 1 and fits.prompt_tokens == 75
