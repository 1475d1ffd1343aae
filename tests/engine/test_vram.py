"""engine.device.vram_usage: None off CUDA; on CUDA one counter read per max_age_s (the
per-step path), checked here with a stand-in for torch.cuda's counters."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sdstudio.engine import device as devices


def test_no_vram_reading_off_cuda() -> None:
    assert devices.vram_usage(None) is None
    assert devices.vram_usage(torch.device("cpu")) is None


def test_readings_are_reused_within_max_age(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []

    def stats(index: int) -> dict[str, Any]:
        reads.append(index)
        n = len(reads)
        return {"allocated_bytes": {"all": {"current": n * 100, "peak": n * 200}},
                "reserved_bytes": {"all": {"current": n * 300}}}

    monkeypatch.setattr(torch.cuda, "memory_stats_as_nested_dict", stats)
    monkeypatch.setattr(devices, "_cuda_total", lambda index: 8 * 2**30)
    monkeypatch.setattr(devices, "_vram_cache", {})
    cuda = torch.device("cuda", 0)

    first = devices.vram_usage(cuda)
    again = devices.vram_usage(cuda)  # within max_age: no new read
    fresh = devices.vram_usage(cuda, max_age_s=0)
    assert first is not None and fresh is not None
    assert again == first and len(reads) == 2
    assert (first.allocated, first.reserved, first.peak, first.total) == (100, 300, 200, 8 * 2**30)
    assert fresh.allocated == 200
