"""Import boundaries (docs/architecture.md), checked on the source with the AST:

- ``sdstudio/core`` imports no Qt, torch, diffusers, transformers, accelerate or safetensors,
  and none of the upper layers (engine, worker, ui, storage, batch, app, cli);
- ``sdstudio/ui`` and ``sdstudio/storage`` import no torch & co and not ``sdstudio.engine``
  (storage no Qt either);
- outside ``sdstudio/engine`` nothing imports torch & co or ``sdstudio.engine`` at module
  level (the worker, app, cli and batch do it inside functions, after the window is up or the
  input is checked).

And in a fresh interpreter: importing the torch-free packages leaves torch out of sys.modules.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "sdstudio"
HEAVY = ("torch", "diffusers", "transformers", "accelerate", "safetensors", "torchvision",
         "xformers", "huggingface_hub", "tokenizers")
QT = ("PySide6", "PyQt5", "PyQt6", "shiboken6", "pyqtgraph", "qtpy", "superqt")
UPPER = ("sdstudio.engine", "sdstudio.worker", "sdstudio.ui", "sdstudio.storage",
         "sdstudio.batch", "sdstudio.app", "sdstudio.cli")


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    module: str
    top_level: bool  # executed when the module is imported (not in a function/TYPE_CHECKING)

    def __str__(self) -> str:
        where = "module level" if self.top_level else "in a function"
        return f"{self.file}:{self.line}: {self.module} ({where})"


def _module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, path: Path, root: Path) -> list[str]:
    if node.level:
        package = _module_name(path, root).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        base = package[: len(package) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    # "from sdstudio import engine" imports sdstudio.engine
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*"]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, root: Path = REPO) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:  # typing only: never executed
                    visit(ast.Module(body=[stmt], type_ignores=[]), False)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), top_level)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(path, child.lineno, alias.name, top_level))
            elif isinstance(child, ast.ImportFrom):
                for name in _resolve(child, path, root):
                    found.append(Import(path, child.lineno, name, top_level))
            else:
                visit(child, top_level)

    visit(tree, True)
    # importlib.import_module("torch") with a literal is an import too
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module" and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append(Import(path, node.lineno, node.args[0].value, False))
    return found


def _matches(module: str, names: tuple[str, ...]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def _files(sub: str) -> list[Path]:
    folder = PKG / sub if sub else PKG
    if folder.suffix == ".py":
        return [folder] if folder.exists() else []
    return sorted(folder.rglob("*.py")) if folder.exists() else []


def _violations(files: list[Path], banned: tuple[str, ...], top_level_only: bool) -> list[str]:
    return [
        str(imp)
        for f in files
        for imp in imports_of(f)
        if _matches(imp.module, banned) and (imp.top_level or not top_level_only)
    ]


def test_core_is_pure_python() -> None:
    files = _files("core")
    assert files, "sdstudio/core is missing"
    bad = _violations(files, HEAVY + QT + UPPER, top_level_only=False)
    assert not bad, "sdstudio/core must not import these:\n" + "\n".join(bad)


def test_ui_never_touches_torch_or_the_engine() -> None:
    bad = _violations(_files("ui"), (*HEAVY, "sdstudio.engine"), top_level_only=False)
    assert not bad, "sdstudio/ui must not import these:\n" + "\n".join(bad)


def test_storage_has_no_torch_engine_or_qt() -> None:
    bad = _violations(_files("storage"), (*HEAVY, *QT, "sdstudio.engine", "sdstudio.ui",
                                          "sdstudio.worker"), top_level_only=False)
    assert not bad, "sdstudio/storage must not import these:\n" + "\n".join(bad)


def test_only_the_engine_imports_torch_at_module_level() -> None:
    engine = PKG / "engine"
    files = [f for f in _files("") if engine not in f.parents]
    bad = _violations(files, (*HEAVY, "sdstudio.engine"), top_level_only=True)
    assert not bad, (
        "only sdstudio/engine may import torch & co (and others import sdstudio.engine only "
        "inside functions):\n" + "\n".join(bad)
    )


def test_engine_knows_nothing_of_qt() -> None:
    bad = _violations(_files("engine"), (*QT, "sdstudio.ui", "sdstudio.worker", "sdstudio.app"),
                      top_level_only=False)
    assert not bad, "sdstudio/engine must not import these:\n" + "\n".join(bad)


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    src = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import torch.nn\n"
        "from . import request\n"
        "from ..engine import runner\n"
        "if TYPE_CHECKING:\n    import diffusers\n"
        "def f():\n    import transformers\n    from sdstudio.engine import Engine\n"
    )
    probe = tmp_path / "sdstudio" / "core" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(src)
    got = {(i.module, i.top_level) for i in imports_of(probe, root=tmp_path)}
    assert ("torch.nn", True) in got
    assert ("sdstudio.core.request", True) in got
    assert ("sdstudio.engine.runner", True) in got
    assert ("diffusers", False) in got
    assert ("transformers", False) in got
    assert ("sdstudio.engine", False) in got and ("sdstudio.engine.Engine", False) in got


def _torch_free_modules() -> list[str]:
    names = ["sdstudio", "sdstudio.cli", "sdstudio.__main__"]
    for sub in ("core", "storage", "ui"):
        for f in _files(sub):
            names.append(_module_name(f))
    return names


def test_importing_torch_free_packages_leaves_torch_out() -> None:
    modules = _torch_free_modules()
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "from sdstudio import cli\n"
        "cli.build_parser()\n"  # registering every subcommand stays torch-free too
        f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))\n"
    )
    env = {"QT_QPA_PLATFORM": "offscreen", "HF_HUB_OFFLINE": "1"}
    import os

    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing {len(modules)} torch-free modules loaded {loaded}"


@pytest.mark.parametrize("module", ["sdstudio.cli", "sdstudio.core.tokens"])
def test_cli_start_is_light(module: str) -> None:
    """`sdstudio --help` must not pay for torch: the CLI imports it only to generate."""
    code = f"import sys, {module}; print('PySide6' in sys.modules, 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.split() == ["False", "False"], proc.stderr


# --------------------------------------------------------------- the test/dev package
TESTING = ("sdstudio.testing",)


def _function_lines(path: Path, name: str) -> set[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {line for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name
            for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)}


def _testing_imports(root: Path) -> tuple[list[str], set[int]]:
    """Imports of sdstudio.testing outside that package, less those inside app.py's
    ``_engine_factory`` (the SDSTUDIO_FAKE_ENGINE=1 switch); and that function's lines."""
    pkg = root / "sdstudio"
    app = pkg / "app.py"
    allowed = _function_lines(app, "_engine_factory") if app.exists() else set()
    bad: dict[tuple[Path, int], str] = {}  # one line per import statement
    for f in sorted(pkg.rglob("*.py")):
        if pkg / "testing" in f.parents:
            continue
        for imp in imports_of(f, root):
            if _matches(imp.module, TESTING) and not (f == app and imp.line in allowed):
                bad.setdefault((f, imp.line), str(imp))
    return list(bad.values()), allowed


def test_only_the_fake_engine_switch_imports_the_testing_package() -> None:
    """sdstudio.testing (the fake engine) is for tests and SDSTUDIO_FAKE_ENGINE=1 only."""
    bad, allowed = _testing_imports(REPO)
    assert allowed, "sdstudio/app.py has no _engine_factory"
    assert not bad, ("only sdstudio.app._engine_factory may import sdstudio.testing:\n"
                     + "\n".join(bad))


def test_the_testing_check_sees_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "sdstudio"
    (pkg / "ui").mkdir(parents=True)
    (pkg / "testing").mkdir()
    (pkg / "ui" / "panel.py").write_text("def f():\n    from sdstudio.testing import fake\n")
    (pkg / "testing" / "fake.py").write_text("from sdstudio.testing import other\n")
    (pkg / "app.py").write_text(
        "import importlib\n"
        "def _engine_factory():\n    from sdstudio.testing.fake_engine import f\n"
        "def other():\n    from .testing import fake_engine\n"
        "    importlib.import_module('sdstudio.testing.fake_engine')\n")
    bad, allowed = _testing_imports(tmp_path)
    assert allowed == {2, 3}
    where = [line.split(": ")[0].rsplit("sdstudio/", 1)[1] for line in bad]
    assert where == ["app.py:5", "app.py:6", "ui/panel.py:2"], bad


def test_the_fake_engine_needs_no_torch(tmp_path: Path) -> None:
    """The fake runs where the engine's dependencies are missing (SDSTUDIO_FAKE_ENGINE=1): it
    uses only the engine's torch-free helpers, and those stay torch-free."""
    bad = _violations(_files("testing"), HEAVY, top_level_only=False)
    assert not bad, "sdstudio/testing must not import these:\n" + "\n".join(bad)
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from PIL import Image\n"
        "from sdstudio.core.errors import ModelError\n"
        "from sdstudio.core.request import GenerationRequest\n"
        "from sdstudio.testing.fake_engine import FakeEngine\n"
        "root = Path(sys.argv[1])\n"
        "Image.new('RGB', (64, 64)).save(root / 'init.png')\n"
        "Image.new('L', (64, 64), 255).save(root / 'mask.png')\n"
        "req = GenerationRequest(prompt='a cat', width=64, height=64, steps=2, seed=1)\n"
        "engine = FakeEngine()\n"
        "engine.generate(req)\n"
        "engine.generate(req.replace(init_image=str(root / 'init.png'), strength=0.5))\n"
        "engine.generate(req.replace(init_image=str(root / 'init.png'),\n"
        "                            mask=str(root / 'mask.png'), inpaint_only_masked=True))\n"
        "for bad in (req.replace(prompt='<lora:x>'), req.replace(vae='x'),\n"
        "            req.replace(model=str(root)), req.replace(model='x')):\n"
        "    try:\n"
        "        engine.generate(bad)\n"
        "    except ModelError:\n"
        "        pass\n"
        f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))\n"
    )
    import os

    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
