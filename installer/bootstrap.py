#!/usr/bin/env python3
"""SD Studio bootstrap: set up a virtual environment on a machine that has only python3, then
start the app or run the tests. Standard library only.

    python3 installer/bootstrap.py run [ARGS...]     set up, then `python -m sdstudio ARGS`
    python3 installer/bootstrap.py test [PYTEST...]  set up with test extras, ruff + mypy + pytest
    python3 installer/bootstrap.py setup             set up only
    python3 installer/bootstrap.py desktop           set up, then add a desktop/menu launcher

Options (before or right after the command): --dry-run (print the plan, change nothing),
--force (reinstall even when up to date), --venv DIR (default: .venv in the repository;
also SDSTUDIO_VENV).

Torch: a CUDA build from the PyTorch wheel index when an NVIDIA GPU is present (nvidia-smi
works), else a CPU build. SDSTUDIO_TORCH=cpu|cuda|skip|<pip requirement> and
SDSTUDIO_TORCH_INDEX=<url> force a choice.

Everything else is installed at the exact versions the tests passed with, from
installer/constraints.txt (one file for every platform, with environment markers; refresh it
with tools/lock_dependencies.py). SDSTUDIO_UNLOCKED=1 installs the newest allowed versions.

The environment records what it was built from (a stamp file with a hash of pyproject.toml,
the constraints, the Python version and the torch choice); when that still matches, starting
costs a few ms.
The full pip log is kept in the environment folder (sdstudio-pip.log).
"""

from __future__ import annotations

import sys

MIN_PYTHON = (3, 11)  # diffusers >= 0.42 needs Python 3.11


def python_too_old(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> str | None:
    """One-line error when this Python cannot run SD Studio, else None."""
    if tuple(version[:2]) < MIN_PYTHON:
        return (
            f"SD Studio needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer; this is "
            f"Python {'.'.join(str(v) for v in version[:3])} ({sys.executable}). "
            "Install a newer python3 and run this again with it."
        )
    return None


if __name__ == "__main__":  # before anything that newer Pythons alone can run
    _too_old = python_too_old()
    if _too_old:
        sys.stderr.write(f"sdstudio setup: error: {_too_old}\n")
        sys.exit(1)

import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

BOOTSTRAP_VERSION = 1  # bump when the install steps change: forces a reinstall
TORCH_VERSION = "2.13.0"
# the torchvision release built against TORCH_VERSION (torch 2.N pairs with torchvision 0.N+15);
# installed from the same index and variant as torch, in the same pip command
TORCHVISION_VERSION = "0.28.0"
PYTORCH_INDEX = "https://download.pytorch.org/whl"
# (minimum driver CUDA version, wheel tag), newest first: the newest build the driver can run
CUDA_BUILDS: tuple[tuple[tuple[int, int], str], ...] = (
    ((13, 0), "cu130"),
    ((12, 8), "cu128"),
    ((12, 6), "cu126"),
)
DEFAULT_CUDA_BUILD = "cu128"
REPO = Path(__file__).resolve().parent.parent
# Test-only references installed without their dependencies: k-diffusion's sampling module is
# what AUTOMATIC1111 runs (tests/engine/test_kdiffusion_parity.py); its package declares
# training dependencies and torchvision, which SD Studio does not install.
TEST_NO_DEPS = ("k-diffusion==0.1.1.post1",)
PYPROJECT = REPO / "pyproject.toml"
# the tested versions of everything but torch (refreshed by tools/lock_dependencies.py)
CONSTRAINTS = REPO / "installer" / "constraints.txt"
STAMP_NAME = "sdstudio-stamp.json"
PIP_LOG_NAME = "sdstudio-pip.log"
TEST_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "QT_QPA_PLATFORM": "offscreen"}


class SetupError(Exception):
    """A set-up step failed; the message is one line for the person."""


# ----------------------------------------------------------------------------- torch choice
@dataclass(frozen=True)
class TorchPlan:
    """Which torch to install: ``requirement`` None means leave torch alone (skip)."""

    kind: str  # "cpu", "cuda", "skip", "custom"
    requirement: str | None
    index_url: str | None = None
    reason: str = ""
    # the matching torchvision (spandrel's LaMa/RestoreFormer use it; SD Studio works
    # without): None where no build from torch's own index is known to match
    torchvision: str | None = None

    def pip_args(self) -> list[str]:
        if self.requirement is None:
            return []
        args = [self.requirement, *([self.torchvision] if self.torchvision else [])]
        if self.index_url:
            args += ["--index-url", self.index_url]
        return args

    def describe(self) -> str:
        if self.requirement is None:
            return f"torch: not installed by setup ({self.reason})"
        where = f" from {self.index_url}" if self.index_url else ""
        vision = f" + {self.torchvision}" if self.torchvision else ""
        return f"torch: {self.requirement}{vision}{where} ({self.reason})"


def cuda_build_for(driver_cuda: tuple[int, int] | None) -> str:
    """The newest PyTorch CUDA wheel tag the driver supports (driver CUDA from nvidia-smi)."""
    if driver_cuda is None:
        return DEFAULT_CUDA_BUILD
    for minimum, tag in CUDA_BUILDS:
        if driver_cuda >= minimum:
            return tag
    return CUDA_BUILDS[-1][1]


def choose_torch(
    system: str,
    has_nvidia: bool,
    env: Mapping[str, str],
    *,
    driver_cuda: tuple[int, int] | None = None,
    local_cpu_wheel: bool = False,
) -> TorchPlan:
    """Decide the torch build: a pure function of the platform, whether an NVIDIA GPU answered
    nvidia-smi, the environment overrides, the driver's CUDA version and whether pip's
    configured find-links already hold a matching torch wheel (as on SD Studio's CI)."""
    forced = env.get("SDSTUDIO_TORCH", "").strip()
    index = env.get("SDSTUDIO_TORCH_INDEX", "").strip() or None
    pinned = f"torch=={TORCH_VERSION}"
    vision = f"torchvision=={TORCHVISION_VERSION}"
    if forced.lower() == "skip":
        return TorchPlan("skip", None, None, "SDSTUDIO_TORCH=skip")
    if forced and forced.lower() not in ("cpu", "cuda", "auto"):
        return TorchPlan("custom", forced, index, "SDSTUDIO_TORCH")
    want = forced.lower() if forced.lower() in ("cpu", "cuda") else ""
    if not want:
        want = "cuda" if has_nvidia and system != "Darwin" else "cpu"
        why = "NVIDIA GPU found" if want == "cuda" else "no NVIDIA GPU found"
    else:
        why = f"SDSTUDIO_TORCH={want}"
    if want == "cuda":
        tag = cuda_build_for(driver_cuda)
        return TorchPlan("cuda", pinned, index or f"{PYTORCH_INDEX}/{tag}", f"CUDA build, {why}",
                         vision)
    if index:
        return TorchPlan("cpu", pinned, index, f"CPU build, {why}", vision)
    if system == "Darwin":  # PyPI's macOS wheels are the CPU + Apple-GPU (MPS) build
        return TorchPlan("cpu", pinned, None, f"macOS build with Apple GPU support, {why}",
                         vision)
    if local_cpu_wheel:  # a local torch build: no torchvision is known to match it
        return TorchPlan("cpu", pinned, None, f"CPU build from pip's find-links, {why}")
    return TorchPlan("cpu", pinned, f"{PYTORCH_INDEX}/cpu", f"CPU build, {why}", vision)


def no_deps_requirements(pyproject_text: str) -> tuple[str, ...]:
    """The exact requirements pyproject.toml's ``[tool.sdstudio] no-deps`` lists: installed
    with ``pip install --no-deps`` (spandrel would otherwise pull a torchvision from PyPI that
    does not match a torch from PyTorch's index)."""
    import tomllib

    table = tomllib.loads(pyproject_text).get("tool", {}).get("sdstudio", {})
    items = table.get("no-deps", [])
    if not isinstance(items, list) or not all(isinstance(i, str) and "==" in i for i in items):
        raise SetupError("pyproject.toml: [tool.sdstudio] no-deps must list name==version")
    return tuple(items)


def parse_driver_cuda(nvidia_smi_output: str) -> tuple[int, int] | None:
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", nvidia_smi_output)
    return (int(m.group(1)), int(m.group(2))) if m else None


def detect_nvidia() -> tuple[bool, tuple[int, int] | None]:
    """(an NVIDIA GPU answers nvidia-smi, the driver's CUDA version)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return False, None
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False, None
    if out.returncode != 0 or "NVIDIA-SMI" not in out.stdout:
        return False, None
    return True, parse_driver_cuda(out.stdout)


def wheel_matches(name: str, version: str, py: tuple[int, int]) -> bool:
    """``torch-2.13.0+cpu-cp311-cp311-manylinux...whl`` matches version and CPython tag."""
    if not name.endswith(".whl"):
        return False
    parts = name[:-4].split("-")
    if len(parts) < 5 or parts[0] != "torch":
        return False
    if parts[1].split("+")[0] != version:
        return False
    return f"cp{py[0]}{py[1]}" in parts[2].split(".")


def find_links_dirs(pip_config_output: str, env: Mapping[str, str]) -> list[Path]:
    """Local folders among pip's configured find-links (from ``pip config list`` and env)."""
    values: list[str] = []
    for line in pip_config_output.splitlines():
        key, _, value = line.partition("=")
        if key.strip().endswith("find-links"):
            values.extend(value.strip().strip("'\"").split())
    values.extend(env.get("PIP_FIND_LINKS", "").split())
    dirs: list[Path] = []
    for value in values:
        if value.startswith("file://"):
            value = value[len("file://"):]
        elif "://" in value:
            continue
        path = Path(value).expanduser()
        if path.is_dir() and path not in dirs:
            dirs.append(path)
    return dirs


def local_cpu_wheel_available(python: Path | None, py: tuple[int, int]) -> bool:
    try:
        cmd = [str(python or sys.executable), "-m", "pip", "config", "list"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for folder in find_links_dirs(out, os.environ):
        for wheel in folder.glob("torch-*.whl"):
            if wheel_matches(wheel.name, TORCH_VERSION, py) and "+cu" not in wheel.name:
                return True
    return False


# ---------------------------------------------------------------------------- environment
def venv_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env["SDSTUDIO_VENV"]).expanduser() if env.get("SDSTUDIO_VENV") else REPO / ".venv"


def venv_python(venv: Path) -> Path:
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def stamp_key(pyproject: bytes, python_version: tuple[int, int], env: Mapping[str, str],
              has_nvidia_smi: bool, constraints: bytes = b"") -> str:
    """What the environment was built from. Cheap to compute: no subprocess."""
    h = hashlib.sha256()
    h.update(pyproject)
    h.update(constraints)
    parts = [
        f"bootstrap={BOOTSTRAP_VERSION}",
        f"torch={TORCH_VERSION}",
        f"python={python_version[0]}.{python_version[1]}",
        f"SDSTUDIO_TORCH={env.get('SDSTUDIO_TORCH', '')}",
        f"SDSTUDIO_TORCH_INDEX={env.get('SDSTUDIO_TORCH_INDEX', '')}",
        f"nvidia-smi={has_nvidia_smi}",
        f"SDSTUDIO_UNLOCKED={env.get('SDSTUDIO_UNLOCKED', '')}",
    ]
    h.update("\n".join(parts).encode())
    return h.hexdigest()


def current_key(env: Mapping[str, str] = os.environ) -> str:
    return stamp_key(
        (REPO / "pyproject.toml").read_bytes(),
        (sys.version_info[0], sys.version_info[1]),
        env,
        shutil.which("nvidia-smi") is not None,
        CONSTRAINTS.read_bytes() if CONSTRAINTS.is_file() else b"",
    )


def read_stamp(venv: Path) -> dict[str, object]:
    try:
        data = json.loads((venv / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_up_to_date(stamp: Mapping[str, object], key: str, extras: Sequence[str]) -> bool:
    """The environment was built from the same inputs and with every extra now needed."""
    have = stamp.get("extras")
    return (
        stamp.get("key") == key
        and isinstance(have, list)
        and set(extras) <= set(have)
    )


def write_stamp(venv: Path, key: str, extras: Sequence[str], plan: TorchPlan) -> None:
    data = {
        "key": key,
        "extras": sorted(set(extras)),
        "torch": plan.describe(),
        "python": sys.version.split()[0],
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    tmp = venv / (STAMP_NAME + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, venv / STAMP_NAME)


@dataclass
class Plan:
    venv: Path
    extras: tuple[str, ...]
    up_to_date: bool
    key: str
    torch: TorchPlan | None = None  # decided only when installing
    steps: list[str] = field(default_factory=list)


def say(message: str) -> None:
    sys.stderr.write(f"SD Studio: {message}\n")
    sys.stderr.flush()


def pip_install_args(extras: Sequence[str], env: Mapping[str, str] = os.environ) -> list[str]:
    """SD Studio itself (editable) with ``extras``, at the tested versions of
    installer/constraints.txt unless SDSTUDIO_UNLOCKED=1."""
    target = "." + (f"[{','.join(sorted(extras))}]" if extras else "")
    locked = CONSTRAINTS.is_file() and env.get("SDSTUDIO_UNLOCKED", "") not in ("1", "true")
    return ["-e", target, *(["-c", str(CONSTRAINTS.relative_to(REPO))] if locked else [])]


def _run_pip(python: Path, args: Sequence[str], log: Path, label: str) -> None:
    # --no-compile: byte-compiling every file of torch & co at install time costs more than
    # half the install; Python compiles the modules actually imported on first use instead.
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check",
           "--no-input", "--progress-bar", "off", "--no-compile", *args]
    show = sys.stderr.isatty()
    width = shutil.get_terminal_size((100, 20)).columns - 1
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if show and line.startswith(("Collecting", "Downloading", "Installing", "Building")):
                status = f"  {label}: {line.strip()}"[:width]
                sys.stderr.write("\r" + status.ljust(width) + "\r")
        rc = proc.wait()
        fh.write(f"==== exit {rc}\n")
    if show:
        sys.stderr.write(" " * width + "\r")
    if rc != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        sys.stderr.write("\n".join("  | " + t for t in tail) + "\n")
        raise SetupError(f"pip could not install {label} (exit {rc}); full log: {log}")


def _create_venv(venv: Path) -> None:
    if importlib.util.find_spec("venv") is None or importlib.util.find_spec("ensurepip") is None:
        raise SetupError(
            "Python's venv module is missing; install it (Debian/Ubuntu: "
            f"sudo apt install python3-venv, or python3.{sys.version_info[1]}-venv) and retry"
        )
    if venv.exists() and not venv_python(venv).exists():
        if (venv / "pyvenv.cfg").exists() or not any(venv.iterdir()):
            shutil.rmtree(venv)  # a broken environment of ours: start again
        else:
            raise SetupError(f"{venv} exists and is not a Python environment; move it away")
    say(f"creating the environment in {venv} ...")
    out = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True,
                         text=True)
    if out.returncode != 0 or not venv_python(venv).exists():
        text = (out.stderr + out.stdout).strip()
        if "ensurepip" in text:
            raise SetupError(
                "Python cannot create environments with pip here; install the python3-venv "
                f"package (sudo apt install python3.{sys.version_info[1]}-venv) and retry"
            )
        last = text.splitlines()[-1] if text else f"exit {out.returncode}"
        raise SetupError(f"could not create {venv}: {last}")


def make_plan(extras: Sequence[str], force: bool = False) -> Plan:
    venv = venv_dir()
    key = current_key()
    ok = (not force and venv_python(venv).exists()
          and is_up_to_date(read_stamp(venv), key, extras))
    return Plan(venv, tuple(extras), ok, key)


def decide_torch(python: Path | None) -> TorchPlan:
    env = os.environ
    forced = env.get("SDSTUDIO_TORCH", "").strip().lower()
    has_nvidia, driver_cuda = (False, None) if forced in ("cpu", "skip") else detect_nvidia()
    local = False
    if platform.system() != "Darwin" and not env.get("SDSTUDIO_TORCH_INDEX"):
        local = local_cpu_wheel_available(python, (sys.version_info[0], sys.version_info[1]))
    return choose_torch(platform.system(), has_nvidia, env, driver_cuda=driver_cuda,
                        local_cpu_wheel=local)


def setup(extras: Sequence[str] = (), force: bool = False, dry_run: bool = False) -> Path:
    """Make the environment ready; returns its python. Fast when the stamp matches."""
    plan = make_plan(extras, force)
    python = venv_python(plan.venv)
    if dry_run:
        torch = decide_torch(python if python.exists() else None)
        print(f"environment: {plan.venv} ({'up to date' if plan.up_to_date else 'to set up'})")
        print(f"python: {sys.executable} ({sys.version.split()[0]})")
        print(torch.describe())
        if torch.requirement:
            print(f"step: pip install {' '.join(torch.pip_args())}")
        print(f"step: pip install {' '.join(pip_install_args(extras))}")
        no_deps = no_deps_requirements(PYPROJECT.read_text(encoding="utf-8"))
        if no_deps:
            print(f"step: pip install --no-deps {' '.join(no_deps)}")
        if "test" in extras:
            print(f"step: pip install --no-deps {' '.join(TEST_NO_DEPS)}")
        return python
    if plan.up_to_date:
        return python
    start = time.monotonic()
    if not python.exists():
        _create_venv(plan.venv)
    torch = decide_torch(python)
    log = plan.venv / PIP_LOG_NAME
    (plan.venv / STAMP_NAME).unlink(missing_ok=True)
    if torch.requirement:
        say(f"installing {torch.requirement} ({torch.reason}) ...")
        _run_pip(python, torch.pip_args(), log, "torch")
    say("installing SD Studio and its dependencies" + (" with test tools" if extras else "")
        + " ...")
    _run_pip(python, pip_install_args(extras), log, "SD Studio")
    no_deps = no_deps_requirements(PYPROJECT.read_text(encoding="utf-8"))
    if no_deps:
        _run_pip(python, ["--no-deps", *no_deps], log, "upscaler architectures")
    if "test" in extras:
        _run_pip(python, ["--no-deps", *TEST_NO_DEPS], log, "test references")
    write_stamp(plan.venv, plan.key, extras, torch)
    say(f"environment ready in {time.monotonic() - start:.0f} s (pip log: {log})")
    return python


# ------------------------------------------------------------------------------- commands
def _exec(python: Path, args: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    cmd = [str(python), *args]
    environ = dict(os.environ if env is None else env)
    if os.name == "posix":
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(cmd[0], cmd, environ)  # keeps the pid: Ctrl+C and exit codes go straight
    try:
        return subprocess.call(cmd, env=environ)
    except KeyboardInterrupt:
        return 130


def cmd_run(args: Sequence[str], force: bool, dry_run: bool) -> int:
    python = setup((), force, dry_run)
    if dry_run:
        print(f"step: {python} -m sdstudio {' '.join(args)}".rstrip())
        return 0
    return _exec(python, ["-m", "sdstudio", *args])


def cmd_test(args: Sequence[str], force: bool, dry_run: bool) -> int:
    python = setup(("test",), force, dry_run)
    if dry_run:
        print(f"step: {python} -m ruff check .")
        print(f"step: {python} -m mypy")
        print(f"step: {python} -m pytest {' '.join(args)}".rstrip())
        return 0
    env = {**os.environ, **TEST_ENV}
    say("ruff check ...")
    lint_rc = subprocess.call([str(python), "-m", "ruff", "check", "."], cwd=REPO, env=env)
    say("mypy ...")  # files and flags: [tool.mypy] in pyproject.toml
    type_rc = subprocess.call([str(python), "-m", "mypy"], cwd=REPO, env=env)
    say("pytest ...")
    test_rc = subprocess.call([str(python), "-m", "pytest", *args], cwd=REPO, env=env)
    if test_rc == 5:
        say("error: pytest collected no tests; that is a failure, not a pass")
        return 1
    if test_rc != 0:
        say(f"tests failed (pytest exit {test_rc})")
        return test_rc
    problems = [f"{tool} found problems" for tool, rc in (("ruff", lint_rc), ("mypy", type_rc))
                if rc != 0]
    if problems:
        say(f"tests passed, but {' and '.join(problems)} (see above)")
        return 1
    say("all checks passed")
    return 0


# ------------------------------------------------------------------------------- desktop
def find_icon(repo: Path, suffixes: Sequence[str] = (".png", ".svg", ".ico")) -> Path | None:
    folder = repo / "resources" / "icons"
    for stem in ("sdstudio", "app", "icon"):
        for suffix in suffixes:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    if not folder.is_dir():
        return None
    candidates = sorted(p for p in folder.glob("*") if p.suffix in suffixes)
    return candidates[0] if candidates else None


def _desktop_quote(arg: str) -> str:
    """Quote one Exec argument per the freedesktop Desktop Entry spec."""
    escaped = re.sub(r'(["`$\\])', r"\\\1", arg).replace("%", "%%")
    return f'"{escaped}"'


def desktop_entry(python: str, repo: Path, icon: Path | None) -> str:
    """A freedesktop .desktop launcher starting SD Studio through main.py."""
    exec_line = " ".join(_desktop_quote(a) for a in (python, str(repo / "main.py")))
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.0",
        "Name=SD Studio",
        "GenericName=Image Generator",
        "Comment=Generate images with Stable Diffusion on your own computer",
        f"Exec={exec_line}",
        f"Path={repo}",
        f"Icon={icon if icon else 'applications-graphics'}",
        "Terminal=false",
        "Categories=Graphics;2DGraphics;RasterGraphics;",
        "Keywords=stable diffusion;ai;image;generate;inpaint;",
        "StartupNotify=true",
    ]
    return "\n".join(lines) + "\n"


def mac_command(python: str, repo: Path) -> str:
    return (
        "#!/bin/bash\n"
        "# SD Studio launcher: double-click in Finder (opens Terminal while it runs)\n"
        f'cd "{repo}" && exec "{python}" main.py "$@"\n'
    )


def windows_bat(python: str, repo: Path) -> str:
    return (
        "@echo off\r\n"
        "rem SD Studio launcher\r\n"
        f'cd /d "{repo}"\r\n'
        f'"{python}" main.py %*\r\n'
    )


def desktop_targets(system: str, home: Path, env: Mapping[str, str]) -> list[Path]:
    """Where the launcher goes on each platform."""
    if system == "Linux" or system.endswith("BSD"):
        data = Path(env["XDG_DATA_HOME"]) if env.get("XDG_DATA_HOME") else home / ".local/share"
        return [data / "applications" / "sdstudio.desktop"]
    if system == "Darwin":
        return [home / "Applications" / "SD Studio.command"]
    if system == "Windows":
        appdata = Path(env["APPDATA"]) if env.get("APPDATA") else home / "AppData/Roaming"
        return [appdata / "Microsoft/Windows/Start Menu/Programs/SD Studio.bat"]
    return []


def cmd_desktop(force: bool, dry_run: bool) -> int:
    system = platform.system()
    targets = desktop_targets(system, Path.home(), os.environ)
    if not targets:
        raise SetupError(f"no desktop integration for {system}; start with: python3 main.py")
    python = sys.executable
    if system == "Darwin":
        content = mac_command(python, REPO)
    elif system == "Windows":
        content = windows_bat(python, REPO)
    else:
        content = desktop_entry(python, REPO, find_icon(REPO))
    if dry_run:
        print(f"step: write {targets[0]}")
        sys.stdout.write(content)
        return 0
    setup((), force, False)  # the launcher should start without a long silent install
    target = targets[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content, encoding="utf-8", newline="")
    if system != "Windows":
        target.chmod(0o755)
    say(f"launcher written: {target}")
    if system == "Windows":
        say("it is listed in the Start menu; to pin it with an icon, create a shortcut to it "
            "and pick resources\\icons in its properties")
    elif system != "Darwin" and shutil.which("update-desktop-database"):
        subprocess.run(["update-desktop-database", str(target.parent)], capture_output=True)
    return 0


# ---------------------------------------------------------------------------------- main
USAGE = """usage: python3 installer/bootstrap.py [--dry-run] [--force] [--venv DIR] COMMAND [ARGS]

commands:
  run [ARGS...]       set up, then start SD Studio (python -m sdstudio ARGS)
  test [PYTEST...]    set up with test tools, then ruff check, mypy and the whole pytest suite
  setup               set up the environment only
  desktop             set up, then install a desktop / menu launcher

environment: SDSTUDIO_TORCH=cpu|cuda|skip|<pip requirement>, SDSTUDIO_TORCH_INDEX=<url>,
             SDSTUDIO_VENV=<dir>, SDSTUDIO_UNLOCKED=1 (not the tested versions)
"""
OPTIONS = ("--dry-run", "--force", "--venv")


def parse_args(argv: Sequence[str]) -> tuple[str, list[str], dict[str, object]]:
    """(command, passthrough args, options). Options go before the command, or right after
    it (for run/test: before the first argument that is not one of ours)."""
    opts: dict[str, object] = {"dry_run": False, "force": False}
    rest = list(argv)
    command = ""

    def take_options() -> None:
        while rest and rest[0] in OPTIONS:
            flag = rest.pop(0)
            if flag == "--venv":
                if not rest:
                    raise SetupError("--venv needs a folder")
                os.environ["SDSTUDIO_VENV"] = rest.pop(0)
            else:
                opts[flag[2:].replace("-", "_")] = True

    take_options()
    if rest:
        command = rest.pop(0)
    take_options()
    return command, rest, opts


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        command, rest, opts = parse_args(argv)
        force, dry_run = bool(opts["force"]), bool(opts["dry_run"])
        if command in ("", "-h", "--help", "help"):
            sys.stdout.write(USAGE)
            return 0 if command else 2
        if command == "run":
            return cmd_run(rest, force, dry_run)
        if command == "test":
            return cmd_test(rest, force, dry_run)
        if command in ("setup", "desktop") and rest:
            raise SetupError(f"{command} takes no arguments (got {' '.join(rest)})")
        if command == "setup":
            have = read_stamp(venv_dir()).get("extras")
            setup(("test",) if isinstance(have, list) and "test" in have else (), force, dry_run)
            return 0
        if command == "desktop":
            return cmd_desktop(force, dry_run)
        raise SetupError(f"unknown command {command!r}; use run, test, setup or desktop")
    except SetupError as exc:
        sys.stderr.write(f"sdstudio setup: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("sdstudio setup: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
