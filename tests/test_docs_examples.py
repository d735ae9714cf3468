"""Every example in README.md and docs/*.md runs, so none of them can rot.

Conventions (README.md says them too):

- `` ```sh `` blocks run in document order, each in ``bash -euo pipefail``, in a
  throw-away $HOME where `sessionctl` is this checkout and the data and config
  dirs are the platform defaults under that $HOME. State carries over between
  the blocks of one file. A block preceded by ``<!-- not run: reason -->`` is
  skipped. The model server is a local stand-in (tests/llm_server.py):
  SESSIONCTL_API_BASE points at it, and the URL the docs use for a local
  server, http://127.0.0.1:8080/v1, is replaced by its address. It answers
  "Hello from the fake model." unless the block is preceded by
  ``<!-- the model answers: [JSON list] -->``: one ``Reply`` (its fields as
  a JSON object, e.g. ``tool_calls``) per request of that block, in order.
- `` ```python `` blocks run as scripts, in the same order and place; one
  followed by "It prints:" and a `` ```text `` block must print exactly that.
- ``>>>`` examples run as doctests (docs/python-api.md).
- `` ```toml `` blocks must be valid config files.
- `` ```sql `` blocks (docs/postgres.md only) are the row-level security recipe,
  which tests/test_postgres_rls.py applies to a real server as written.
- `` ```console ``, `` ```cron ``, `` ```json `` and `` ```text `` blocks are
  illustrations. README's first block holds the set-up commands: its second
  line must be the test command .ci/run runs (running it here would recurse).
"""

from __future__ import annotations

import doctest
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO
from llm_server import FakeLLMServer, Reply

from sessionctl.config import validate_setting

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DOCUMENTED_SERVER = "http://127.0.0.1:8080/v1"
FENCE = re.compile(r"^```([\w-]*)\s*$")
NOT_RUN = re.compile(r"^<!-- not run: .+ -->$")
ANSWERS = re.compile(r"^<!-- the model answers: (.+) -->$")

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib


@dataclass
class Block:
    """One fenced code block."""

    lang: str
    body: str
    line: int  # of the opening fence, 1-based
    skipped: bool  # preceded by <!-- not run: ... -->
    prints: str | None = None  # the "It prints:" text block after a python block
    answers: str | None = None  # JSON list of Reply fields, from <!-- the model answers: -->


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    before: list[str] = []  # non-blank lines before the current block
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            if lines[i].strip():
                before.append(lines[i].strip())
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        body = "\n".join(lines[i + 1 : end]) + "\n"
        block = Block(match.group(1), body, i + 1, bool(before and NOT_RUN.match(before[-1])))
        scripted = ANSWERS.match(before[-1]) if before else None
        block.answers = scripted.group(1) if scripted else None
        if (
            block.lang == "text"
            and found
            and found[-1].lang == "python"
            and before[-1:] == ["It prints:"]
        ):
            found[-1].prints = body
        found.append(block)
        before = []
        i = end + 1
    return found


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture
def doc_env(tmp_path: Path, server: FakeLLMServer) -> dict[str, str]:
    """A user's environment: fake $HOME, default data/config dirs, sessionctl on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sessionctl").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m sessionctl "$@"\n')
    (bin_dir / "sessionctl").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("SESSIONCTL_HOME", "SESSIONCTL_CONFIG")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", SESSIONCTL_API_BASE=server.base_url)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q", str(cwd)], check=True, env=env)
    else:  # the README pipes `git diff` into chat
        (bin_dir / "git").write_text("#!/bin/sh\necho 'diff --git a/x b/x'\n")
        (bin_dir / "git").chmod(0o755)
    env["DOC_CWD"] = str(cwd)
    return env


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_shell_and_python_examples_run(
    doc: Path, doc_env: dict[str, str], server: FakeLLMServer
) -> None:
    if shutil.which("jq") is None:
        pytest.skip("the examples use jq (.ci/run installs it)")
    found = blocks(doc)
    setup = found[0] if doc.name == "README.md" else None  # checked against .ci/run below
    runnable = [b for b in found if b.lang in ("sh", "python") and not b.skipped and b is not setup]
    for block in runnable:
        code = block.body.replace(DOCUMENTED_SERVER, server.base_url)
        if block.answers is not None:
            server.push(*(Reply(**fields) for fields in json.loads(block.answers)))
        if block.lang == "sh":
            argv = ["bash", "--norc", "--noprofile", "-euo", "pipefail", "-c", code]
        else:
            argv = [sys.executable, "-c", code]
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=doc_env,
            cwd=doc_env["DOC_CWD"],
            timeout=120,
        )
        where = f"{doc.name}:{block.line}"
        assert done.returncode == 0, f"{where} failed:\n{code}\nstderr:\n{done.stderr}"
        if block.prints is not None:
            assert done.stdout == block.prints, f"{where} printed something else"
    assert runnable or doc.name not in ("README.md", "python-api.md")


def test_readme_starts_with_the_setup_commands_ci_runs() -> None:
    first = blocks(REPO / "README.md")[0]
    install, test = first.body.splitlines()
    assert first.lang == "sh" and first.line == 3
    assert install.startswith("python3 -m venv .venv && .venv/bin/pip install -q . ")
    assert test in (REPO / ".ci" / "run").read_text()


def test_python_api_doctests(home: Path) -> None:
    result = doctest.testfile(
        str(REPO / "docs" / "python-api.md"),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    assert result.attempted > 30
    assert result.failed == 0


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_config_examples_are_valid(doc: Path) -> None:
    for block in blocks(doc):
        if block.lang == "toml":
            for key, value in tomllib.loads(block.body).items():
                validate_setting(key, value)


def test_every_block_is_runnable_or_says_why_not() -> None:
    for doc in DOCS:
        for block in blocks(doc):
            known: tuple[str, ...] = ("", "sh", "python", "text", "console", "cron", "json", "toml")
            if doc.name == "postgres.md":
                known += ("sql",)  # the recipes tests/test_postgres_rls.py runs
            assert block.lang in known, (
                f"{doc.name}:{block.line}: a ```{block.lang} block is neither run nor known"
            )
