"""The layering rules of DESIGN §2, checked on the source with ``ast``."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "sessionctl"
CLI_ONLY = ("typer", "rich", "prompt_toolkit")
# heavy runtime -> the only package directory that may import it
HEAVY_HOME = {
    "litellm": "llm",
    "faiss": "backend",
    "onnxruntime": "embed",
    "tokenizers": "embed",
    "psycopg": "backend",  # backend/postgres: only for a postgresql:// store
}


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    top: str  # first component of the imported module
    module_level: bool  # executed on import of the module (not inside a function)

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line} imports {self.top}"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def visit(nodes: Iterable[ast.AST], in_function: bool) -> Iterator[Import]:
        for child in nodes:
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                yield from visit(child.orelse, in_function)  # the body never runs
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(path, child.lineno, alias.name.split(".")[0], not in_function)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield Import(path, child.lineno, child.module.split(".")[0], not in_function)
            elif isinstance(child, ast.Call) and _dynamic_import(child):
                yield Import(path, child.lineno, _dynamic_import(child), not in_function)
            inner = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            yield from visit(ast.iter_child_nodes(child), inner)

    yield from visit(tree.body, False)


def _dynamic_import(call: ast.Call) -> str:
    """``importlib.import_module("x.y")`` / ``__import__("x")`` with a literal name."""
    func = call.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("__import__", "import_module")
    )
    if named and call.args and isinstance(call.args[0], ast.Constant):
        value = call.args[0].value
        if isinstance(value, str):
            return value.split(".")[0]
    return ""


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _subpackage(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


def _all_imports() -> list[Import]:
    return [imp for path in _sources() for imp in _imports(path)]


def test_the_walker_sees_the_package() -> None:
    found = _all_imports()
    assert len(_sources()) >= 15
    assert any(i.top == "typer" for i in found)  # the CLI is seen
    assert any(i.top == "sessionctl" for i in found)


def test_walker_classifies_module_level_and_lazy_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "import faiss\n"
        "try:\n    import litellm\nexcept ImportError:\n    pass\n"
        "if TYPE_CHECKING:\n    import onnxruntime\nelse:\n    import numpy\n"
        "def f():\n    import tokenizers\n    from rich.console import Console\n"
        "class C:\n    def m(self):\n        importlib.import_module('click.core')\n"
    )
    found = {(i.top, i.module_level) for i in _imports(probe) if i.top != "typing"}
    assert found == {
        ("faiss", True),
        ("litellm", True),
        ("numpy", True),
        ("tokenizers", False),
        ("rich", False),
        ("click", False),
    }


def test_only_the_cli_imports_typer_rich_prompt_toolkit() -> None:
    bad = [str(i) for i in _all_imports() if i.top in CLI_ONLY and _subpackage(i.path) != "cli"]
    assert bad == []


def test_nothing_imports_click_directly() -> None:
    assert [str(i) for i in _all_imports() if i.top == "click"] == []


@pytest.mark.parametrize("module", sorted(HEAVY_HOME))
def test_heavy_runtimes_stay_in_their_module(module: str) -> None:
    home = HEAVY_HOME[module]
    bad = [str(i) for i in _all_imports() if i.top == module and _subpackage(i.path) != home]
    assert bad == []


def test_heavy_runtimes_are_imported_lazily() -> None:
    bad = [str(i) for i in _all_imports() if i.top in HEAVY_HOME and i.module_level]
    assert bad == []


def test_ruff_check_is_clean() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        probe = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip("ruff is not installed")
        command = [sys.executable, "-m", "ruff"]
    else:
        command = [ruff]
    result = subprocess.run(
        [*command, "check", "--no-cache", "sessionctl", "tests"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_command_annotations_are_objects_not_strings() -> None:
    """Typer evals string annotations of the invoked command on every call (~1 ms each).

    So the command modules and the root callback do without
    ``from __future__ import annotations``.
    """
    from sessionctl.cli import app, registry

    registry.load_all()
    callbacks = [info.callback for info in registry.commands.registered_commands]
    callbacks.append(app.root)
    strings = [
        f"{f.__module__}.{f.__name__}: {name}"
        for f in callbacks
        if f is not None
        for name, annotation in f.__annotations__.items()
        if isinstance(annotation, str)
    ]
    assert len(callbacks) > 15 and strings == []
