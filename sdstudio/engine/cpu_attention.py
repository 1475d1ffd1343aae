"""Attention for bf16 on the CPU: the score matrix in cache-sized blocks of queries.

torch's CPU flash-attention kernel keeps its scores in fp32 and computes their ``exp`` in fp32
too, so in bf16 it runs no faster than in fp32: at SD 1.5's 64x64 level (4096 tokens, 8 heads
of 40) one self-attention takes ~290 ms in either precision on the development CPU, about 45 %
of a bf16 UNet step. Computing each block of queries with bf16 matrix multiplies and a bf16
softmax (the block's scores, ``block x keys``, fit in the cache) takes ~130 ms for the same
call; the VAE's 4096-token attention goes from ~180 to ~50 ms (bench/precision.py --unet,
docs/benchmarks.md).

The price is precision: the scores are rounded to bf16 before the softmax. Against an fp32
reference the result's error is about twice that of the bf16 flash kernel (whose error comes
from bf16 inputs); both are within what the rest of a bf16 UNet already rounds
(tests/engine/test_cpu_attention.py measures it). It is used only where the engine runs bf16
on the CPU (``AccelPlan.cpu_attention``), only for attention without a mask, dropout or
causality and with at least :data:`MIN_KEYS` keys; everything else goes to torch's own kernel.

:func:`blocked_attention` is installed for the span of a generation by :func:`installed`, which
puts a dispatcher in place of ``torch.nn.functional.scaled_dot_product_attention`` (the function
diffusers' attention processors call, whichever processor is set: plain, IP-Adapter, ControlNet)
and puts the original back afterwards, also when the generation fails.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

MIN_KEYS = 1024  # below this (cross-attention: 77 keys; 16x16 levels) torch's kernel is as fast
BLOCK_BYTES = 4 << 20  # scores per block of queries: a few MiB, so they stay in the cache
MIN_BLOCK = 64

_lock = threading.Lock()
_depth = 0
_original: Any = None


def block_rows(queries: int, keys: int, itemsize: int = 2) -> int:
    """How many queries one block holds: ``BLOCK_BYTES`` of scores, at least ``MIN_BLOCK``,
    at most all of them. Pure."""
    return max(MIN_BLOCK, min(queries, BLOCK_BYTES // max(1, keys * itemsize)))


def blocked_attention(query: Any, key: Any, value: Any, scale: float | None = None) -> Any:
    """softmax(Q K^T * scale) V for (batch, heads, tokens, dim) tensors, a block of queries
    of one head at a time. The result has the shape of torch's ``scaled_dot_product_attention``
    and is laid out (batch, tokens, heads, dim) in memory, the layout diffusers' processors
    turn it into next (their transpose and reshape then copy nothing)."""
    import torch

    batch, heads, queries, dim = query.shape
    keys, value_dim = key.shape[-2], value.shape[-1]
    scale = dim ** -0.5 if scale is None else scale
    scaled = query * scale
    out = torch.empty(batch, queries, heads, value_dim, dtype=query.dtype,
                      device=query.device).transpose(1, 2)
    rows = block_rows(queries, keys, query.element_size())
    for b in range(batch):
        for h in range(heads):
            q, k_t, v, o = scaled[b, h], key[b, h].t(), value[b, h], out[b, h]
            for start in range(0, queries, rows):
                stop = start + rows
                o[start:stop] = torch.mm(torch.mm(q[start:stop], k_t).softmax(-1), v)
    return out


def eligible(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a ``scaled_dot_product_attention`` call is one :func:`blocked_attention`
    computes: bf16 CPU tensors of four dimensions with matching batch and heads, no mask, no
    dropout, not causal, no grouped-query heads, no gradient, at least :data:`MIN_KEYS` keys."""
    import torch

    if len(args) != 3 or set(kwargs) - {"attn_mask", "dropout_p", "is_causal", "scale",
                                        "enable_gqa"}:
        return False
    if kwargs.get("attn_mask") is not None or kwargs.get("dropout_p", 0.0) or \
            kwargs.get("is_causal", False) or kwargs.get("enable_gqa", False):
        return False
    query, key, value = args
    tensors = (query, key, value)
    if not all(isinstance(t, torch.Tensor) and t.dim() == 4 and t.device.type == "cpu"
               and t.dtype == torch.bfloat16 for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    if query.shape[:2] != key.shape[:2] or key.shape[:3] != value.shape[:3]:
        return False
    return bool(query.shape[-1] == key.shape[-1] and key.shape[-2] >= MIN_KEYS)


def _dispatch(*args: Any, **kwargs: Any) -> Any:
    if eligible(args, kwargs):
        query, key, value = args
        return blocked_attention(query, key, value, scale=kwargs.get("scale"))
    return _original(*args, **kwargs)


@contextlib.contextmanager
def installed(enabled: bool = True) -> Iterator[None]:
    """Within this block, eligible attention calls run :func:`blocked_attention` (nothing
    changes when ``enabled`` is false). Re-entrant; the original function is back when the
    outermost block ends."""
    global _depth, _original
    if not enabled:
        yield
        return
    import torch.nn.functional as functional

    with _lock:
        if _depth == 0:
            _original = functional.scaled_dot_product_attention
            functional.scaled_dot_product_attention = _dispatch
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                functional.scaled_dot_product_attention = _original
                _original = None
