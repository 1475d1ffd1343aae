"""SD Studio on a busy computer: idle vs one and two other CPU-bound processes, the CLI and the
maximised window, with bare diffusers as the baseline measured in the same run.

Every arm runs in a fresh process, the way people run it: bare diffusers (a plain
``StableDiffusionPipeline`` script: no SD Studio, untuned threads), ``python -m sdstudio
generate --batch-count 3`` (the real CLI) and the real ``MainWindow`` (maximised, a live
preview every step, Runs: 3). All make the same images (the demo model, 512x512, 20 steps,
Euler a, CFG 7) and save each one as it is made; the time per image is the time between the
first and the last saved image divided by the images between them, so start-up and the model
load do not count (issue 18's measure: between the 1st and 3rd image of a 3-image run).

"Busy" is one or two ``python3 -c "while True: pass"`` processes started before the arm and
stopped after it. The CPU time that *other* processes (not the arm, not those competitors)
took while an arm ran is measured from /proc/stat; an arm disturbed by more than
``--quiet-limit`` CPUs of such foreign load is run again (up to --tries), and the load it saw
is printed beside every figure.

    python bench/busy.py                          # everything (~6-10 minutes on 2 cores)
    python bench/busy.py --situations idle,busy1 --arms cli,window
    python bench/busy.py --untuned                # SD Studio without its thread tuning
    python bench/busy.py --smoke                  # 64x64, 2 steps: checks the script runs

Goals (issue 18, on a 2-core machine): idle CLI <= 1.05x bare; one busy process: CLI <= 1.6x
its idle time, maximised window <= 1.7x the idle CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PROMPT = "a lighthouse on a cliff at dusk, oil painting"


# ------------------------------------------------------------------------------ CPU time
def _busy_seconds() -> float:
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / HZ  # all but idle and iowait


def _tree_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of these processes and their children that were waited for, plus their
    live children (the CLI's Python is a child of the launcher in some set-ups)."""
    total = 0.0
    seen: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15]) / HZ  # utime stime cutime cstime
            with open(f"/proc/{pid}/task/{pid}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


class ForeignLoad:
    """CPUs that processes other than ``ours`` kept busy between start() and stop()."""

    def __init__(self) -> None:
        self.t0 = self.b0 = self.o0 = 0.0
        self.pids: list[int] = []
        self.last_own = 0.0

    def start(self, pids: list[int]) -> None:
        self.pids = pids
        self.t0, self.b0 = time.monotonic(), _busy_seconds()
        self.o0 = _tree_cpu_seconds(pids) + time.process_time()

    def sample_own(self) -> None:  # before a child exits (its CPU time goes with it)
        self.last_own = _tree_cpu_seconds(self.pids) + time.process_time()

    def stop(self) -> float:
        wall = time.monotonic() - self.t0
        own = max(self.last_own, _tree_cpu_seconds(self.pids) + time.process_time())
        return max(0.0, ((_busy_seconds() - self.b0) - (own - self.o0)) / max(wall, 1e-6))


def wait_for_quiet(limit: float, seconds: float = 1.0, patience: float = 120.0) -> float:
    """Wait (up to ``patience`` s) for a second in which other processes use < limit CPUs."""
    deadline = time.monotonic() + patience
    while True:
        meter = ForeignLoad()
        meter.start([])
        time.sleep(seconds)
        load = meter.stop()
        if load < limit or time.monotonic() > deadline:
            return load


# ------------------------------------------------------------------------------- children
def child_bare(args: argparse.Namespace) -> None:
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(
        pipe.scheduler.config, timestep_spacing="linspace")
    pipe.set_progress_bar_config(disable=True)
    out = Path(args.out)
    for i in range(args.images):
        gen = torch.Generator("cpu").manual_seed(1 + i)
        image = pipe(PROMPT, width=args.size, height=args.size, num_inference_steps=args.steps,
                     guidance_scale=7.0, generator=gen).images[0]
        image.save(out / f"{i:05d}.png")


def child_window(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from sdstudio.core.request import GenerationRequest
    from sdstudio.core.settings import EngineSettings, Settings
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.theme import apply_theme
    from sdstudio.worker import JobQueue

    app = QApplication([])
    apply_theme(app)  # type: ignore[arg-type]
    settings = Settings(output_dir=args.out, ui={"welcome": "dismissed"},
                        engine=EngineSettings(default_model=args.model, preview_every=int(
                            os.environ.get("SDSTUDIO_BENCH_PREVIEW_EVERY", "1"))))
    queue = JobQueue(settings=settings.engine)
    window = MainWindow(settings, queue)
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        window.setGeometry(0, 0, 1920, 1080)
        window.show()
    else:
        window.showMaximized()
    window.start()
    request = GenerationRequest(prompt=PROMPT, width=args.size, height=args.size,
                                steps=args.steps, seed=1, sampler="Euler a", cfg_scale=7.0,
                                batch_count=args.images, model=args.model)
    job: dict[str, Any] = {}
    # the GUI thread's own CPU time at each image (bench/window.py reads it from the log)
    marks: list[tuple[float, float]] = []
    queue.imageReady.connect(lambda *a: marks.append((time.time(), time.thread_time())))
    profile_to = os.environ.get("SDSTUDIO_BENCH_PROFILE", "")
    profiler = None
    if profile_to:  # cProfile of the GUI thread while the job runs
        import cProfile

        profiler = cProfile.Profile()

    threads_seen: list[tuple[float, int, float]] = []  # the thread governor while it runs

    def poll() -> None:
        module = sys.modules.get("sdstudio.engine.threads")
        if module is not None:
            g = module._GOVERNOR
            if g is not None:
                threads_seen.append((round(time.time(), 2), g.threads, round(g.other_load, 2)))
        if "id" not in job:
            if queue.loaded is not None:
                job["id"] = queue.submit_request(request)
                if profiler is not None:
                    profiler.enable()
            elif queue.engine_ok is False:
                app.exit(3)
            return
        state = queue.job(job["id"])
        if state is not None and state.state.finished:
            if profiler is not None:
                profiler.disable()
                import pstats

                with open(profile_to, "w") as fh:
                    pstats.Stats(profiler, stream=fh).sort_stats("tottime").print_stats(30)
            view = window.txt_viewer
            print(json.dumps({"size": [window.width(), window.height()],
                              "view": [view.width(), view.height()],
                              "state": state.state.value, "marks": marks,
                              "previews": getattr(window, "preview_counts", {}),
                              "threads": threads_seen}), flush=True)
            window.close()
            app.exit(0 if state.state.value == "done" else 4)

    timer = QTimer()
    timer.timeout.connect(poll)
    timer.start(250)  # 4 Python calls a second on the GUI thread: nothing beside the previews
    code = app.exec()
    sys.exit(code)


# -------------------------------------------------------------------------------- running
def per_image(out: Path, images: int) -> float:
    files = sorted(out.rglob("*.png"), key=lambda p: p.stat().st_mtime_ns)
    if len(files) < images:
        raise RuntimeError(f"{len(files)} images written, {images} expected")
    times = [p.stat().st_mtime_ns / 1e9 for p in files[-images:]]
    return (times[-1] - times[0]) / (images - 1)


def _last_json(log: Path) -> dict[str, Any]:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            return data if isinstance(data, dict) else {}
    return {}


def run_arm(arm: str, busy: int, args: argparse.Namespace, work: Path,
            on_poll: Any = None) -> dict[str, Any]:
    """One arm in a fresh process; ``on_poll()`` is called every 0.2 s while it runs. The
    result's ``child`` is the window child's closing JSON line (empty for other arms)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", SDSTUDIO_HOME=str(work / "home"),
               PYTHONPATH=str(ROOT), DIFFUSERS_VERBOSITY="error",
               TRANSFORMERS_VERBOSITY="error")
    if args.untuned and arm != "bare":
        env["SDSTUDIO_THREAD_TUNING"] = "0"
    if getattr(args, "precision", "") and arm != "bare":  # what SD Studio's "auto" means
        env["SDSTUDIO_PRECISION"] = args.precision
    if arm == "window":
        env.setdefault("QT_QPA_PLATFORM", "xcb" if os.environ.get("DISPLAY") else "offscreen")
    result: dict[str, Any] = {}
    for attempt in range(1, args.tries + 1):
        out = Path(tempfile.mkdtemp(prefix=f"{arm}-", dir=work))
        common = ["--model", str(args.model), "--size", str(args.size), "--steps",
                  str(args.steps), "--images", str(args.images), "--out", str(out)]
        if arm == "cli":
            cmd = [PY, "-m", "sdstudio", "generate", "--prompt", PROMPT, "--model",
                   str(args.model), "--width", str(args.size), "--height", str(args.size),
                   "--steps", str(args.steps), "--sampler", "Euler a", "--cfg-scale", "7",
                   "--seed", "1", "--batch-count", str(args.images), "--out", str(out),
                   "--quiet"]
        elif arm == "batch":  # sdstudio batch: its writer thread saves while the next runs
            listing = out.with_suffix(".txt")
            listing.write_text("\n".join([PROMPT] * args.images) + "\n")
            cmd = [PY, "-m", "sdstudio", "batch", str(listing), "--model", str(args.model),
                   "--width", str(args.size), "--height", str(args.size), "--steps",
                   str(args.steps), "--sampler", "Euler a", "--cfg-scale", "7", "--seed", "1",
                   "--seed-policy", "increment", "--out", str(out), "--quiet"]
        else:
            cmd = [PY, __file__, "--child", arm, *common]
        quiet = wait_for_quiet(args.quiet_limit)
        competitors = [subprocess.Popen([PY, "-c", "while True: pass"]) for _ in range(busy)]
        meter = ForeignLoad()
        log = out.with_suffix(".log")
        try:
            with open(log, "w") as fh:  # a file, not a pipe: a chatty child cannot block
                proc = subprocess.Popen(cmd, env=env, cwd=str(ROOT), stdout=fh,
                                        stderr=subprocess.STDOUT)
                meter.start([proc.pid] + [c.pid for c in competitors])
                while proc.poll() is None:
                    meter.sample_own()
                    if on_poll is not None:
                        on_poll()
                    time.sleep(0.2)
            foreign = meter.stop()
        finally:
            for c in competitors:
                c.kill()
                c.wait()
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{arm} failed ({proc.returncode}): {tail}")
        result = {"s": per_image(out, args.images), "foreign": foreign, "quiet_before": quiet,
                  "attempt": attempt, "child": _last_json(log)}
        if foreign < args.quiet_limit:
            break
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--situations", default=None,
                        help="idle, busy1, busy2 (default: all; --smoke: idle,busy1)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                        help="SD Studio's precision (SDSTUDIO_PRECISION) in its arms; fp32 "
                        "(default) computes as bare diffusers does, auto takes bf16 on a CPU "
                        "that has it")
    parser.add_argument("--arms", default="bare,cli,window",
                        help="bare, cli, window, batch (sdstudio batch with its writer thread)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of every arm per situation, in rotating order; the "
                        "median is reported (processes differ by several per cent)")
    parser.add_argument("--quiet-limit", type=float, default=0.15,
                        help="CPUs of foreign load above which an arm is run again")
    parser.add_argument("--untuned", action="store_true",
                        help="SD Studio with SDSTUDIO_THREAD_TUNING=0 (torch's defaults)")
    parser.add_argument("--smoke", action="store_true", help="64x64, 2 steps, idle + busy1")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--child", choices=("bare", "window"), help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "bare":
        child_bare(args)
        return 0
    if args.child == "window":
        child_window(args)
        return 0
    if args.smoke:
        args.size, args.steps, args.tries = 64, 2, 1
        args.situations = args.situations or "idle,busy1"
        args.quiet_limit = 100.0
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="sdstudio-busy-"))
    work.mkdir(parents=True, exist_ok=True)
    # the demo model, built in a child so that this process never imports torch (an import
    # here would set the thread variables that the children inherit)
    model = work / "demo"
    subprocess.run([PY, "-c", "import sys; from sdstudio.engine.tiny import build_tiny_model;"
                    " build_tiny_model(sys.argv[1], 'sd1')", str(model)], check=True,
                   cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)))
    args.model = model
    situations = [s.strip() for s in (args.situations or "idle,busy1,busy2").split(",")
                  if s.strip()]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    busy_of = {"idle": 0, "busy1": 1, "busy2": 2}
    unknown = [s for s in situations if s not in busy_of] + [
        a for a in arms if a not in ("bare", "cli", "window", "batch")]
    if unknown:
        parser.error(f"unknown situation or arm: {', '.join(unknown)}")
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for situation in situations:
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
        for rep in range(max(1, args.repeats)):
            for arm in arms[rep % len(arms):] + arms[:rep % len(arms)]:
                r = run_arm(arm, busy_of[situation], args, work)
                runs[arm].append(r)
                print(f"  {situation:6s} {arm:7s} {r['s']:7.3f} s/image (foreign load "
                      f"{r['foreign']:.2f} CPUs, try {r['attempt']})", flush=True)
        for arm in arms:
            done = runs[arm]
            rows[situation, arm] = {"s": statistics.median(r["s"] for r in done),
                                    "foreign": max(r["foreign"] for r in done),
                                    "attempt": max(r["attempt"] for r in done)}
    tuned = "untuned (SDSTUDIO_THREAD_TUNING=0)" if args.untuned else "tuned (default)"
    print(f"\n{os.cpu_count()} CPUs; demo model {args.size}x{args.size}, {args.steps} steps, "
          f"Euler a, {args.images} images per arm, per image between the first and the last, "
          f"median of {max(1, args.repeats)} run(s) of each arm; SD Studio threads {tuned}")
    header = f"{'situation':10s}" + "".join(f"{a:>22s}" for a in arms)
    print(header)
    for situation in situations:
        cells = []
        for arm in arms:
            r = rows[situation, arm]
            base = rows.get((situation, "bare"))
            ratio = f" ({r['s'] / base['s']:.2f}x bare)" if base and arm != "bare" else ""
            cells.append(f"{r['s']:8.2f} s{ratio}")
        print(f"{situation:10s}" + "".join(f"{c:>22s}" for c in cells))
    idle_cli = rows.get(("idle", "cli"))
    if idle_cli:
        print("\nratios to the idle CLI:")
        for situation in situations:
            for arm in ("cli", "window", "batch"):
                r = rows.get((situation, arm))
                if r:
                    print(f"  {situation:6s} {arm:7s} {r['s'] / idle_cli['s']:.2f}x")
        idle_bare = rows.get(("idle", "bare"))
        if idle_bare:
            print(f"goal idle CLI <= 1.05x bare: {idle_cli['s'] / idle_bare['s']:.2f}x")
        b1c, b1w = rows.get(("busy1", "cli")), rows.get(("busy1", "window"))
        if b1c:
            print(f"goal busy1 CLI <= 1.6x idle CLI: {b1c['s'] / idle_cli['s']:.2f}x")
        if b1w:
            print(f"goal busy1 window <= 1.7x idle CLI: {b1w['s'] / idle_cli['s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
