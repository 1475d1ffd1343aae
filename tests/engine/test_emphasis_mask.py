"""A prompt and negative with different chunk counts: A1111 (pad_cond_uncond off) runs them
in separate UNet calls at their own lengths. SD Studio batches them with the shorter padded
and masked out of cross-attention; these tests prove that equals the separate calls, for the
attention processors the engine uses (SDPA, sliced, classic), on the tiny SD 1.x and SDXL
UNets, and inside a real pipeline run.

Tolerance: float32 rounding only (different summation order in batched matmuls and in the
softmax over the longer, masked key sequence): 1e-5 absolute on UNet outputs of magnitude ~1
(measured max 1.5e-6 on these models, every processor); without the mask the same batch is
off by about 0.1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from sdstudio.core.request import Mode
from sdstudio.engine.text import Encoded, encode_prompts

CPU = torch.device("cpu")
TOL = 1e-5
LONG = ", ".join(["a red cat on a wooden table"] * 12)  # 2 chunks
SHORT = "blurry, ugly"  # 1 chunk


@pytest.fixture(scope="module")
def pipes(tiny_models: dict[str, Path]) -> Iterator[Callable[[str], Any]]:
    """Pipelines of their own: these tests change the attention processors."""
    from diffusers import DiffusionPipeline

    made: dict[str, Any] = {}

    def get(kind: str) -> Any:
        if kind not in made:
            made[kind] = DiffusionPipeline.from_pretrained(str(tiny_models[kind]))
            made[kind].set_progress_bar_config(disable=True)
        return made[kind]

    yield get


def _processor(name: str) -> Any:
    from diffusers.models.attention_processor import (
        AttnProcessor,
        AttnProcessor2_0,
        SlicedAttnProcessor,
    )

    return {"sdpa": AttnProcessor2_0(), "sliced": SlicedAttnProcessor(slice_size=1),
            "classic": AttnProcessor()}[name]


def _unet_inputs(pipe: Any, rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(rows, pipe.unet.config.in_channels, 8, 8, generator=gen)
    return sample, torch.tensor(500)


def _added(pipe: Any, pooled: torch.Tensor | None) -> dict[str, Any] | None:
    if pooled is None:
        return None
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]).expand(pooled.shape[0], -1)
    return {"text_embeds": pooled, "time_ids": time_ids}


def _real(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return hidden if mask is None else hidden[:, mask[0]]


def _separate_and_batched(pipe: Any, enc: Encoded, n: int,
                          masked: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A1111's two calls (negative, prompt; each unpadded, n images) and the one padded
    batch the pipeline makes, through ``Encoded.masked_attention``."""
    unet = pipe.unet
    sample, t = _unet_inputs(pipe, n)
    parts = []
    for hidden, mask, pooled in ((enc.negative_prompt_embeds, enc.negative_mask,
                                  enc.negative_pooled),
                                 (enc.prompt_embeds, enc.prompt_mask, enc.pooled)):
        states = _real(hidden, mask).expand(n, -1, -1)
        added = _added(pipe, pooled.expand(n, -1) if pooled is not None else None)
        parts.append(unet(sample, t, encoder_hidden_states=states,
                          added_cond_kwargs=added).sample)
    states = torch.cat([enc.negative_prompt_embeds.expand(n, -1, -1),
                        enc.prompt_embeds.expand(n, -1, -1)])
    pooled = (torch.cat([enc.negative_pooled.expand(n, -1), enc.pooled.expand(n, -1)])
              if enc.pooled is not None and enc.negative_pooled is not None else None)
    with enc.masked_attention(unet, n) if masked else _nothing():
        batched = unet(torch.cat([sample, sample]), t, encoder_hidden_states=states,
                       added_cond_kwargs=_added(pipe, pooled)).sample
    return torch.cat(parts), batched


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
@pytest.mark.parametrize("processor", ["sdpa", "sliced", "classic"])
def test_masked_batch_equals_separate_calls(pipes: Callable[[str], Any], kind: str,
                                            processor: str) -> None:
    pipe = pipes(kind)
    pipe.unet.set_attn_processor(_processor(processor))
    for prompt, negative in ((LONG, SHORT), (SHORT, LONG)):  # either side the longer
        enc = encode_prompts(pipe, prompt, negative, device=CPU)
        assert (enc.prompt_chunks, enc.negative_chunks) in ((2, 1), (1, 2))
        assert enc.prompt_embeds.shape == enc.negative_prompt_embeds.shape == (
            1, 154, enc.prompt_embeds.shape[2])
        with torch.no_grad():
            for n in (1, 2):
                separate, batched = _separate_and_batched(pipe, enc, n)
                diff = float((separate - batched).abs().max())
                assert diff <= TOL, (kind, processor, prompt == LONG, n, diff)
            # the mask is what makes them equal: without it the padding is attended to
            separate, unmasked = _separate_and_batched(pipe, enc, 1, masked=False)
            assert float((separate - unmasked).abs().max()) > 1e-2


def test_mask_without_guidance(pipes: Callable[[str], Any]) -> None:
    """cfg 1: the pipeline sends the prompt rows alone; a padded prompt is still masked."""
    pipe = pipes("sd1")
    pipe.unet.set_attn_processor(_processor("sdpa"))
    enc = encode_prompts(pipe, SHORT, LONG, device=CPU)
    assert enc.prompt_mask is not None
    sample, t = _unet_inputs(pipe, 2)
    with torch.no_grad():
        alone = pipe.unet(sample, t, encoder_hidden_states=_real(
            enc.prompt_embeds, enc.prompt_mask).expand(2, -1, -1)).sample
        with enc.masked_attention(pipe.unet, 2):
            padded = pipe.unet(sample, t,
                               encoder_hidden_states=enc.prompt_embeds.expand(2, -1, -1)).sample
    assert float((alone - padded).abs().max()) <= TOL
    # the hook is gone afterwards
    assert not pipe.unet._forward_pre_hooks


def test_pipeline_run_equals_separate_calls(engines: Callable[[str], Any],
                                            make_request: Callable[..., Any]) -> None:
    """Inside a real engine run (sd1, 3 steps, guidance on): every UNet call got the mask,
    and its output equals A1111's two separate unpadded calls on the same inputs."""
    eng = engines("sd1")
    unet = eng._model.pipes.get(Mode.TXT2IMG).unet
    calls: list[tuple[dict[str, Any], torch.Tensor]] = []

    def record(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
               output: Any) -> None:
        sample = output[0] if isinstance(output, tuple) else output.sample
        calls.append(({"args": args, **kwargs}, sample.detach().clone()))

    handle = unet.register_forward_hook(record, with_kwargs=True)
    try:
        out = eng.generate(make_request(prompt=LONG, negative_prompt=SHORT, steps=3))[0]
    finally:
        handle.remove()
    assert any("prompt 2 chunk(s), negative 1" in note for note in out.info.notes)
    assert len(calls) == 3
    worst = 0.0
    with torch.no_grad():
        for kwargs, got in calls:
            sample, t = kwargs["args"][0], kwargs["args"][1]
            mask = kwargs["encoder_attention_mask"]
            states = kwargs["encoder_hidden_states"]
            assert mask.shape == (2, 154) and int(mask[0].sum()) == 77  # negative first
            assert int(mask[1].sum()) == 154
            for row in range(2):
                alone = unet(sample[row:row + 1], t,
                             encoder_hidden_states=states[row:row + 1, mask[row]]).sample
                worst = max(worst, float((alone - got[row:row + 1]).abs().max()))
    assert worst <= TOL, worst
