"""The memory policy as a table: a pure function, no GPU needed."""

from __future__ import annotations

import pytest

from sdstudio.core.settings import EngineSettings
from sdstudio.engine.memory import decide_memory

GIB = 1 << 30
SD15 = int(2.0 * GIB)  # fp16 SD 1.5 weights
SDXL = int(6.9 * GIB)

# (device, free, total, model, w, h, batch, settings kwargs) -> savers
CASES = [
    # big card, SD 1.5 at 512: nothing
    (("cuda", 22 * GIB, 24 * GIB, SD15, 512, 512, 1, {}), ()),
    # 4 GB card, SDXL: does not fit -> offload
    (("cuda", 3.5 * GIB, 4 * GIB, SDXL, 1024, 1024, 1, {}), ("cpu_offload",)),
    # 8 GB card, SD 1.5 at 2048x2048: VAE decode too big -> tiling
    (("cuda", 7.5 * GIB, 8 * GIB, SD15, 2048, 2048, 1, {}), ("vae_tiling",)),
    # 8 GB card, SD 1.5 at 512 with 8 images: fits
    (("cuda", 7.5 * GIB, 8 * GIB, SD15, 512, 512, 8, {}), ()),
    # 8 GB card with 6 GB free, SD 1.5 at 768 x 8: VAE slicing and attention slicing
    (("cuda", 6 * GIB, 8 * GIB, SD15, 768, 768, 8, {}), ("vae_slicing", "attention_slicing")),
    # 4 GB card with SD 1.5 at 1280x1280: tiling and attention slicing, no offload
    (("cuda", 3.8 * GIB, 4 * GIB, SD15, 1280, 1280, 1, {}), ("vae_tiling", "attention_slicing")),
    # Mac with 16 GB: attention slicing as diffusers recommends under 64 GB
    (("mps", 10 * GIB, 16 * GIB, SD15, 512, 512, 1, {}), ("attention_slicing",)),
    # CPU: nothing for normal sizes
    (("cpu", 8 * GIB, 16 * GIB, SD15, 512, 512, 4, {}), ()),
    # low mode: every saver (offload on CUDA only)
    (("cuda", 22 * GIB, 24 * GIB, SD15, 512, 512, 1, {"memory_mode": "low"}),
     ("attention_slicing", "vae_slicing", "vae_tiling", "cpu_offload")),
    (("cpu", 8 * GIB, 16 * GIB, SD15, 512, 512, 1, {"memory_mode": "low"}),
     ("attention_slicing", "vae_slicing", "vae_tiling")),
    # off: nothing even when it would not fit
    (("cuda", 3.5 * GIB, 4 * GIB, SDXL, 1024, 1024, 1, {"memory_mode": "off"}), ()),
    # per-saver overrides win over the mode
    (("cuda", 22 * GIB, 24 * GIB, SD15, 512, 512, 1, {"vae_tiling": "on"}), ("vae_tiling",)),
    (("cuda", 3.5 * GIB, 4 * GIB, SDXL, 1024, 1024, 1, {"cpu_offload": "off"}),
     ("attention_slicing", "vae_tiling")),
    (("cuda", 22 * GIB, 24 * GIB, SD15, 512, 512, 1,
      {"memory_mode": "low", "attention_slicing": "off"}),
     ("vae_slicing", "vae_tiling", "cpu_offload")),
    (("cpu", 8 * GIB, 16 * GIB, SD15, 512, 512, 1, {"cpu_offload": "on"}), ()),
]


@pytest.mark.parametrize(("args", "savers"), CASES)
def test_memory_table(args: tuple, savers: tuple[str, ...]) -> None:
    device, free, total, model, w, h, batch, kw = args
    plan = decide_memory(device, int(free), int(total), model, w, h, batch,
                         EngineSettings(**kw))
    assert set(plan.savers) == set(savers), plan.reason
    assert plan.reason
    assert set(plan.to_dict()) == {"attention_slicing", "vae_slicing", "vae_tiling",
                                   "cpu_offload", "sequential_offload", "reason"}


def test_fp32_needs_more_room() -> None:
    half = decide_memory("cuda", 6 * GIB, 8 * GIB, SD15, 1024, 1024, 1, EngineSettings())
    full = decide_memory("cuda", 6 * GIB, 8 * GIB, SD15, 1024, 1024, 1, EngineSettings(),
                         bytes_per_value=4)
    assert not half.vae_tiling and full.vae_tiling
