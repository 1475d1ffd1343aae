"""installer/bootstrap.py: the torch choice, the stamp, desktop files and the dry-run plan.
No real environment is created here."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "installer" / "bootstrap.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sdstudio_bootstrap", BOOTSTRAP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


bs = _load()
PINNED = f"torch=={bs.TORCH_VERSION}"
PT = bs.PYTORCH_INDEX


# ---------------------------------------------------------------------------- torch choice
@pytest.mark.parametrize(
    ("system", "nvidia", "env", "local", "kind", "requirement", "index"),
    [
        # automatic
        ("Linux", False, {}, True, "cpu", PINNED, None),  # CI: the local CPU wheel
        ("Linux", False, {}, False, "cpu", PINNED, f"{PT}/cpu"),
        ("Windows", False, {}, False, "cpu", PINNED, f"{PT}/cpu"),
        ("Darwin", False, {}, False, "cpu", PINNED, None),  # PyPI: CPU + MPS
        ("Linux", True, {}, True, "cuda", PINNED, f"{PT}/cu128"),
        ("Windows", True, {}, False, "cuda", PINNED, f"{PT}/cu128"),
        # forced
        ("Linux", True, {"SDSTUDIO_TORCH": "cpu"}, True, "cpu", PINNED, None),
        ("Linux", True, {"SDSTUDIO_TORCH": "CPU"}, False, "cpu", PINNED, f"{PT}/cpu"),
        ("Linux", False, {"SDSTUDIO_TORCH": "cuda"}, True, "cuda", PINNED, f"{PT}/cu128"),
        ("Linux", True, {"SDSTUDIO_TORCH": "auto"}, True, "cuda", PINNED, f"{PT}/cu128"),
        ("Linux", True, {"SDSTUDIO_TORCH": "skip"}, True, "skip", None, None),
        ("Linux", False, {"SDSTUDIO_TORCH": "torch==2.6.0+cu124"}, True, "custom",
         "torch==2.6.0+cu124", None),
        ("Linux", False, {"SDSTUDIO_TORCH": "torch>=2.7",
                          "SDSTUDIO_TORCH_INDEX": "https://mirror/whl"}, True, "custom",
         "torch>=2.7", "https://mirror/whl"),
        ("Linux", True, {"SDSTUDIO_TORCH_INDEX": "https://mirror/cu126"}, False, "cuda", PINNED,
         "https://mirror/cu126"),
        ("Linux", False, {"SDSTUDIO_TORCH_INDEX": "https://mirror/cpu"}, True, "cpu", PINNED,
         "https://mirror/cpu"),
        ("Darwin", True, {}, False, "cpu", PINNED, None),  # no CUDA on macOS
    ],
)
def test_choose_torch(system: str, nvidia: bool, env: dict[str, str], local: bool, kind: str,
                      requirement: str | None, index: str | None) -> None:
    plan = bs.choose_torch(system, nvidia, env, local_cpu_wheel=local)
    assert (plan.kind, plan.requirement, plan.index_url) == (kind, requirement, index)
    assert plan.reason
    assert plan.describe().startswith("torch: ")
    if requirement:
        assert plan.pip_args()[0] == requirement
        assert ("--index-url" in plan.pip_args()) == bool(index)
    else:
        assert plan.pip_args() == []


VISION = f"torchvision=={bs.TORCHVISION_VERSION}"


@pytest.mark.parametrize(
    ("system", "nvidia", "env", "local", "vision"),
    [
        ("Linux", True, {}, False, VISION),  # the CUDA index: its torchvision matches torch
        ("Windows", False, {}, False, VISION),  # PyTorch's CPU index
        ("Darwin", False, {}, False, VISION),  # PyPI's macOS builds match each other
        ("Linux", False, {"SDSTUDIO_TORCH_INDEX": "https://mirror/cpu"}, True, VISION),
        ("Linux", False, {}, True, None),  # a local CPU torch wheel: no torchvision matches
        ("Linux", False, {"SDSTUDIO_TORCH": "torch==2.6.0+cu124"}, True, None),
        ("Linux", False, {"SDSTUDIO_TORCH": "skip"}, True, None),
    ],
)
def test_torchvision_comes_from_torchs_index_and_variant(
        system: str, nvidia: bool, env: dict[str, str], local: bool, vision: str | None) -> None:
    plan = bs.choose_torch(system, nvidia, env, local_cpu_wheel=local)
    assert plan.torchvision == vision
    args = plan.pip_args()
    if vision:
        # one pip command, one index: pip resolves torch and torchvision of the same variant
        assert args[:2] == [plan.requirement, vision]
        assert args.count("--index-url") == (1 if plan.index_url else 0)
        assert vision in plan.describe()
    else:
        assert not any(a.startswith("torchvision") for a in args)
    major, minor = (int(x) for x in bs.TORCH_VERSION.split(".")[:2])
    assert bs.TORCHVISION_VERSION.startswith(f"0.{minor + 15}.") and major == 2


def test_no_deps_requirements_come_from_pyproject() -> None:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    reqs = bs.no_deps_requirements(text)
    assert any(r.startswith("spandrel==") for r in reqs)
    assert bs.no_deps_requirements("[project]\nname = 'x'\n") == ()
    with pytest.raises(bs.SetupError):
        bs.no_deps_requirements("[tool.sdstudio]\nno-deps = ['spandrel>=0.4']\n")


@pytest.mark.parametrize(
    ("driver", "tag"),
    [((13, 1), "cu130"), ((13, 0), "cu130"), ((12, 9), "cu128"), ((12, 8), "cu128"),
     ((12, 6), "cu126"), ((12, 2), "cu126"), (None, bs.DEFAULT_CUDA_BUILD)],
)
def test_cuda_build_follows_the_driver(driver: tuple[int, int] | None, tag: str) -> None:
    assert bs.cuda_build_for(driver) == tag
    plan = bs.choose_torch("Linux", True, {}, driver_cuda=driver)
    assert plan.index_url == f"{PT}/{tag}"


def test_parse_driver_cuda() -> None:
    sample = "| NVIDIA-SMI 580.65.06   Driver Version: 580.65.06   CUDA Version: 13.0     |"
    assert bs.parse_driver_cuda(sample) == (13, 0)
    assert bs.parse_driver_cuda("no gpu here") is None


def test_wheel_matching_and_find_links(tmp_path: Path) -> None:
    assert bs.wheel_matches("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", "2.13.0",
                            (3, 11))
    assert not bs.wheel_matches("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                                "2.13.0", (3, 12))
    assert not bs.wheel_matches("torch-2.12.0-cp311-cp311-win_amd64.whl", "2.13.0", (3, 11))
    assert not bs.wheel_matches("torchvision-2.13.0-cp311-cp311-any.whl", "2.13.0", (3, 11))
    (tmp_path / "a").mkdir()
    config = f"global.find-links='{tmp_path / 'a'} https://x/y'\n:env:.find-links='file://{tmp_path}'"
    assert bs.find_links_dirs(config, {}) == [tmp_path / "a", tmp_path]
    assert bs.find_links_dirs("", {"PIP_FIND_LINKS": str(tmp_path)}) == [tmp_path]
    assert bs.find_links_dirs("", {"PIP_FIND_LINKS": "/does/not/exist"}) == []


# ---------------------------------------------------------------------------------- stamp
def test_stamp_key_tracks_its_inputs() -> None:
    base = bs.stamp_key(b"[project]\nname='x'\n", (3, 11), {}, False)
    assert base == bs.stamp_key(b"[project]\nname='x'\n", (3, 11), {}, False)
    assert base != bs.stamp_key(b"[project]\nname='y'\n", (3, 11), {}, False)
    assert base != bs.stamp_key(b"[project]\nname='x'\n", (3, 12), {}, False)
    assert base != bs.stamp_key(b"[project]\nname='x'\n", (3, 11), {"SDSTUDIO_TORCH": "cuda"},
                                False)
    assert base != bs.stamp_key(b"[project]\nname='x'\n", (3, 11),
                                {"SDSTUDIO_TORCH_INDEX": "u"}, False)
    assert base != bs.stamp_key(b"[project]\nname='x'\n", (3, 11), {}, True)
    assert base == bs.stamp_key(b"[project]\nname='x'\n", (3, 11), {"OTHER": "1"}, False)
    assert base != bs.stamp_key(b"[project]\nname='x'\n", (3, 11), {}, False, b"numpy==2\n")
    assert base != bs.stamp_key(b"[project]\nname='x'\n", (3, 11), {"SDSTUDIO_UNLOCKED": "1"},
                                False)


def test_up_to_date_needs_same_key_and_extras() -> None:
    assert bs.is_up_to_date({"key": "k", "extras": ["test"]}, "k", ())
    assert bs.is_up_to_date({"key": "k", "extras": ["test"]}, "k", ("test",))
    assert bs.is_up_to_date({"key": "k", "extras": []}, "k", ())
    assert not bs.is_up_to_date({"key": "k", "extras": []}, "k", ("test",))
    assert not bs.is_up_to_date({"key": "old", "extras": ["test"]}, "k", ())
    assert not bs.is_up_to_date({}, "k", ())
    assert not bs.is_up_to_date({"key": "k", "extras": "test"}, "k", ())


def test_stamp_round_trip(tmp_path: Path) -> None:
    plan = bs.choose_torch("Linux", False, {}, local_cpu_wheel=True)
    bs.write_stamp(tmp_path, "abc", ("test",), plan)
    stamp = bs.read_stamp(tmp_path)
    assert bs.is_up_to_date(stamp, "abc", ("test",))
    (tmp_path / bs.STAMP_NAME).write_text("{broken")
    assert bs.read_stamp(tmp_path) == {}
    assert bs.read_stamp(tmp_path / "missing") == {}


def test_pip_install_args() -> None:
    lock = ["-c", "installer/constraints.txt"]
    assert bs.pip_install_args((), {}) == ["-e", ".", *lock]
    assert bs.pip_install_args(("test",), {}) == ["-e", ".[test]", *lock]
    assert bs.pip_install_args(("test",), {"SDSTUDIO_UNLOCKED": "1"}) == ["-e", ".[test]"]


def test_python_too_old() -> None:
    assert bs.python_too_old((3, 11, 2)) is None
    assert bs.python_too_old((3, 12, 0)) is None
    message = bs.python_too_old((3, 10, 14))  # diffusers >= 0.42 needs 3.11
    assert message and "3.11" in message and "3.10.14" in message and "\n" not in message


def test_parse_args() -> None:
    assert bs.parse_args(["run"])[:2] == ("run", [])
    command, rest, opts = bs.parse_args(["--dry-run", "test", "-k", "cli", "--force"])
    assert (command, rest, opts["dry_run"], opts["force"]) == ("test", ["-k", "cli", "--force"],
                                                               True, False)
    command, rest, opts = bs.parse_args(["setup", "--force"])
    assert (command, rest, opts["force"]) == ("setup", [], True)
    assert bs.parse_args(["run", "generate", "--prompt", "x"])[1] == ["generate", "--prompt", "x"]


# -------------------------------------------------------------------------------- desktop
def test_desktop_entry(tmp_path: Path) -> None:
    repo = tmp_path / "my apps" / "sd studio"
    icon = repo / "resources" / "icons" / "sdstudio.svg"
    text = bs.desktop_entry("/usr/bin/python3", repo, icon)
    lines = dict(line.split("=", 1) for line in text.splitlines()[1:])
    assert text.startswith("[Desktop Entry]\n")
    assert lines["Type"] == "Application" and lines["Name"] == "SD Studio"
    assert lines["Exec"] == f'"/usr/bin/python3" "{repo}/main.py"'
    assert lines["Icon"] == str(icon)
    assert lines["Terminal"] == "false"
    assert bs._desktop_quote('a "b" $c 100%') == '"a \\"b\\" \\$c 100%%"'
    assert "Icon=applications-graphics" in bs.desktop_entry("python3", repo, None)


def test_find_icon_uses_resources() -> None:
    icon = bs.find_icon(REPO)
    if (REPO / "resources" / "icons").is_dir():
        assert icon is not None and icon.parent == REPO / "resources" / "icons"
    assert bs.find_icon(REPO / "no-such-folder") is None


def test_launchers_for_mac_and_windows(tmp_path: Path) -> None:
    mac = bs.mac_command("/usr/local/bin/python3", tmp_path)
    assert mac.startswith("#!/bin/bash\n") and f'cd "{tmp_path}"' in mac and "main.py" in mac
    bat = bs.windows_bat(r"C:\Python311\python.exe", Path(r"C:\apps\sdstudio"))
    assert bat.startswith("@echo off\r\n") and "main.py %*" in bat and "\r\n" in bat


def test_desktop_targets(tmp_path: Path) -> None:
    assert bs.desktop_targets("Linux", tmp_path, {}) == [
        tmp_path / ".local/share/applications/sdstudio.desktop"
    ]
    assert bs.desktop_targets("Linux", tmp_path, {"XDG_DATA_HOME": "/x"}) == [
        Path("/x/applications/sdstudio.desktop")
    ]
    assert bs.desktop_targets("Darwin", tmp_path, {})[0].suffix == ".command"
    win = bs.desktop_targets("Windows", tmp_path, {"APPDATA": str(tmp_path)})[0]
    assert win.name == "SD Studio.bat" and "Start Menu" in str(win)
    assert bs.desktop_targets("Plan9", tmp_path, {}) == []


# ------------------------------------------------------------------------------ dry run
def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {**os.environ, "SDSTUDIO_VENV": str(venv), "SDSTUDIO_TORCH": "cpu"}
    proc = subprocess.run([sys.executable, str(BOOTSTRAP), "--dry-run", "test", "-k", "x"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"environment: {venv} (to set up)" in out
    assert "torch: torch==" in out and "CPU build" in out
    assert "pip install -e .[test]" in out
    assert "pip install --no-deps spandrel==" in out
    assert "-m pytest -k x" in out and "ruff check" in out
    steps = [line for line in out.splitlines() if line.startswith("step: ") and " -m " in line]
    assert [step.split(" -m ")[1].split()[0] for step in steps] == ["ruff", "mypy", "pytest"]
    assert not venv.exists()


@pytest.mark.parametrize(
    ("codes", "rc", "message"),
    [
        ({}, 0, "all checks passed"),
        ({"mypy": 1}, 1, "tests passed, but mypy found problems (see above)"),
        ({"ruff": 1, "mypy": 1}, 1,
         "tests passed, but ruff found problems and mypy found problems (see above)"),
        ({"mypy": 1, "pytest": 3}, 3, "tests failed (pytest exit 3)"),
        ({"pytest": 5}, 1, "pytest collected no tests"),
    ],
)
def test_test_command_runs_ruff_mypy_pytest_and_fails_on_any(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        codes: dict[str, int], rc: int, message: str) -> None:
    calls: list[list[str]] = []

    def call(cmd: list[str], **kwargs: object) -> int:
        calls.append(cmd)
        assert kwargs["cwd"] == bs.REPO  # mypy reads its files and flags from pyproject.toml
        return codes.get(cmd[2], 0)

    monkeypatch.setattr(bs, "setup", lambda extras, force, dry_run: Path("/venv/bin/python"))
    monkeypatch.setattr(bs.subprocess, "call", call)
    assert bs.cmd_test(["-k", "x"], force=False, dry_run=False) == rc
    assert calls == [["/venv/bin/python", "-m", "ruff", "check", "."],
                     ["/venv/bin/python", "-m", "mypy"],
                     ["/venv/bin/python", "-m", "pytest", "-k", "x"]]
    assert message in capsys.readouterr().err


def test_unknown_command_is_one_line() -> None:
    proc = subprocess.run([sys.executable, str(BOOTSTRAP), "frobnicate"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "unknown command" in proc.stderr


def test_missing_venv_module_names_the_package(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    real = bs.importlib.util.find_spec
    monkeypatch.setattr(bs.importlib.util, "find_spec",
                        lambda name, *a: None if name == "ensurepip" else real(name, *a))
    with pytest.raises(bs.SetupError, match="python3-venv"):
        bs._create_venv(tmp_path / "venv")
    assert not (tmp_path / "venv").exists()


def test_pip_failure_shows_the_log_tail(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "pip.log"
    with pytest.raises(bs.SetupError) as err:
        bs._run_pip(Path(sys.executable), ["--no-index", "--no-deps",
                                           "sdstudio-no-such-package-xyz==0.0.1"], log, "extras")
    message = str(err.value)
    assert "pip could not install extras" in message and str(log) in message
    assert "\n" not in message
    assert "sdstudio-no-such-package-xyz" in log.read_text()
    assert "  | " in capsys.readouterr().err  # the tail of the log is shown
