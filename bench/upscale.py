"""Tiled versus untiled 4x upscaling on a real-size ESRGAN with random weights: time and peak
memory, measured in the same run.

Builds an RRDBNet ESRGAN (``--blocks`` 23, ``--features`` 64, 4x: the size of
RealESRGAN_x4plus / 4x-UltraSharp, 16.7 M weights) with random weights as a .safetensors
file, loads it through SD Studio's loader (``sdstudio.engine.upscale.load_upscaler``), then
runs each measurement in a fresh process, so that each peak is its own:

* ``untiled``     the whole ``--untiled-size`` image through the model in one call (baseline);
* ``tiled-same``  the same image in ``--tile`` px tiles with feathered blending (SD Studio's
  ``upscale_tensor_tiled``, the overlap its policy gives): the like-for-like ratio;
* ``tiled``       a ``--size`` image in ``--tile`` px tiles (the brief's 1024 px by default).

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA, else the process's resident set
(RSS, psutil, sampled every 5 ms) above what it held before the run (tracemalloc does not see
torch's allocations). A real ESRGAN on a CPU is slow (about a minute per 128 px tile pair on
2 cores): on a CPU use a small ``--size`` (``--skip-large`` leaves the large run out);
``--smoke`` runs a tiny model at 64 px (the test suite runs that).

    python bench/upscale.py [--size 1024] [--untiled-size 256] [--tile 192] [--device cuda]
                            [--skip-large] [--smoke] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import _common  # noqa: E402, F401  (the repository on sys.path, offline)


class PeakRss:
    """The largest resident set size seen while it runs (a sampling thread)."""

    def __init__(self, every_s: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process()
        self._every = every_s
        self._stop = threading.Event()
        self.start_bytes = self._proc.memory_info().rss
        self.peak = self.start_bytes
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._every)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _child(model: str, size: int, tile: int, device: str) -> dict[str, Any]:
    import torch

    from sdstudio.engine import memory, upscale

    torch.manual_seed(0)
    loaded = upscale.load_upscaler(Path(model), device=device)
    image = torch.rand(1, 3, size, size)
    overlap = memory.upscale_tile_overlap(tile) if tile < size else 0

    def run(part: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return loaded.descriptor(part.to(loaded.device, loaded.dtype))  # type: ignore[no-any-return]

    run(torch.rand(1, 3, 16, 16))  # warm-up: first-call costs are not the upscale's
    cuda = loaded.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with PeakRss() as rss:
        start = time.perf_counter()
        out = upscale.upscale_tensor_tiled(run, image, loaded.scale, tile, overlap)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - base) if cuda else rss.peak - rss.start_bytes
    return {"size": size, "tile": tile, "overlap": overlap, "time_s": elapsed,
            "peak_bytes": int(peak), "memory": "cuda allocated" if cuda else "RSS",
            "tiles": upscale.tile_count(size, size, tile, overlap),
            "out": list(out.shape), "device": str(loaded.device), "dtype": str(loaded.dtype),
            "model_mib": loaded.model_bytes / 2**20}


def _measure(name: str, model: Path, size: int, tile: int, device: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(model), "--size", str(size), "--tile",
           str(tile), "--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    row["name"] = name
    print(f"{name:11s} {size:5d} px  tile {tile:4d} ({row['tiles']:3d} tiles)  "
          f"{row['time_s']:8.2f} s  peak {row['peak_bytes'] / 2**20:8.0f} MiB "
          f"({row['memory']})", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024, help="side of the tiled run's image")
    ap.add_argument("--untiled-size", type=int, default=256,
                    help="side of the untiled baseline's (and tiled-same's) image")
    ap.add_argument("--tile", type=int, default=192, help="tile side in input pixels")
    ap.add_argument("--blocks", type=int, default=23)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-large", action="store_true", help="no --size run")
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny ESRGAN at 64 px (tile 32): checks the script, not speed")
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--json", default=None, metavar="FILE")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.size, args.tile, args.device)))
        return 0
    if args.smoke:
        args.size, args.untiled_size, args.tile = 64, 48, 32
        args.blocks, args.features = 1, 8
    from sdstudio.engine.tiny_upscalers import build_upscaler

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="sdstudio-bench-upscale-"))
    model = build_upscaler(work / f"esrgan-{args.blocks}b{args.features}f.safetensors",
                           "esrgan", scale=4, num_blocks=args.blocks,
                           num_filters=args.features)
    print(f"ESRGAN {args.blocks} blocks x {args.features} features, 4x, random weights; "
          f"device {args.device}")
    rows = [_measure("untiled", model, args.untiled_size, args.untiled_size, args.device),
            _measure("tiled-same", model, args.untiled_size, args.tile, args.device)]
    if not args.skip_large:
        rows.append(_measure("tiled", model, args.size, args.tile, args.device))
    base, same = rows[0], rows[1]
    ratios = {"tiled_same_vs_untiled_time": same["time_s"] / base["time_s"],
              "tiled_same_vs_untiled_peak": same["peak_bytes"] / max(base["peak_bytes"], 1)}
    print(f"tiled vs untiled at {args.untiled_size} px: time "
          f"x{ratios['tiled_same_vs_untiled_time']:.2f}, peak memory "
          f"x{ratios['tiled_same_vs_untiled_peak']:.2f}")
    if len(rows) == 3:
        big = rows[2]
        per_px = (big["time_s"] / big["size"] ** 2) / (base["time_s"] / base["size"] ** 2)
        ratios["tiled_large_vs_untiled_time_per_pixel"] = per_px
        ratios["tiled_large_vs_untiled_peak"] = big["peak_bytes"] / max(base["peak_bytes"], 1)
        print(f"tiled {args.size} px vs untiled {args.untiled_size} px: time per pixel "
              f"x{per_px:.2f}, peak memory x{ratios['tiled_large_vs_untiled_peak']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": rows, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
