"""Start-up time: from process start to the main window being shown, and whether torch was
imported by then (it must not be: the engine loads in the worker thread afterwards).

    python bench/startup.py [--runs 7] [--append docs/benchmarks.md]

Each run is a fresh ``python -c "from sdstudio import app; app.run()"`` process (offscreen Qt,
an empty SDSTUDIO_HOME) that prints a timestamp once the first frame is out and quits. The
baseline measured in the same run is a bare PySide6 process showing an empty QMainWindow.
Goal: under 1 s, torch not imported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = "import sys; from sdstudio import app; sys.exit(app.run())"
BARE = ("import time, sys; from PySide6.QtWidgets import QApplication, QMainWindow; "
        "from PySide6.QtCore import QTimer; a = QApplication([]); w = QMainWindow(); w.show(); "
        "QTimer.singleShot(0, lambda: (print(f'SDSTUDIO_SHOWN {time.time():.6f} torch=False', "
        "flush=True), a.quit())); a.exec()")


def one(code: str) -> tuple[float, bool]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", SDSTUDIO_STARTUP_PROBE="1",
               SDSTUDIO_HOME=tempfile.mkdtemp(prefix="sdstudio-startup-"),
               PYTHONPATH=str(ROOT))
    start = time.time()
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("SDSTUDIO_SHOWN")), "")
    if not line:
        raise SystemExit(f"no window: {out.stderr[-2000:]}")
    _, stamp, torch = line.split()
    return float(stamp) - start, torch == "torch=True"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--append", type=Path)
    args = parser.parse_args(argv)
    one(APP)  # warm the file cache
    bare = [one(BARE)[0] for _ in range(args.runs)]
    runs = [one(APP) for _ in range(args.runs)]
    times = [t for t, _ in runs]
    torch_seen = any(t for _, t in runs)
    med, base = statistics.median(times), statistics.median(bare)
    text = (f"| measurement | median (s) | min (s) | max (s) |\n|---|---:|---:|---:|\n"
            f"| bare PySide6 empty window (baseline) | {base:.3f} | {min(bare):.3f} | "
            f"{max(bare):.3f} |\n"
            f"| SD Studio main window shown | {med:.3f} | {min(times):.3f} | {max(times):.3f} |"
            f"\n\nratio to baseline: {med / base:.2f}; torch imported when shown: "
            f"{'YES' if torch_seen else 'no'}; goal < 1 s: {'ok' if med < 1 else 'MISSED'}")
    print(text)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as fh:
            fh.write(f"\n### Start-up (bench/startup.py)\n\n{time.strftime('%Y-%m-%d')}, "
                     f"{os.cpu_count()} CPUs, offscreen Qt, {args.runs} runs each.\n\n"
                     f"{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
