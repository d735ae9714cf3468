"""The committed completion scripts, run in their real shells (bash, zsh, fish).

Each shell sources the script from ``completions/`` and completes against a
``sessionctl`` on PATH that runs this checkout. test_generated.py keeps those
scripts equal to what the app generates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Cli

COMPLETIONS = REPO / "completions"
HEAVY = ("litellm", "faiss", "onnxruntime", "numpy", "tokenizers", "httpx", "openai", "psycopg")


def need(shell: str) -> str:
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed (.ci/run installs it)")
    return path


@pytest.fixture
def env(tmp_path: Path, home: Path, cli: Cli) -> dict[str, str]:
    """A PATH whose `sessionctl` is this checkout, and a home with three sessions."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "sessionctl"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m sessionctl "$@"\n')
    wrapper.chmod(0o755)
    for name in ("work", "weekly", "fun", "gone"):
        assert cli("store", "-s", name, f"question in {name}", "answer").exit_code == 0
    assert cli("delete", "gone").exit_code == 0
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def message_ids(cli: Cli, session: str) -> list[str]:
    result = cli("recent", "-s", session, "--json")
    import json

    return [m["id"] for m in json.loads(result.stdout)]


def run(argv: list[str], env: dict[str, str], script: str | None = None) -> str:
    done = subprocess.run(
        argv, input=script, capture_output=True, text=True, env=env, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bash(env: dict[str, str], cli: Cli) -> None:
    bash = need("bash")
    last, first = message_ids(cli, "work")[::-1]
    cases = [
        "sessionctl fo",
        "sessionctl fork ",
        "sessionctl fork wo",
        "sessionctl --home $SESSIONCTL_HOME delete f",
        "sessionctl --home config fo",  # `config` is --home's value, not the command
        "sessionctl drop -s work ",
        "sessionctl drop work ",
        "sessionctl clear ",
        "sessionctl export work --format ",
        "sessionctl export work -f m",
        "sessionctl recent -r ",
        "sessionctl recent --js",
        "sessionctl config ",
        "sessionctl config set color ",
        "sessionctl restore ",
    ]
    lines = [f"source {COMPLETIONS / 'sessionctl.bash'}"]
    for case in cases:
        lines += [
            f"COMP_LINE='{case}'",
            'eval "COMP_WORDS=($COMP_LINE)"',
            '[[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")',
            "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))",
            '_sessionctl sessionctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"',
            'echo "${COMPREPLY[*]}"',
        ]
    out = run([bash, "--norc", "--noprofile"], env, "\n".join(lines) + "\n").splitlines()
    got = dict(zip(cases, (sorted(line.split()) for line in out), strict=True))
    assert got["sessionctl fo"] == ["fork"]
    assert got["sessionctl fork "] == ["fun", "weekly", "work"]
    assert got["sessionctl fork wo"] == ["work"]
    assert got["sessionctl --home $SESSIONCTL_HOME delete f"] == ["fun"]
    assert got["sessionctl --home config fo"] == ["fork"]
    assert got["sessionctl drop -s work "] == sorted([first, last])
    assert got["sessionctl drop work "] == sorted([first, last])  # the session as an argument
    assert got["sessionctl clear "] == ["fun", "weekly", "work"]
    assert got["sessionctl export work --format "] == sorted(
        ["json", "jsonl", "markdown", "md", "openai", "openai-ft", "sharegpt"]
    )
    assert got["sessionctl export work -f m"] == ["markdown", "md"]  # not file names
    assert got["sessionctl recent -r "] == ["assistant", "llm", "system", "tool", "user"]
    assert got["sessionctl recent --js"] == ["--json"]
    assert got["sessionctl config "] == ["get", "path", "set", "show", "unset"]
    assert got["sessionctl config set color "] == ["always", "auto", "never"]
    assert got["sessionctl restore "] == ["gone"]  # the trash, not the live sessions


# Types each line plus TAB into an interactive zsh (in a pty), then ^T, bound
# to a widget that prints the edited line between markers.
ZSH_HARNESS = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z 'PS1="> "; fpath=('$1' $fpath); autoload -Uz compinit; compinit -u -D'
zpty -w z '_dump() { print -r -- "<""<$BUFFER>"">"; BUFFER=; zle accept-line }'
zpty -w z 'zle -N _dump; bindkey "^T" _dump'
shift
for line in "$@"; do
    zpty -w -n z "$line"$'\t\x14'
    zpty -r z out '*<<*>>*'
    print -r -- "${${out##*<<}%%>>*}"
done
zpty -d z
"""


def test_zsh(env: dict[str, str], cli: Cli, tmp_path: Path) -> None:
    zsh = need("zsh")
    cli("add", "-s", "solo", "--role", "user", "the only message")
    only_id = message_ids(cli, "solo")[0]
    harness = tmp_path / "harness.zsh"
    harness.write_text(ZSH_HARNESS)
    expected = {
        "sessionctl fo": "sessionctl fork ",
        "sessionctl fork wo": "sessionctl fork work ",
        "sessionctl --home config fo": "sessionctl --home config fork ",
        # restore offers the trash, not the live sessions
        "sessionctl restore fu": "sessionctl restore fu",
        "sessionctl restore go": "sessionctl restore gone ",
        "sessionctl recent -s we": "sessionctl recent -s weekly ",
        f"sessionctl drop -s solo {only_id[:5]}": f"sessionctl drop -s solo {only_id} ",
        "sessionctl prune --older": "sessionctl prune --older-than ",
        "sessionctl config set color al": "sessionctl config set color always ",
    }
    out = run([zsh, "-f", str(harness), str(COMPLETIONS), *expected], env).splitlines()
    assert dict(zip(expected, out, strict=True)) == expected


def test_fish(env: dict[str, str], cli: Cli) -> None:
    fish = need("fish")
    first_id = message_ids(cli, "weekly")[0]
    cases = [
        "sessionctl fo",
        "sessionctl fork ",
        "sessionctl export w",
        "sessionctl --home config fo",
        "sessionctl drop -s weekly ",
        "sessionctl list --",
        "sessionctl config ",
    ]
    script = f"source {COMPLETIONS / 'sessionctl.fish'}\n" + "".join(
        f"complete -C'{case}'\necho ---\n" for case in cases
    )
    chunks = run([fish, "--no-config", "-c", script], env).split("---\n")
    got = {
        case: sorted(line.split("\t")[0] for line in chunk.splitlines())
        for case, chunk in zip(cases, chunks, strict=False)
    }
    assert got["sessionctl fo"] == ["fork"]
    assert got["sessionctl fork "] == ["fun", "weekly", "work"]
    assert got["sessionctl export w"] == ["weekly", "work"]
    assert got["sessionctl --home config fo"] == ["fork"]
    assert first_id in got["sessionctl drop -s weekly "]
    assert {"--limit", "--cursor", "--deleted", "--json"} <= set(got["sessionctl list --"])
    assert got["sessionctl config "] == ["get", "path", "set", "show", "unset"]


@pytest.mark.parametrize(
    "words",
    [
        "sessionctl fo",  # command names
        "sessionctl fork ",  # session names
        "sessionctl drop -s work ",  # message ids
        "sessionctl relevant -s ",  # relevant's own module
        "sessionctl chat -s ",  # chat's module
        "sessionctl restore ",  # the trash
    ],
)
def test_completion_imports_nothing_heavy(env: dict[str, str], words: str) -> None:
    probe = (
        "import sys\n"
        "from sessionctl.cli.app import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"sys.stderr.write(repr(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {
        **env,
        "_SESSIONCTL_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(cword),
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.stderr == "[]"
    assert done.stdout.strip()  # it did complete something


def test_show_and_install_completion_still_work(env: dict[str, str], tmp_path: Path) -> None:
    env = {
        **env,
        "HOME": str(tmp_path / "user"),
        "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1",
    }
    shown = run(["sessionctl", "--show-completion", "bash"], env)
    assert "_SESSIONCTL_COMPLETE=complete_bash" in shown
    run(["sessionctl", "--install-completion", "bash"], env)
    installed = (tmp_path / "user" / ".bash_completions" / "sessionctl.sh").read_text()
    assert installed.strip() == shown.strip()
