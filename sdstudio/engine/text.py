"""Prompt encoding without the 77-token cut, as AUTOMATIC1111 does it.

The token ids (BOS/EOS excluded) are split into chunks of 75; each chunk becomes
``[BOS] + chunk + [EOS] + padding`` (77 ids), is encoded on its own, and the hidden states are
concatenated along the sequence axis. The negative prompt is padded with empty chunks to the
same count so classifier-free guidance sees equal lengths. A prompt of up to 75 tokens gives
exactly what diffusers' own ``encode_prompt`` gives.

``count_tokens`` needs only the tokenizer files (no torch): the UI's token counter can use it.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.core import paths

if TYPE_CHECKING:
    import torch

CHUNK = 75  # tokens per chunk, BOS and EOS excluded


@functools.lru_cache(maxsize=4)
def _tokenizer(folder: str) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(folder)


def default_tokenizer_dir() -> Path:
    return paths.resources_dir() / "tokenizers" / "clip-l"


def token_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without BOS/EOS and without truncation."""
    ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
    return list(ids)


def count_tokens(text: str, tokenizer_dir: str | os.PathLike[str] | None = None) -> int:
    """Number of CLIP tokens in ``text`` (BOS/EOS not counted), as A1111's "12/75" counter.
    Pure tokenizer work: imports transformers' tokenizer only, never torch."""
    tok = _tokenizer(str(tokenizer_dir or default_tokenizer_dir()))
    return len(token_ids(tok, text))


def chunk_ids(ids: list[int], chunks: int, bos: int, eos: int, pad: int) -> list[list[int]]:
    """``chunks`` windows of 77 ids: BOS, up to 75 tokens, EOS, padding."""
    out = []
    for i in range(chunks):
        part = ids[i * CHUNK:(i + 1) * CHUNK]
        row = [bos, *part, eos]
        row += [pad] * (CHUNK + 2 - len(row))
        out.append(row)
    return out


def n_chunks(n_tokens: int) -> int:
    return max(1, -(-n_tokens // CHUNK))


@dataclass
class Encoded:
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None
    prompt_tokens: int = 0
    negative_tokens: int = 0
    chunks: int = 1

    def pipe_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "prompt_embeds": self.prompt_embeds,
            "negative_prompt_embeds": self.negative_prompt_embeds,
        }
        if self.pooled is not None:
            kwargs["pooled_prompt_embeds"] = self.pooled
            kwargs["negative_pooled_prompt_embeds"] = self.negative_pooled
        return kwargs


def _encode_rows(text_encoder: Any, rows: list[list[int]], device: Any, *, hidden_index: int | None,
                 final_norm: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode 77-id rows; return (hidden states (1, 77*n, d), pooled of the first row)."""
    import torch

    ids = torch.tensor(rows, dtype=torch.long, device=device)
    if hidden_index is None:
        out = text_encoder(ids)
        hidden = out[0]
    else:
        out = text_encoder(ids, output_hidden_states=True)
        hidden = out.hidden_states[hidden_index]
        if final_norm:
            hidden = text_encoder.text_model.final_layer_norm(hidden)
    pooled = out[0] if getattr(out, "text_embeds", None) is not None else None
    hidden = hidden.reshape(1, -1, hidden.shape[-1])
    return hidden, (pooled[:1] if pooled is not None else None)


def encode_prompts(pipe: Any, prompt: str, negative: str, *, clip_skip: int = 1,
                   device: Any = None) -> Encoded:
    """Encode ``prompt`` and ``negative`` for an SD 1.x/2.x or SDXL pipeline."""
    import torch

    device = device if device is not None else pipe._execution_device
    encoders = [(pipe.tokenizer, pipe.text_encoder)]
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    if sdxl:
        encoders = [(t, e) for t, e in encoders if t is not None and e is not None]
        encoders.append((pipe.tokenizer_2, pipe.text_encoder_2))
    first_tok = encoders[0][0]
    convert = getattr(pipe, "maybe_convert_prompt", None)  # multi-vector embedding tokens

    def expand(text: str, tokenizer: Any) -> str:
        return str(convert(text, tokenizer)) if convert is not None else text

    cache: dict[tuple[int, str], list[int]] = {}

    def ids_for(tokenizer: Any, text: str) -> list[int]:
        key = (id(tokenizer), text)
        if key not in cache:
            cache[key] = token_ids(tokenizer, expand(text, tokenizer))
        return cache[key]

    pos_ids = ids_for(first_tok, prompt)
    neg_ids = ids_for(first_tok, negative)
    chunks = max(n_chunks(len(pos_ids)), n_chunks(len(neg_ids)))

    def encode(text: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        hiddens = []
        pooled = None
        for tokenizer, encoder in encoders:
            ids = ids_for(tokenizer, text)
            rows = chunk_ids(ids, chunks, tokenizer.bos_token_id, tokenizer.eos_token_id,
                             tokenizer.pad_token_id)
            if sdxl:  # SDXL: penultimate layer by default, no final norm (as diffusers)
                hidden, pooled = _encode_rows(encoder, rows, device,
                                              hidden_index=-(clip_skip + 1), final_norm=False)
            elif clip_skip > 1:
                hidden, _ = _encode_rows(encoder, rows, device, hidden_index=-clip_skip,
                                         final_norm=True)
            else:
                hidden, _ = _encode_rows(encoder, rows, device, hidden_index=None,
                                         final_norm=False)
            hiddens.append(hidden)
        return torch.cat(hiddens, dim=-1), pooled

    from sdstudio.engine.pipelines import module_dtype

    dtype = module_dtype(pipe.unet)  # not pipe.unet.dtype: see module_dtype
    with torch.no_grad():
        pos, pos_pooled = encode(prompt)
        zero_negative = sdxl and not negative and bool(
            getattr(pipe.config, "force_zeros_for_empty_prompt", False)
        )
        if zero_negative:
            neg = torch.zeros_like(pos)
            neg_pooled = torch.zeros_like(pos_pooled) if pos_pooled is not None else None
        else:
            neg, neg_pooled = encode(negative)
    return Encoded(
        prompt_embeds=pos.to(device=device, dtype=dtype),
        negative_prompt_embeds=neg.to(device=device, dtype=dtype),
        pooled=pos_pooled.to(device=device, dtype=dtype) if pos_pooled is not None else None,
        negative_pooled=neg_pooled.to(device=device, dtype=dtype)
        if neg_pooled is not None else None,
        prompt_tokens=len(pos_ids),
        negative_tokens=len(neg_ids),
        chunks=chunks,
    )
