"""Start-up time: from process start to the main window being shown, and whether torch was
imported by then (it must not be: the engine loads in the worker thread afterwards).

    python bench/startup.py [--runs 7] [--append docs/benchmarks.md]
    python bench/startup.py --check          # the guard: exit 1 when a goal is missed

Each run is a fresh ``python -c "from sdstudio import app; app.run()"`` process (offscreen Qt,
an empty SDSTUDIO_HOME) that prints a timestamp once the first frame is out, then adds the
panels a start adds next (the batch panel, the API switch) and prints again ("ready"), and
quits. The baseline measured in the same run is a bare PySide6 process showing an empty
QMainWindow. Goal: shown under 1 s (``--goal``), and none of torch, diffusers, transformers,
accelerate or safetensors imported when shown or when ready. ``--check`` exits 1 when the
median shown time exceeds the goal or any run imported one of them.
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


def one(code: str) -> tuple[float, float, str, float]:
    """(shown s, ready s, heavy modules seen ("" for none), the process's CPU seconds when
    shown (nan for the baseline)) of one fresh process."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", SDSTUDIO_STARTUP_PROBE="1",
               SDSTUDIO_HOME=tempfile.mkdtemp(prefix="sdstudio-startup-"),
               PYTHONPATH=str(ROOT))
    start = time.time()
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    lines = {ln.split()[0]: ln.split()[1:] for ln in out.stdout.splitlines()
             if ln.startswith(("SDSTUDIO_SHOWN", "SDSTUDIO_READY"))}
    if "SDSTUDIO_SHOWN" not in lines:
        raise SystemExit(f"no window: {out.stderr[-2000:]}")
    shown = lines["SDSTUDIO_SHOWN"]
    ready = lines.get("SDSTUDIO_READY", shown)
    heavy: set[str] = set()
    cpu = float("nan")
    for fields in (shown, ready):
        for field in fields[1:]:
            if field == "torch=True":
                heavy.add("torch")
            elif field.startswith("heavy=") and field != "heavy=-":
                heavy.update(field.removeprefix("heavy=").split(","))
            elif field.startswith("cpu=") and fields is shown:
                cpu = float(field.removeprefix("cpu="))
    return float(shown[0]) - start, float(ready[0]) - start, ",".join(sorted(heavy)), cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--goal", type=float, default=1.0, help="seconds to the window")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the goal is missed or torch & co. were imported")
    parser.add_argument("--append", type=Path)
    args = parser.parse_args(argv)
    one(APP)  # warm the file cache
    bare = [one(BARE)[0] for _ in range(args.runs)]
    runs = [one(APP) for _ in range(args.runs)]
    times = [t for t, _, _, _ in runs]
    ready = [r for _, r, _, _ in runs]
    cpu = [c for _, _, _, c in runs]
    heavy = sorted({m for _, _, h, _ in runs for m in h.split(",") if m})
    med, base = statistics.median(times), statistics.median(bare)
    ok_time = med < args.goal
    text = (f"| measurement | median (s) | min (s) | max (s) |\n|---|---:|---:|---:|\n"
            f"| bare PySide6 empty window (baseline) | {base:.3f} | {min(bare):.3f} | "
            f"{max(bare):.3f} |\n"
            f"| SD Studio main window shown | {med:.3f} | {min(times):.3f} | {max(times):.3f} |"
            f"\n| ... and its start-up panels added (ready) | {statistics.median(ready):.3f} | "
            f"{min(ready):.3f} | {max(ready):.3f} |"
            f"\n| its CPU time when shown (less sensitive to other load) | "
            f"{statistics.median(cpu):.3f} | {min(cpu):.3f} | {max(cpu):.3f} |"
            f"\n\nratio to baseline: {med / base:.2f}; torch & co. imported when shown or "
            f"ready: {', '.join(heavy) if heavy else 'no'}; goal < {args.goal:g} s: "
            f"{'ok' if ok_time else 'MISSED'}")
    print(text)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as fh:
            fh.write(f"\n### Start-up (bench/startup.py)\n\n{time.strftime('%Y-%m-%d')}, "
                     f"{os.cpu_count()} CPUs, offscreen Qt, {args.runs} runs each.\n\n"
                     f"{text}\n")
    if args.check and (heavy or not ok_time):
        print(f"startup check FAILED: {'imported ' + ', '.join(heavy) if heavy else ''}"
              f"{'; ' if heavy and not ok_time else ''}"
              f"{'' if ok_time else f'shown after {med:.3f} s (goal {args.goal:g} s)'}")
        return 1
    if args.check:
        print("startup check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
