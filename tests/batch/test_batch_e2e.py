"""The batch runner and `sdstudio batch` on the real tiny model: one model load across modes,
failures recorded and skipped, exit statuses, kill -9 at random points, two processes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from sdstudio import cli
from sdstudio.batch.events import BatchEvent, UnitDone, UnitFailed
from sdstudio.batch.plan import BatchOptions, plan_units
from sdstudio.batch.runner import BatchRunner
from sdstudio.core.prompts import PromptList, parse_prompt_list
from sdstudio.core.request import GenerationRequest
from sdstudio.storage.manifest import read_manifest
from sdstudio.storage.png import read_image_metadata

ROOT = Path(__file__).resolve().parents[2]
TINY = GenerationRequest(prompt="", width=64, height=64, steps=2, seed=1000)
TINY_FLAGS = ["--width", "64", "--height", "64", "--steps", "2"]


def check_complete(out: Path, prompts: PromptList, per_prompt: int = 1) -> None:
    """Every unit has exactly one decodable image whose metadata matches its line."""
    state = read_manifest(out)
    assert state.header is not None
    units = plan_units(prompts, per_prompt, state.header.seeds)
    done = state.done()
    assert {u.slot for u in units} == set(done)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert sorted(done[u.slot].file for u in units) == files, "duplicate or stray images"
    for unit in units:
        path = out / done[unit.slot].file  # type: ignore[operator]
        with Image.open(path) as im:
            im.load()
            assert im.size == (unit.request.width, unit.request.height)
        meta = read_image_metadata(path)
        assert meta.request.prompt == unit.request.prompt
        assert meta.request.seed == unit.seed
        assert meta.request.steps == unit.request.steps
    assert not list(out.rglob(".sdstudio-*.tmp")), "temp files left"


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT),
             OMP_NUM_THREADS="1", DIFFUSERS_VERBOSITY="error", TRANSFORMERS_VERBOSITY="error")
    return e


def test_one_load_across_modes_and_a_failed_line(tiny_model: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from sdstudio.engine import Engine, models

    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init)
    text = (
        "a red square\n"
        f"--prompt 'img2img of it' --init_image {init} --denoising_strength 0.5\n"
        f"--prompt broken --init_image {tmp_path / 'missing.png'}\n"
        "after the failure\n"
    )
    prompts = parse_prompt_list(text, TINY.replace(model=str(tiny_model)))
    assert prompts.ok, prompts.errors
    pipeline_loads: list[object] = []
    real_load = models.load_pipeline
    monkeypatch.setattr(models, "load_pipeline",
                        lambda *a, **k: pipeline_loads.append(a) or real_load(*a, **k))
    engine = Engine()
    loads: list[str] = []
    real = engine.load
    monkeypatch.setattr(engine, "load", lambda model="", *a, **k: loads.append(model)
                        or real(model, *a, **k))
    events: list[BatchEvent] = []
    out = tmp_path / "out"
    summary = BatchRunner(engine, prompts, BatchOptions(out), on_event=events.append).run()
    assert (summary.done, summary.failed) == (3, 1)
    assert len(loads) == 1 and len(pipeline_loads) == 1  # img2img did not reload
    failed = [e for e in events if isinstance(e, UnitFailed)]
    assert [f.unit.line_no for f in failed] == [3] and "missing.png" in failed[0].reason
    assert [e.unit.line_no for e in events if isinstance(e, UnitDone)] == [1, 2, 4]
    state = read_manifest(out)
    assert [r.line_no for r in state.failed().values()] == [3]
    # the CLI on the same folder: the failed line fails again -> exit 1; the rest is skipped
    code = cli.main(["batch", str(_write(tmp_path / "l.txt", text)), "--model", str(tiny_model),
                     "--out", str(out), "--seed", "1000", *TINY_FLAGS, "--quiet"])
    assert code == 1


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_cli_bad_lines_changed_list_and_dry_run(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path / "bad.txt", "ok\n--prompt x --steps 0\n--prompt y --nope 1\n")
    out = tmp_path / "out"
    assert cli.main(["batch", str(bad), "--out", str(out), *TINY_FLAGS]) == 2
    err = capsys.readouterr().err
    assert "line 2:" in err and "line 3: unknown option --nope" in err
    assert "--skip-bad-lines" in err and not out.exists()
    assert cli.main(["batch", str(bad), "--out", str(out), "--dry-run", "--skip-bad-lines",
                     *TINY_FLAGS]) == 0
    assert "1 prompts, 1 images" in capsys.readouterr().out

    from tests.batch.fakes import FakeEngine

    good = _write(tmp_path / "good.txt", "a\nb\n")
    prompts = parse_prompt_list(good, TINY)
    BatchRunner(FakeEngine(), prompts, BatchOptions(out)).run()
    _write(good, "a\nb changed\n")
    assert cli.main(["batch", str(good), "--out", str(out), *TINY_FLAGS, "--seed", "1000"]) == 2
    err = capsys.readouterr().err
    assert "prompt list changed" in err and "--resume or --restart" in err
    assert cli.main(["batch", str(good), "--out", str(out), "--dry-run", *TINY_FLAGS]) == 0
    assert "--resume or --restart needed" in capsys.readouterr().out
    # with the decision given, the dry run says what the run would do
    assert cli.main(["batch", str(good), "--out", str(out), "--dry-run", "--resume", "-q",
                     *TINY_FLAGS, "--seed", "1000"]) == 0
    assert "--resume keeps 1 images of unchanged lines and makes 1" in capsys.readouterr().out
    assert cli.main(["batch", str(good), "--out", str(out), "--dry-run", "--restart",
                     *TINY_FLAGS, "--seed", "1000"]) == 0
    assert "--restart starts the batch over: 2 images to make" in capsys.readouterr().out
    assert cli.main(["batch", str(good), "--out", str(out), "--pattern", "{nope}"]) == 2
    assert "unknown token" in capsys.readouterr().err


def test_cli_refuses_a_folder_another_batch_runs_into(tiny_model: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """One line naming the running batch, exit status 2, nothing made."""
    from sdstudio.storage.manifest import BatchLock

    good = _write(tmp_path / "list.txt", "a\nb\n")
    out = tmp_path / "out"
    with BatchLock.acquire(out, "window") as lock:
        lock.set_run("20260101-000000-abcdef12")
        code = cli.main(["batch", str(good), "--model", str(tiny_model), "--out", str(out),
                         *TINY_FLAGS])
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"sdstudio: error: the output folder {out} is in use by another "
                               f"batch (the batch tab of an SD Studio window, pid {os.getpid()} "
                               f"on {socket.gethostname()}, started ")
    assert "run 20260101-000000-abcdef12" in lines[0] and "choose another output folder" in lines[0]
    assert not list(out.rglob("*.png")) and not (out / "manifest.jsonl").exists()


def _done_lines(out: Path) -> int:
    n = 0
    for path in out.glob("manifest*.jsonl"):
        with contextlib.suppress(FileNotFoundError):
            n += path.read_bytes().count(b'"type": "done"')
    return n


@pytest.mark.slow  # ~23 s on 2 cores: four process start-ups (torch import + model load)
def test_kill_9_at_random_points_then_resume_completes(tiny_model: Path, tmp_path: Path) -> None:
    seed = int(os.environ.get("SDSTUDIO_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    lines = [f"crash test prompt {i}" for i in range(18)]
    lines.insert(5, "--prompt 'with options' --steps 3 --seed 77")
    lines.insert(12, "# a comment")
    lines.insert(13, "--prompt two --n_iter 2")
    list_path = _write(tmp_path / "list.txt", "\n".join(lines) + "\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sdstudio", "batch", str(list_path), "--model", str(tiny_model),
           "--out", str(out), "--seed-policy", "random", "--quiet", *TINY_FLAGS]
    prompts = parse_prompt_list(list_path, TINY.replace(seed=-1, model=str(tiny_model)))
    assert sum(it.request.image_count for it in prompts.items) == 21

    kills = []
    for target in sorted(rng.sample(range(0, 19), 3)):
        proc = subprocess.Popen(cmd, env=env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while _done_lines(out) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.3))  # somewhere inside the next image, or its save
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        kills.append((target, _done_lines(out)))
        for png in out.rglob("*.png"):  # never a partial image
            with Image.open(png) as im:
                im.load()
    final = subprocess.run(cmd, env=env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, (seed, kills, final.stderr)
    assert "21 images in the batch" not in final.stderr  # --quiet
    check_complete(out, prompts)
    assert_nothing_left(out, prompts, seed_policy="random")


def assert_nothing_left(out: Path, prompts: PromptList, **options: object) -> None:
    """A rerun of the same list into the same folder has nothing to do."""
    from tests.batch.fakes import FakeEngine

    engine = FakeEngine()
    opts = BatchOptions(out, **options)  # type: ignore[arg-type]
    summary = BatchRunner(engine, prompts, opts).run()
    assert engine.calls == [] and summary.skipped == summary.total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None,
                    reason="accelerate's launcher is not installed")
def test_two_processes_with_accelerate_launch(tiny_model: Path, tmp_path: Path) -> None:
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    list_path = _write(tmp_path / "list.txt", "".join(f"two procs {i}\n" for i in range(5)))
    out = tmp_path / "out"
    args = ["batch", str(list_path), "--model", str(tiny_model), "--out", str(out),
            "--per-prompt", "2", *TINY_FLAGS]
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no",
           "--num_cpu_threads_per_process", "1", "--main_process_port", str(_free_port()),
           "-m", "sdstudio", *args]
    run = subprocess.run(cmd, env=env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "all 2 processes: 10 of 10 images done" in run.stderr
    ranks = {json.loads(line)["rank"]
             for path in out.glob("manifest*.jsonl")
             for line in path.read_text().splitlines()
             if json.loads(line)["type"] == "done"}
    assert ranks == {0, 1} and (out / "manifest.rank1.jsonl").exists()
    prompts = parse_prompt_list(list_path, TINY.replace(seed=-1, model=str(tiny_model)))
    check_complete(out, prompts, per_prompt=2)
    assert_nothing_left(out, prompts, per_prompt=2)  # a single-process resume: all done
