"""The window's cost per image: the real maximised MainWindow with a live preview every step
against the CLI, same request, in fresh processes taken in turn.

Both arms are bench/busy.py's (so the figures agree with its idle row): ``python -m sdstudio
generate --batch-count N`` and the real ``MainWindow`` (real worker, real engine), maximised,
``preview_every=1``, Runs: N; the demo model at 512x512, 20 steps, Euler a, CFG 7. Per image =
between the first and the last saved image divided by the images between them (start-up and
the model load do not count). The window runs under an X server: its own Xvfb 1920x1080 with
openbox when ``--xvfb`` is given (both stopped at the end), else the one in ``DISPLAY``, else
offscreen at 1920x1080.

Besides the times it prints what the window spent: the GUI thread's CPU time per image (its
Python and Qt work: previews, progress, painting) and, with ``--xvfb``, the X server's CPU time
per image (pushing the painted pixels). ``--profile`` writes a cProfile of the GUI thread
during the job (top 30 by own time) after the table.

    python bench/window.py                 # 3 pairs of runs, 3 images each (~3 minutes idle)
    python bench/window.py --xvfb          # under its own Xvfb 1920x1080 + openbox
    python bench/window.py --smoke         # 64x64, 2 steps, one pair: checks the script runs

Goal (issue 15): window <= 1.05x the CLI per image.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import busy  # bench/busy.py: the arms, the quiet check, per-image times

PY = sys.executable


def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / busy.HZ
    except (OSError, ValueError, IndexError):
        return float("nan")


class XServer:
    """Xvfb 1920x1080 with openbox on a free display number; stop() ends both."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.display = ""
        self.xvfb_pid = 0

    def start(self) -> str:
        if not (shutil.which("Xvfb") and shutil.which("openbox")):
            raise SystemExit("--xvfb needs Xvfb and openbox (Debian: xvfb openbox)")
        for number in range(90, 140):
            if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(
                    f"/tmp/.X{number}-lock").exists():
                break
        else:
            raise SystemExit("no free X display number")
        self.display = f":{number}"
        xvfb = subprocess.Popen(["Xvfb", self.display, "-screen", "0", "1920x1080x24",
                                 "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.procs.append(xvfb)
        self.xvfb_pid = xvfb.pid
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            if time.monotonic() > deadline or xvfb.poll() is not None:
                self.stop()
                raise SystemExit("Xvfb did not start")
            time.sleep(0.05)
        self.procs.append(subprocess.Popen(["openbox"], env=dict(os.environ,
                                                                 DISPLAY=self.display),
                                           stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        return self.display

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def window_costs(child: dict[str, Any], x_samples: list[tuple[float, float]]
                 ) -> tuple[float, float]:
    """(GUI thread CPU s, X server CPU s) per image between the first and the last image."""
    marks = child.get("marks") or []
    if len(marks) < 2:
        return float("nan"), float("nan")
    (t0, c0), (t1, c1) = marks[0], marks[-1]
    n = len(marks) - 1
    gui = (c1 - c0) / n
    x = float("nan")
    if x_samples:
        def at(t: float) -> float:  # the X server's CPU time at wall time t (nearest sample)
            return min(x_samples, key=lambda s: abs(s[0] - t))[1]

        x = (at(t1) - at(t0)) / n
    return gui, x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=3,
                        help="runs of each arm, taken in turn (the median is reported)")
    parser.add_argument("--xvfb", action="store_true",
                        help="start Xvfb 1920x1080 + openbox for the window (stopped after)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the GUI thread during the last window run")
    parser.add_argument("--preview-every", type=int, default=1,
                        help="the window's live preview every N steps (0: none, to see the "
                        "window's cost without previews)")
    parser.add_argument("--tries", type=int, default=2)
    parser.add_argument("--quiet-limit", type=float, default=0.3,
                        help="CPUs of foreign load above which an arm is run again")
    parser.add_argument("--smoke", action="store_true", help="64x64, 2 steps, one pair")
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.steps, args.pairs, args.tries = 64, 2, 1, 1
        args.images = min(args.images, 2)
        args.quiet_limit = 100.0
    args.untuned = False
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # the X server still stops
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="sdstudio-window-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "demo"  # built in a child: this process never imports torch
    subprocess.run([PY, "-c", "import sys; from sdstudio.engine.tiny import build_tiny_model;"
                    " build_tiny_model(sys.argv[1], 'sd1')", str(model)], check=True,
                   cwd=str(busy.ROOT), env=dict(os.environ, PYTHONPATH=str(busy.ROOT)))
    args.model = model
    server = XServer()
    saved_env = {k: os.environ.get(k) for k in ("DISPLAY", "QT_QPA_PLATFORM",
                                                "SDSTUDIO_BENCH_PROFILE",
                                                "SDSTUDIO_BENCH_PREVIEW_EVERY")}
    os.environ["SDSTUDIO_BENCH_PREVIEW_EVERY"] = str(max(0, args.preview_every))
    try:
        if args.xvfb:
            os.environ["DISPLAY"] = server.start()
            os.environ.pop("QT_QPA_PLATFORM", None)
        where = (f"Xvfb 1920x1080 + openbox ({os.environ['DISPLAY']})" if args.xvfb else
                 f"X server {os.environ['DISPLAY']}" if os.environ.get("DISPLAY") else
                 "offscreen 1920x1080")
        times: dict[str, list[float]] = {"cli": [], "window": []}
        gui_cpu: list[float] = []
        x_cpu: list[float] = []
        child: dict[str, Any] = {}
        profile = work / "gui-profile.txt"
        for pair in range(args.pairs):
            for arm in (("cli", "window") if pair % 2 == 0 else ("window", "cli")):
                samples: list[tuple[float, float]] = []

                def sample(samples: list[tuple[float, float]] = samples) -> None:
                    if server.xvfb_pid:
                        samples.append((time.time(), _proc_cpu(server.xvfb_pid)))

                if arm == "window" and args.profile and pair == args.pairs - 1:
                    os.environ["SDSTUDIO_BENCH_PROFILE"] = str(profile)
                result = busy.run_arm(arm, 0, args, work, on_poll=sample)
                os.environ.pop("SDSTUDIO_BENCH_PROFILE", None)
                times[arm].append(result["s"])
                line = f"  {arm:7s} {result['s']:7.3f} s/image (foreign load " \
                       f"{result['foreign']:.2f} CPUs)"
                if arm == "window":
                    child = result["child"]
                    gui, x = window_costs(child, samples)
                    gui_cpu.append(gui)
                    x_cpu.append(x)
                    line += f"; GUI thread {gui * 1000:.0f} ms CPU/image"
                    if x == x:
                        line += f", X server {x * 1000:.0f} ms CPU/image"
                print(line, flush=True)
    finally:
        server.stop()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    cli, win = statistics.median(times["cli"]), statistics.median(times["window"])
    steps = max(1, args.steps)
    print(f"\n{os.cpu_count()} CPUs; demo model {args.size}x{args.size}, {args.steps} steps, "
          f"Euler a, {args.images} images per run, median of {args.pairs} run(s) per arm; "
          f"window {where}, maximised {child.get('size')}, view {child.get('view')}, "
          + ("preview every step" if args.preview_every == 1 else
             f"preview every {args.preview_every} steps" if args.preview_every > 1 else
             "no previews"))
    print(f"{'arm':8s}{'s/image':>10s}{'ratio':>8s}")
    print(f"{'cli':8s}{cli:10.3f}{1:8.2f}")
    print(f"{'window':8s}{win:10.3f}{win / cli:8.2f}")
    gui = statistics.median(gui_cpu) if gui_cpu else float("nan")
    print(f"GUI thread CPU per image: {gui * 1000:.0f} ms ({gui / steps * 1000:.1f} ms/step)")
    finite_x = [x for x in x_cpu if x == x]
    if finite_x:
        x = statistics.median(finite_x)
        print(f"X server CPU per image: {x * 1000:.0f} ms ({x / steps * 1000:.1f} ms/step)")
    counts = child.get("previews") or {}
    if counts:
        print("previews (last window run): " + ", ".join(f"{k} {v}" for k, v in
                                                         sorted(counts.items())))
    print(f"goal window <= 1.05x the CLI: {win / cli:.2f}x "
          f"({'met' if win / cli <= 1.05 else 'MISSED'})")
    if args.profile and profile.is_file():
        print("\nGUI thread profile (last window run):\n" + profile.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
