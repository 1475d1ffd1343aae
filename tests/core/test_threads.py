"""CPU thread policy (core/threads.py): the CPUs a process may use, the variables set before
torch loads, and the thread count chosen from other programs' load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdstudio.core import threads as t

ROOT = Path(__file__).resolve().parents[2]


def _cgroup(tmp_path: Path, files: dict[str, str], proc: str) -> tuple[Path, Path]:
    root = tmp_path / "cg"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    self_cg = tmp_path / "self_cgroup"
    self_cg.write_text(proc)
    return root, self_cg


def test_cgroup_v2_quota_of_own_group_and_parents(tmp_path: Path) -> None:
    root, self_cg = _cgroup(tmp_path, {
        "user.slice/cpu.max": "300000 100000\n",
        "user.slice/app.scope/cpu.max": "max 100000\n",
        "cpu.max": "max 100000\n"}, "0::/user.slice/app.scope\n")
    assert t.cgroup_cpu_limit(root, self_cg) == 3.0  # the parent's quota binds


def test_cgroup_v2_no_quota_and_unreadable(tmp_path: Path) -> None:
    root, self_cg = _cgroup(tmp_path, {"a/cpu.max": "max 100000\n"}, "0::/a\n")
    assert t.cgroup_cpu_limit(root, self_cg) is None
    assert t.cgroup_cpu_limit(tmp_path / "none", tmp_path / "missing") is None
    root, self_cg = _cgroup(tmp_path / "bad", {"a/cpu.max": "garbage\n"}, "0::/a\n")
    assert t.cgroup_cpu_limit(root, self_cg) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    root, self_cg = _cgroup(tmp_path, {
        "cpu,cpuacct/docker/x/cpu.cfs_quota_us": "150000\n",
        "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000\n"},
        "12:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n")
    assert t.cgroup_cpu_limit(root, self_cg) == 1.5
    root, self_cg = _cgroup(tmp_path / "unlimited", {
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, "4:cpu,cpuacct:/\n")
    assert t.cgroup_cpu_limit(root, self_cg) is None


def test_usable_cpus_from_affinity_and_quota() -> None:
    assert t.usable_cpus((0, 1, 2, 3), None) == 4
    assert t.usable_cpus((0, 1, 2, 3), 1.5) == 2  # a quota of 1.5 CPUs still runs 2 threads
    assert t.usable_cpus((0, 1, 2, 3), 2.0) == 2
    assert t.usable_cpus((0, 1, 2, 3), 0.2) == 1
    assert t.usable_cpus(None, None, total=16) == 16  # no affinity API: the machine's count
    assert t.usable_cpus((5,), 8.0) == 1


def test_environment_leaves_the_persons_variables_alone() -> None:
    assert t.thread_environment({}, 4, "linux") == {
        "OMP_NUM_THREADS": "4", "GOMP_SPINCOUNT": str(t.SPIN_COUNT)}
    assert t.thread_environment({"OMP_NUM_THREADS": "3"}, 4, "linux") == {
        "GOMP_SPINCOUNT": str(t.SPIN_COUNT)}
    assert t.thread_environment({"OMP_WAIT_POLICY": "ACTIVE"}, 4, "linux") == {
        "OMP_NUM_THREADS": "4"}
    assert t.thread_environment({"GOMP_SPINCOUNT": "1"}, 2, "linux") == {
        "OMP_NUM_THREADS": "2"}
    # other platforms' OpenMP runtimes are not GNU's: only the thread count
    assert t.thread_environment({}, 8, "win32") == {"OMP_NUM_THREADS": "8"}
    assert t.thread_environment({}, 8, "darwin") == {"OMP_NUM_THREADS": "8"}


@pytest.mark.parametrize(("cpus", "other", "current", "expected"), [
    (2, 0.0, 2, 2),     # idle: every CPU
    (2, 0.67, 2, 1),    # a busy program beside our two threads gets ~2/3 of a CPU: give way
    (2, 0.45, 2, 2),    # a light load is not worth a thread
    (2, 1.0, 1, 1),     # still busy: stay
    (2, 0.4, 1, 1),     # between the thresholds: no flip-flop
    (2, 0.2, 1, 2),     # gone: take it back
    (2, 3.0, 2, 1),     # never below one
    (8, 2.6, 8, 5),
    (8, 1.9, 4, 6),     # load fell: threads come back, only as far as it is clearly lower
    (8, 0.0, 3, 8),
    (1, 5.0, 1, 1),
])
def test_choose_threads(cpus: int, other: float, current: int, expected: int) -> None:
    assert t.choose_threads(cpus, other, current) == expected


def _child(code: str, env: dict[str, str]) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items()
             if k not in (*t.USER_VARIABLES, t.OFF_VARIABLE)}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, cwd=str(ROOT),
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


_PROBE = ("import json, os, sdstudio.engine, torch; from sdstudio.core import threads; "
          "s = threads.current_setup(); print(json.dumps({'omp': os.environ.get("
          "'OMP_NUM_THREADS'), 'spin': os.environ.get('GOMP_SPINCOUNT'), 'torch': "
          "torch.get_num_threads(), 'adaptive': s.adaptive, 'cpus': s.cpus}))")


def test_engine_import_sets_the_variables_before_torch_loads() -> None:
    got = _child(_PROBE, {})
    cpus = t.usable_cpus(t.allowed_cpu_ids(), t.cgroup_cpu_limit())
    assert got == {"omp": str(cpus), "spin": str(t.SPIN_COUNT) if sys.platform == "linux"
                   else None, "torch": cpus, "adaptive": True, "cpus": cpus}


def test_the_persons_omp_num_threads_wins_and_turns_adaptation_off() -> None:
    got = _child(_PROBE, {"OMP_NUM_THREADS": "1"})
    assert got["omp"] == "1" and got["torch"] == 1 and got["adaptive"] is False


def test_tuning_can_be_switched_off() -> None:
    got = _child(_PROBE, {t.OFF_VARIABLE: "0"})
    assert got["spin"] is None and got["omp"] is None and got["adaptive"] is False
