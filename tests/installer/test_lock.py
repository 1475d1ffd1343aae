"""installer/constraints.txt: the tested versions of every dependency, for every platform.
The set-up installs with it; these checks keep it complete and true to what the tests ran
with (the versions installed in this environment)."""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "installer" / "constraints.txt"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> list[tuple[str, str, Marker | None]]:
    pins = []
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier  # exactly one ==
        assert spec.operator == "==", line
        pins.append((_norm(req.name), spec.version, req.marker))
    return pins


def test_every_dependency_and_test_tool_is_pinned_and_torch_is_not() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    pinned = {name for name, _, _ in _pins()}
    for dep in wanted:
        name = _norm(Requirement(dep).name)
        if name == "torch":
            assert name not in pinned  # it comes from the index the set-up picks
        else:
            assert name in pinned, f"{name} is not in the lock"
    assert not {n for n in pinned if n.startswith(("nvidia-", "cuda-")) or n == "triton"}


def test_the_lock_is_what_this_environment_runs() -> None:
    """The suite runs in an environment installed from the lock: every pin that applies to this
    platform and Python is the installed version."""
    env_mismatch = []
    for name, version, marker in _pins():
        if marker is not None and not marker.evaluate():
            continue
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            continue  # e.g. a Windows-only dependency of a dependency
        if installed != version:
            env_mismatch.append(f"{name} {installed} != {version}")
    assert not env_mismatch, f"{sys.prefix}: " + ", ".join(env_mismatch)


def test_the_no_deps_pins_are_what_this_environment_runs() -> None:
    """pyproject's ``[tool.sdstudio] no-deps`` (installed without dependencies, so outside
    the lock) are exact pins, and the installed versions."""
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["sdstudio"]
    for line in table["no-deps"]:
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", line
        assert md.version(req.name) == spec.version, line
