"""The layering rules of DESIGN §2, checked on the source with ``ast``."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
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
    # the MCP SDK and its web stack: only the `mcp` command
    "mcp": "mcp",
    "mcp_types": "mcp",
    "uvicorn": "mcp",
    "starlette": "mcp",
    "anyio": "mcp",
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
    # the build tools render the CLI (man page, completions, --help): they read it too
    faces = ("cli", "_build")
    bad = [str(i) for i in _all_imports() if i.top in CLI_ONLY and _subpackage(i.path) not in faces]
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


@pytest.mark.slow
def test_mypy_strict_is_clean(tmp_path: Path) -> None:
    """sessionctl/ and the tests, as the README promises (about a minute: a cold cache)."""
    probe = subprocess.run([sys.executable, "-m", "mypy", "--version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("mypy is not installed")
    tests = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("*.py"))
    targets = ["sessionctl", *tests, "tests/contract"]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), *targets],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},  # this checkout, not an installed copy
        timeout=600,
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


# -- the seam: nothing above the backend touches files, FAISS or a backend's internals ------

SERVICE = PACKAGE / "service"
FACES = [PACKAGE / "cli", PACKAGE / "mcp"]  # mcp/ once it exists
# Modules still allowed to reach below the seam, each with the reason it is temporary.
SEAM_EXCEPTIONS: set[Path] = set()
# Imported by nothing above the backend (the service: no file system at all).
SERVICE_BANNED = (
    "os", "errno", "pathlib", "stat", "shutil", "tempfile", "fcntl", "glob", "mmap",
    "faiss", "sessionctl.fsutil", "sessionctl.backend.files",
)  # fmt: skip
# The faces keep user files (import FILE, export -o, REPL history, config.toml), so
# they may use os and pathlib, but never a backend's internals or FAISS.
FACE_BANNED = ("faiss", "sessionctl.backend.files")
# Builtins that reach the file system.
FILE_CALLS = ("open", "Path")


@dataclass(frozen=True)
class Leak:
    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        where = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path
        return f"{where}:{self.line} {self.what}"


def _protocol_members(protocol: type) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")}


def _runtime_modules(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, dotted module) of every import that runs (function-level too, not
    ``if TYPE_CHECKING``); ``from a import b`` yields ``a`` and ``a.b``."""

    def visit(nodes: Iterable[ast.AST]) -> Iterator[tuple[int, str]]:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield node.lineno, alias.name
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield node.lineno, node.module
                for alias in node.names:
                    yield node.lineno, f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Call) and _dynamic_import(node):
                first = node.args[0]
                assert isinstance(first, ast.Constant)
                yield node.lineno, str(first.value)
            yield from visit(ast.iter_child_nodes(node))

    yield from visit(tree.body)


def _seam_leaks(path: Path, banned: Sequence[str], *, file_calls: bool) -> list[Leak]:
    """Imports of ``banned`` modules, file-system builtins and calls on a backend (or its
    vector store) that its Protocol does not have."""
    from sessionctl.backend.base import SessionStore, VectorStore

    store_api, vector_api = _protocol_members(SessionStore), _protocol_members(VectorStore)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    leaks = sorted(
        {
            Leak(path, line, f"imports {_banned_part(module, banned)}")
            for line, module in _runtime_modules(tree)
            if _banned_part(module, banned)
        },
        key=lambda leak: (leak.line, leak.what),
    )
    for node in ast.walk(tree):
        if (
            file_calls
            and isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FILE_CALLS
        ):
            leaks.append(Leak(path, node.lineno, f"calls {node.func.id}()"))
        if not isinstance(node, ast.Attribute) or not isinstance(node.value, ast.Attribute):
            continue
        owner = node.value
        if owner.attr in ("backend", "_backend") and node.attr not in store_api:
            leaks.append(Leak(path, node.lineno, f"uses backend.{node.attr} (not a SessionStore)"))
        elif (
            owner.attr == "vectors"
            and isinstance(owner.value, ast.Attribute)
            and owner.value.attr in ("backend", "_backend")
            and node.attr not in vector_api
        ):
            leaks.append(Leak(path, node.lineno, f"uses vectors.{node.attr} (not a VectorStore)"))
    return leaks


def _banned_part(module: str, banned: Sequence[str]) -> str:
    """The longest prefix of ``module`` that names a module of the program (``from a.b
    import Name`` yields ``a.b.Name``: reported as ``a.b``), when it is banned; else ""."""
    for ban in banned:
        if module == ban or module.startswith(ban + "."):
            parts = module.split(".")
            while len(parts) > 1 and not _is_module(".".join(parts)):
                parts.pop()
            return ".".join(parts)
    return ""


def _is_module(dotted: str) -> bool:
    if not dotted.startswith("sessionctl"):
        return "." not in dotted
    base = REPO / Path(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _modules_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py")) if folder.is_dir() else []


def test_the_service_touches_no_file_and_no_backend_internals() -> None:
    modules = _modules_under(SERVICE)
    assert len(modules) >= 10
    leaks = [
        str(leak)
        for path in modules
        if path not in SEAM_EXCEPTIONS
        for leak in _seam_leaks(path, SERVICE_BANNED, file_calls=True)
    ]
    assert leaks == []


def test_the_faces_reach_the_store_only_through_the_seam() -> None:
    modules = [path for folder in FACES for path in _modules_under(folder)]
    assert len(modules) >= 10
    leaks = [
        str(leak) for path in modules for leak in _seam_leaks(path, FACE_BANNED, file_calls=False)
    ]
    assert leaks == []


def test_the_seam_exceptions_still_need_to_be_exceptions() -> None:
    """An exception that became clean is removed from the list, so it cannot regress."""
    for path in SEAM_EXCEPTIONS:
        assert path.is_file(), f"{path} is gone: remove it from SEAM_EXCEPTIONS"
        assert _seam_leaks(path, SERVICE_BANNED, file_calls=True), (
            f"{path.name} is clean now: remove it from SEAM_EXCEPTIONS"
        )


def test_the_seam_check_sees_each_kind_of_leak(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "import json\n"
        "if TYPE_CHECKING:\n    from pathlib import Path\n"
        "from sessionctl.backend import files\n"
        "def f(store):\n"
        "    import os\n"
        "    from sessionctl.backend.files.transcript import Header\n"
        "    store.backend.exists('a')\n"
        "    store.backend.path('a')\n"
        "    store.backend.vectors.search(1)\n"
        "    store.backend.vectors.sessions\n"
        "    return open('x')\n"
    )
    found = {leak.what for leak in _seam_leaks(probe, SERVICE_BANNED, file_calls=True)}
    assert found == {
        "imports sessionctl.backend.files",
        "imports os",
        "imports sessionctl.backend.files.transcript",
        "uses backend.path (not a SessionStore)",
        "uses vectors.sessions (not a VectorStore)",
        "calls open()",
    }


def test_nothing_runs_the_build_tools() -> None:
    """``sessionctl/_build`` generates files at build time; the program never imports it."""
    build = PACKAGE / "_build"
    bad = [
        f"{path.relative_to(REPO)}:{line}"
        for path in _sources()
        if build not in path.parents
        for line, module in _runtime_modules(ast.parse(path.read_text(encoding="utf-8")))
        if module == "sessionctl._build" or module.startswith("sessionctl._build.")
    ]
    assert bad == []


# -- no import cycles ------------------------------------------------------------------------


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports: module-level and function-level imports
    both count, ``if TYPE_CHECKING`` ones do not. ``from pkg import x`` is an edge to
    ``pkg.x`` when that is a module, else to ``pkg``."""
    paths = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()

        def visit(
            nodes: Iterable[ast.AST], package: str = package, edges: set[str] = edges
        ) -> None:
            for node in nodes:
                if isinstance(node, ast.If) and _is_type_checking(node.test):
                    visit(node.orelse)
                    continue
                targets: list[tuple[str, list[str]]] = []
                if isinstance(node, ast.Import):
                    targets = [(alias.name, []) for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                        base = ".".join([*up, *([node.module] if node.module else [])])
                    targets = [(base, [alias.name for alias in node.names])]
                for base, names in targets:
                    found = [f"{base}.{n}" for n in names if f"{base}.{n}" in paths]
                    if len(found) < len(names) or not names:
                        module = base
                        while module and module not in paths:
                            module = module.rpartition(".")[0]
                        if module:
                            found.append(module)
                    edges.update(found)
                visit(ast.iter_child_nodes(node))

        visit(tree.body)
        edges.discard(name)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_anywhere_in_the_package() -> None:
    graph = _import_graph(PACKAGE)
    assert len(graph) >= 60 and graph["sessionctl.service.store"]
    assert _cycles(graph) == []


def test_the_cycle_check_counts_lazy_imports_but_not_type_checking_ones(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import c\n")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    import pkg.a\n")  # a <-> b, lazily
    (pkg / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import d\n"
    )
    (pkg / "sub" / "d.py").write_text("from . import c\n")  # c -> d only for mypy: no cycle
    graph = _import_graph(pkg)
    assert graph["pkg.sub.d"] == {"pkg.sub.c"} and graph["pkg.sub.c"] == set()
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]
