"""Long prompts in 75-token chunks (as AUTOMATIC1111), token counts, count_tokens."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import torch

from sdstudio.core.request import Mode
from sdstudio.engine.text import chunk_ids, count_tokens, encode_prompts


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


def test_chunk_ids_layout() -> None:
    ids = list(range(1, 101))
    rows = chunk_ids(ids, 2, bos=49406, eos=49407, pad=0)
    assert [len(r) for r in rows] == [77, 77]
    assert rows[0][0] == 49406 and rows[0][76] == 49407 and rows[0][1:76] == ids[:75]
    assert rows[1][1:26] == ids[75:] and rows[1][26] == 49407 and rows[1][27:] == [0] * 50


def test_short_prompt_matches_diffusers(engines: Callable[[str], Any]) -> None:
    pipe = engines("sd1")._model.pipes.get(Mode.TXT2IMG)
    ours = encode_prompts(pipe, "a photo of a cat", "blurry", device=torch.device("cpu"))
    theirs, neg = pipe.encode_prompt("a photo of a cat", "cpu", 1, True, "blurry")
    assert torch.allclose(ours.prompt_embeds, theirs, atol=1e-6)
    assert torch.allclose(ours.negative_prompt_embeds, neg, atol=1e-6)


def test_long_prompt_is_chunked_not_cut(engines: Callable[[str], Any],
                                        make_request: Callable[..., Any]) -> None:
    eng = engines("sd1")
    pipe = eng._model.pipes.get(Mode.TXT2IMG)
    long_prompt = ", ".join(["a red cat"] * 40)  # 40*3 + 39 commas = 159 tokens
    enc = encode_prompts(pipe, long_prompt, "", device=torch.device("cpu"))
    assert enc.prompt_tokens == 159 and enc.chunks == 3
    assert enc.prompt_embeds.shape[1] == 77 * 3
    assert enc.negative_prompt_embeds.shape == enc.prompt_embeds.shape
    # the text after token 75 changes the result (it is not silently dropped)
    other = encode_prompts(pipe, long_prompt + ", a blue dog", "", device=torch.device("cpu"))
    assert not torch.allclose(enc.prompt_embeds, other.prompt_embeds)
    out = eng.generate(make_request(prompt=long_prompt, negative_prompt="ugly", steps=1))[0]
    assert out.info.prompt_tokens == 159 and out.info.negative_tokens == 1


def test_long_prompt_sdxl_pooled(engines: Callable[[str], Any],
                                 make_request: Callable[..., Any]) -> None:
    eng = engines("sdxl")
    pipe = eng._model.pipes.get(Mode.TXT2IMG)
    long_prompt = " ".join(["cat"] * 80)
    enc = encode_prompts(pipe, long_prompt, "", device=torch.device("cpu"))
    assert enc.chunks == 2 and enc.prompt_embeds.shape == (1, 154, 64)
    assert enc.pooled is not None and enc.pooled.shape == (1, 32)
    assert torch.count_nonzero(enc.negative_prompt_embeds) == 0  # SDXL zeros empty negative
    out = eng.generate(make_request("sdxl", prompt=long_prompt, steps=1))[0]
    assert out.info.prompt_tokens == 80


def test_sdxl_short_prompt_matches_diffusers(engines: Callable[[str], Any]) -> None:
    pipe = engines("sdxl")._model.pipes.get(Mode.TXT2IMG)
    ours = encode_prompts(pipe, "a photo of a cat", "blurry", device=torch.device("cpu"))
    p, n, pp, np_ = pipe.encode_prompt("a photo of a cat", device="cpu",
                                       negative_prompt="blurry")
    assert torch.allclose(ours.prompt_embeds, p, atol=1e-6)
    assert torch.allclose(ours.negative_prompt_embeds, n, atol=1e-6)
    assert torch.allclose(ours.pooled, pp, atol=1e-6)
    assert torch.allclose(ours.negative_pooled, np_, atol=1e-6)
