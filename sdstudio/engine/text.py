"""Prompt encoding as AUTOMATIC1111 does it: emphasis, ``BREAK``, 75-token chunks.

The prompt is parsed and chunked by ``core.tokens`` (the same code the token counter uses),
per text encoder with that encoder's tokenizer. Each chunk becomes 77 ids (BOS, 75 tokens,
EOS, padding: EOS for CLIP ViT-L, 0 after the first EOS for OpenCLIP as A1111), is encoded on
its own, and the emphasis mode is applied to its hidden states as A1111's ``sd_emphasis``:

- "Original": each token's hidden state times its weight, then the chunk rescaled so that
  its mean is the mean before weighting;
- "No norm": the weights without the rescaling;
- "Ignore": the syntax parsed away, no weights; "None": no parsing at all.

Hidden states per family, as A1111: SD 1.x the last layer, or with clip skip N the N-th
layer from the end through the final layer norm; SD 2.x the encoder's output (diffusers'
SD 2 text encoder already ends at OpenCLIP's penultimate layer) whatever the clip skip;
SDXL the penultimate layer of both encoders without the final norm, concatenated, whatever
the clip skip, and the pooled output from the second encoder's first chunk.

A prompt and negative with different chunk counts: A1111 (``pad_cond_uncond`` off, its
default) runs them in separate UNet calls, each at its own length. Diffusers' pipelines batch
both, so the shorter one is padded to the same length and the padding is masked out of the
UNet's cross-attention (``Encoded.masked_attention``): every attention processor diffusers
uses for these UNets honours ``encoder_attention_mask``, and the masked padding gets exactly
zero attention, which equals the separate calls up to float rounding (see
tests/engine/test_emphasis_mask.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sdstudio.core import tokens
from sdstudio.core.errors import RequestError

if TYPE_CHECKING:
    import torch

CHUNK = tokens.CHUNK  # tokens per chunk, BOS and EOS excluded
OPENCLIP_PAD = 0  # A1111's id_pad for OpenCLIP encoders (SD 2.x, SDXL's second)
count_tokens = tokens.count_tokens  # the one counter: torch-free, shared with the window


def family_of(pipe: Any, arch: str | None = None) -> str:
    """"sd1", "sd2" or "sdxl": from the model's architecture name, else from the pipe."""
    if arch:
        return "sdxl" if arch.startswith("sdxl") else "sd2" if arch.startswith("sd2") else "sd1"
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    tokenizer = pipe.tokenizer
    return "sd2" if tokenizer.pad_token_id != tokenizer.eos_token_id else "sd1"


@dataclass(frozen=True)
class _TextEncoder:
    tokenizer: Any
    model: Any
    pad_id: int
    hidden_index: int | None  # None: the model's output (last layer, final norm)
    final_norm: bool  # apply the final layer norm to hidden_states[hidden_index]
    pooled: bool = False


def _text_encoders(pipe: Any, family: str, clip_skip: int) -> list[_TextEncoder]:
    if family == "sdxl":
        found = [(t, e, eos_pad) for t, e, eos_pad in (
            (pipe.tokenizer, pipe.text_encoder, True),
            (pipe.tokenizer_2, pipe.text_encoder_2, False)) if t is not None and e is not None]
        return [_TextEncoder(t, e, t.eos_token_id if eos_pad else OPENCLIP_PAD, -2, False,
                             pooled=e is pipe.text_encoder_2) for t, e, eos_pad in found]
    tokenizer, model = pipe.tokenizer, pipe.text_encoder
    if family == "sd2":
        return [_TextEncoder(tokenizer, model, OPENCLIP_PAD, None, False)]
    layers = int(model.config.num_hidden_layers)
    if clip_skip > layers:
        raise RequestError("clip_skip", f"clip skip {clip_skip} is more than this model's "
                                        f"{layers} text encoder layers")
    if clip_skip > 1:
        return [_TextEncoder(tokenizer, model, tokenizer.eos_token_id, -clip_skip, True)]
    return [_TextEncoder(tokenizer, model, tokenizer.eos_token_id, None, False)]


def _embedding_groups(tokenizer: Any) -> dict[int, tuple[int, ...]]:
    """Multi-vector textual-inversion embeddings loaded by diffusers: the placeholder
    ``name`` and its ``name_1``, ``name_2``... tokens, by the first one's id."""
    added: dict[str, int] = dict(getattr(tokenizer, "added_tokens_encoder", {}) or {})
    groups: dict[int, tuple[int, ...]] = {}
    for name, first in added.items():
        ids = [first]
        while f"{name}_{len(ids)}" in added:
            ids.append(added[f"{name}_{len(ids)}"])
        if len(ids) > 1:
            groups[first] = tuple(ids)
    return groups


def _prompt_chunks(pipe: Any, enc: _TextEncoder, text: str,
                   emphasis: str) -> tokens.ChunkedPrompt:
    tokenizer = enc.tokenizer
    convert = getattr(pipe, "maybe_convert_prompt", None)  # multi-vector embedding tokens
    groups = _embedding_groups(tokenizer)

    def tokenize(piece: str) -> list[int]:
        if convert is not None:
            piece = str(convert(piece, tokenizer))
        return list(tokenizer(piece, add_special_tokens=False, truncation=False,
                              verbose=False).input_ids)

    def embedding_at(ids: Sequence[int], pos: int) -> int:
        group = groups.get(ids[pos])
        return len(group) if group and tuple(ids[pos:pos + len(group)]) == group else 0

    return tokens.chunk_prompt(tokens.prompt_pieces(text, emphasis), tokenize,
                               comma_id=int(tokenizer.convert_tokens_to_ids(",</w>")),
                               embedding_at=embedding_at if groups else None)


def apply_emphasis(hidden: torch.Tensor, weights: torch.Tensor, emphasis: str) -> torch.Tensor:
    """A1111's ``sd_emphasis`` on chunks (n, 77, d) with weights (n, 77), in float32:
    "Original" weights each token's vector and restores each chunk's mean; "No norm" only
    weights; "Ignore" and "None" leave them."""
    z = hidden.float()
    if emphasis not in ("Original", "No norm"):
        return z
    weighted = z * weights.to(z.device, z.dtype).unsqueeze(-1)
    if emphasis == "No norm":
        return weighted
    ratio = z.mean(dim=(1, 2), keepdim=True) / weighted.mean(dim=(1, 2), keepdim=True)
    # a chunk without weights keeps its states exactly (A1111's ratio is then mean / mean = 1;
    # set here so that a chunk whose mean is 0 does not become 0 / 0)
    ratio[(weights == 1).all(dim=1)] = 1.0
    return weighted * ratio


def _encode_chunks(enc: _TextEncoder, chunked: tokens.ChunkedPrompt, emphasis: str,
                   device: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hidden states (1, 77*n, d) of the chunks, and the pooled output of the first one
    (SDXL's second encoder): the final-norm state at the first EOS, projected."""
    import torch

    tok = enc.tokenizer
    rows = [chunk.row(tok.bos_token_id, tok.eos_token_id, enc.pad_id)
            for chunk in chunked.chunks]
    weights = torch.tensor([chunk.row_weights() for chunk in chunked.chunks])
    ids = torch.tensor(rows, dtype=torch.long, device=device)
    out = enc.model(ids, output_hidden_states=enc.hidden_index is not None)
    if enc.hidden_index is None:
        hidden = out.last_hidden_state
    else:
        hidden = out.hidden_states[enc.hidden_index]
        if enc.final_norm:
            hidden = getattr(enc.model, "text_model", enc.model).final_layer_norm(hidden)
    pooled = None
    if enc.pooled:
        first_eos = rows[0].index(tok.eos_token_id)
        pooled = enc.model.text_projection(out.last_hidden_state[:1, first_eos]).float()
    z = apply_emphasis(hidden, weights, emphasis)
    return z.reshape(1, -1, z.shape[-1]), pooled


@dataclass
class _Side:
    """One text's encoding: hidden states, pooled output, chunks and A1111's token count."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None
    chunks: int
    tokens: int


def _encode_text(pipe: Any, encoders: list[_TextEncoder], text: str, emphasis: str,
                 device: Any) -> _Side:
    hiddens, pooled, counts = [], None, []
    for enc in encoders:
        chunked = _prompt_chunks(pipe, enc, text, emphasis)
        hidden, enc_pooled = _encode_chunks(enc, chunked, emphasis, device)
        hiddens.append(hidden)
        pooled = enc_pooled if enc_pooled is not None else pooled
        counts.append((len(chunked.chunks), chunked.token_count))
    if len({n for n, _ in counts}) > 1:  # A1111 cannot concatenate them either
        raise RequestError("prompt", "the two text encoders split this prompt into "
                                     f"different chunk counts ({counts[0][0]} and "
                                     f"{counts[1][0]}): an embedding has other vector counts "
                                     "for each")
    import torch

    return _Side(torch.cat(hiddens, dim=-1), pooled, counts[0][0], counts[0][1])


@dataclass
class Encoded:
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None
    prompt_tokens: int = 0
    negative_tokens: int = 0
    chunks: int = 1  # the longer of the two
    prompt_chunks: int = 1
    negative_chunks: int = 1
    # (1, 77 * chunks) True where a token is real; set only when the chunk counts differ
    prompt_mask: torch.Tensor | None = None
    negative_mask: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)  # for the image's notes

    def pipe_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "prompt_embeds": self.prompt_embeds,
            "negative_prompt_embeds": self.negative_prompt_embeds,
        }
        if self.pooled is not None:
            kwargs["pooled_prompt_embeds"] = self.pooled
            kwargs["negative_pooled_prompt_embeds"] = self.negative_pooled
        return kwargs

    @contextlib.contextmanager
    def masked_attention(self, unet: Any, images_per_prompt: int) -> Iterator[None]:
        """While the pipeline runs: give every UNet call the cross-attention mask that hides
        the padding of the shorter text (a forward pre-hook). The pipelines batch
        ``[negative] * n + [prompt] * n`` with guidance, ``[prompt] * n`` without."""
        if self.prompt_mask is None or self.negative_mask is None:
            yield
            return
        import torch

        n = images_per_prompt
        with_guidance = torch.cat([self.negative_mask.expand(n, -1),
                                   self.prompt_mask.expand(n, -1)])
        without = self.prompt_mask.expand(n, -1)

        def hook(_module: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
            states = kwargs.get("encoder_hidden_states")
            if states is None and len(args) > 2:
                states = args[2]
            rows = int(states.shape[0]) if states is not None else 0
            if rows not in (2 * n, n):
                raise RuntimeError(f"UNet batch of {rows} text rows; expected {n} or {2 * n}")
            assert states is not None
            mask = with_guidance if rows == 2 * n else without
            kwargs["encoder_attention_mask"] = mask.to(states.device)
            return args, kwargs

        handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()


def _padded(hidden: torch.Tensor, chunks: int, total: int) -> tuple[torch.Tensor,
                                                                      torch.Tensor]:
    """``hidden`` with zero chunks up to ``total``, and its mask of real tokens."""
    import torch

    length = (CHUNK + 2) * total
    mask = torch.zeros(1, length, dtype=torch.bool, device=hidden.device)
    mask[:, :(CHUNK + 2) * chunks] = True
    pad = hidden.new_zeros(1, length - hidden.shape[1], hidden.shape[2])
    return torch.cat([hidden, pad], dim=1), mask


def encode_prompts(pipe: Any, prompt: str, negative: str, *, clip_skip: int = 1,
                   emphasis: str = "Original", device: Any = None,
                   arch: str | None = None) -> Encoded:
    """Encode ``prompt`` and ``negative`` for an SD 1.x/2.x or SDXL pipeline as A1111 does
    (see the module's description); ``arch`` is the model's architecture name
    (``engine.arch.ARCHS``), read from the pipe when not given."""
    import torch

    from sdstudio.engine.pipelines import module_dtype

    device = device if device is not None else pipe._execution_device
    family = family_of(pipe, arch)
    encoders = _text_encoders(pipe, family, clip_skip)
    notes = []
    if clip_skip > 1 and family != "sd1":
        notes.append(f"clip skip {clip_skip} has no effect on {family.upper()} models, as in "
                     "A1111")
    with torch.no_grad():
        pos = _encode_text(pipe, encoders, prompt, emphasis, device)
        zero_negative = family == "sdxl" and not negative and bool(
            getattr(pipe.config, "force_zeros_for_empty_prompt", False))
        if zero_negative:  # A1111 (sgm): an empty SDXL negative is one chunk of zeros
            neg = _Side(pos.hidden.new_zeros(1, CHUNK + 2, pos.hidden.shape[2]),
                        torch.zeros_like(pos.pooled) if pos.pooled is not None else None,
                        1, 0)
        else:
            neg = _encode_text(pipe, encoders, negative, emphasis, device)
    chunks = max(pos.chunks, neg.chunks)
    pos_hidden, neg_hidden = pos.hidden, neg.hidden
    pos_mask = neg_mask = None
    if pos.chunks != neg.chunks:
        pos_hidden, pos_mask = _padded(pos.hidden, pos.chunks, chunks)
        neg_hidden, neg_mask = _padded(neg.hidden, neg.chunks, chunks)
        notes.append(f"prompt {pos.chunks} chunk(s), negative {neg.chunks}: each attended at "
                     "its own length (the shorter padded and masked out of cross-attention), "
                     "as A1111 without pad_cond_uncond")
    dtype = module_dtype(pipe.unet)  # not pipe.unet.dtype: see module_dtype

    def cast(value: torch.Tensor | None) -> torch.Tensor | None:
        return value.to(device=device, dtype=dtype) if value is not None else None

    return Encoded(
        prompt_embeds=pos_hidden.to(device=device, dtype=dtype),
        negative_prompt_embeds=neg_hidden.to(device=device, dtype=dtype),
        pooled=cast(pos.pooled), negative_pooled=cast(neg.pooled),
        prompt_tokens=pos.tokens, negative_tokens=neg.tokens, chunks=chunks,
        prompt_chunks=pos.chunks, negative_chunks=neg.chunks,
        prompt_mask=pos_mask.to(device) if pos_mask is not None else None,
        negative_mask=neg_mask.to(device) if neg_mask is not None else None,
        notes=notes,
    )
