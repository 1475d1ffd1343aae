"""Blocked bf16 attention on the CPU (engine/cpu_attention.py): the same result as torch's
kernel within bf16's error, only for the calls it is meant for, installed only for a
generation and always put back, and used by the engine exactly when it runs bf16 on the CPU."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sdstudio.core.request import GenerationRequest
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import Engine, accel, cpu_attention


def _qkv(batch: int = 2, heads: int = 3, queries: int = 300, keys: int = 300, dim: int = 16,
         value_dim: int | None = None, scale: float = 1.0, seed: int = 0
         ) -> tuple[torch.Tensor, ...]:
    """fp32 tensors laid out as diffusers makes them: (batch, tokens, heads, dim) transposed."""
    gen = torch.Generator().manual_seed(seed)

    def make(tokens: int, width: int) -> torch.Tensor:
        return (torch.randn(batch, tokens, heads, width, generator=gen) * scale).transpose(1, 2)
    return make(queries, dim), make(keys, dim), make(keys, value_dim or dim)


@pytest.mark.parametrize("shape", [
    dict(),  # several blocks of queries (small BLOCK_BYTES below), odd sizes
    dict(batch=1, heads=1, queries=257, keys=64, dim=64, value_dim=24),
    dict(batch=2, heads=8, queries=1024, keys=1024, dim=40, scale=1.5),
])
def test_same_as_torch_within_bf16s_error(shape: dict[str, Any],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_attention, "BLOCK_BYTES", 64 * 300 * 2)  # 64-query blocks
    q, k, v = _qkv(**shape)
    truth = F.scaled_dot_product_attention(q, k, v)  # fp32, unrounded inputs
    qb, kb, vb = (t.to(torch.bfloat16) for t in (q, k, v))
    kernel = F.scaled_dot_product_attention(qb, kb, vb).float()
    blocked = cpu_attention.blocked_attention(qb, kb, vb)
    assert blocked.shape == kernel.shape and blocked.dtype == torch.bfloat16
    assert blocked.transpose(1, 2).is_contiguous()  # what diffusers reshapes next, no copy
    err_kernel = (kernel - truth).abs().mean().item()
    err_blocked = (blocked.float() - truth).abs().mean().item()
    # the scores rounded to bf16: about twice the bf16 kernel's error, never far off
    assert err_blocked <= 3 * err_kernel + 1e-4, (err_blocked, err_kernel)
    assert (blocked.float() - kernel).abs().max().item() < 0.05 * max(1.0, truth.abs().max())


def test_an_explicit_scale_is_used() -> None:
    q, k, v = (t.to(torch.bfloat16) for t in _qkv(queries=128, keys=128))
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=0.05)
    got = cpu_attention.blocked_attention(q, k, v, scale=0.05).float()
    assert (got - want).abs().max().item() < 0.02
    default = cpu_attention.blocked_attention(q, k, v).float()
    assert (default - want).abs().max().item() > 0.05  # 1/sqrt(16) is not 0.05


def test_block_rows() -> None:
    mib4 = cpu_attention.BLOCK_BYTES
    assert cpu_attention.block_rows(4096, 4096) == mib4 // (4096 * 2) == 512
    assert cpu_attention.block_rows(1024, 1024) == 1024  # all of them fit
    assert cpu_attention.block_rows(100_000, 100_000) == cpu_attention.MIN_BLOCK


def test_which_calls_are_taken() -> None:
    big = tuple(t.to(torch.bfloat16) for t in _qkv(keys=cpu_attention.MIN_KEYS))
    assert cpu_attention.eligible(big, {})
    assert cpu_attention.eligible(big, {"scale": 0.1, "dropout_p": 0.0, "attn_mask": None})
    mask = torch.ones(300, cpu_attention.MIN_KEYS, dtype=torch.bool)
    refused: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        (tuple(t.float() for t in big), {}),  # fp32: torch's kernel
        (big, {"attn_mask": mask}),
        (big, {"is_causal": True}),
        (big, {"dropout_p": 0.1}),
        (big, {"enable_gqa": True}),
        (big, {"something_new": 1}),
        ((*big, mask), {}),  # the mask given positionally
        (tuple(t.to(torch.bfloat16) for t in _qkv(keys=cpu_attention.MIN_KEYS - 1)), {}),
        (tuple(t[0] for t in big), {}),  # three dimensions
        ((big[0], big[1][:, :2], big[2][:, :2]), {}),  # fewer key heads (grouped)
    ]
    for args, kwargs in refused:
        assert not cpu_attention.eligible(args, kwargs), kwargs
    needs_grad = tuple(t.detach().requires_grad_() for t in big)
    with torch.enable_grad():
        assert not cpu_attention.eligible(needs_grad, {})


def test_installed_only_within_and_always_put_back() -> None:
    original = F.scaled_dot_product_attention
    with cpu_attention.installed(False):
        assert F.scaled_dot_product_attention is original
    with cpu_attention.installed():
        assert F.scaled_dot_product_attention is not original
        with cpu_attention.installed():  # re-entrant
            pass
        assert F.scaled_dot_product_attention is not original
        # a call it does not take goes to torch's own function, unchanged
        q, k, v = _qkv(queries=16, keys=16)
        assert torch.equal(F.scaled_dot_product_attention(q, k, v), original(q, k, v))
    assert F.scaled_dot_product_attention is original
    with pytest.raises(RuntimeError), cpu_attention.installed():
        raise RuntimeError("a failed generation")
    assert F.scaled_dot_product_attention is original


def test_the_plan_per_device_and_precision() -> None:
    def plan(kind: str, dtype: str) -> accel.AccelPlan:
        return accel.decide_accel(kind, capability=None, arch="sd1", memory_mode="auto",
                                  compile_setting=False, compile_available=False, dtype=dtype)
    assert plan("cpu", "bf16").active == ("channels_last", "cpu_attention")
    assert any("blocks" in r for r in plan("cpu", "bf16").reasons)
    assert plan("cpu", "fp32").active == ("channels_last",)
    assert not plan("cuda", "bf16").cpu_attention and not plan("mps", "bf16").cpu_attention


def test_the_engine_uses_it_for_bf16_on_the_cpu(
        monkeypatch: pytest.MonkeyPatch, make_request: Callable[..., GenerationRequest]) -> None:
    """A bf16 engine on the CPU runs its attention through the blocked path (the tiny model's
    few tokens let through by a lower MIN_KEYS), gives the image torch's kernel gives within
    bf16's rounding, and leaves torch's function as it was; an fp32 engine does not use it."""
    original = F.scaled_dot_product_attention
    calls: list[tuple[int, ...]] = []
    real = cpu_attention.blocked_attention

    def counting(query: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(tuple(query.shape))
        return real(query, *args, **kwargs)

    monkeypatch.setattr(cpu_attention, "MIN_KEYS", 16)
    monkeypatch.setattr(cpu_attention, "blocked_attention", counting)
    request = make_request(prompt="a cat", steps=3, width=128, height=128)

    def pixels(engine: Engine) -> np.ndarray:
        try:
            return np.asarray(engine.generate(request)[0].image).astype(np.int16)
        finally:
            engine.unload()

    bf16 = Engine(EngineSettings(precision="bf16"))
    blocked = pixels(bf16)
    assert calls and F.scaled_dot_product_attention is original
    monkeypatch.setattr(cpu_attention, "eligible", lambda args, kwargs: False)
    kernel = pixels(Engine(EngineSettings(precision="bf16")))
    assert np.abs(blocked - kernel).mean() < 3.0  # bf16 rounding (1.3 here), not another image
    monkeypatch.undo()
    calls.clear()
    monkeypatch.setattr(cpu_attention, "blocked_attention", counting)
    monkeypatch.setattr(cpu_attention, "MIN_KEYS", 16)
    pixels(Engine(EngineSettings(precision="fp32")))
    assert not calls
