"""Every command's --help: a one-line summary, an example, and each option's env var."""

from __future__ import annotations

import re

import pytest
from conftest import Cli

from sessionctl._build.docmodel import CommandDoc, command_tree
from sessionctl.cli.registry import COMMAND_MODULES

TREE = {" ".join(cmd.path): cmd for cmd in command_tree().walk()[1:]}


def flatten(help_text: str) -> str:
    """The help as one line of words (rich draws boxes and wraps at the width)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", help_text).split())


def test_every_registered_command_is_documented() -> None:
    assert {path.split()[0] for path in TREE} == set(COMMAND_MODULES)


@pytest.mark.parametrize("path", sorted(TREE))
def test_help_has_summary_example_and_env_vars(cli: Cli, path: str) -> None:
    cmd: CommandDoc = TREE[path]
    result = cli(*path.split(), "--help")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    shown = flatten(result.stdout)
    assert f"Usage: sessionctl {path}" in shown
    # one line of summary: a sentence, no longer than a terminal line
    assert cmd.summary and "\n" not in cmd.summary and len(cmd.summary) <= 100
    assert cmd.summary.endswith(".")
    assert cmd.summary in shown
    # an example: a paragraph "Example...:" followed by a command line
    assert cmd.example_title.startswith("Example"), f"{path}: no Example: section"
    assert cmd.example and "sessionctl" in cmd.example[0]
    assert flatten(cmd.example[0]) in shown
    # every option that reads an environment variable says which
    for param in cmd.options:
        if param.envvar:
            assert f"[env var: {param.envvar}]" in shown, (path, param.opts)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["config", "sho"], "No such command 'sho'. Did you mean 'show'?"),
        (["lsit"], "No such command 'lsit'. Did you mean 'list'?"),
        (["delte", "x"], "No such command 'delte'. Did you mean 'delete'?"),
        (["recent", "--sesion", "x"], "No such option '--sesion'. Did you mean '--session'?"),
        # list has no --session, and --json is not close enough to suggest
        (["list", "--sesion"], "No such option '--sesion'. (see"),
        (["zzz"], "No such command 'zzz'. (see"),
    ],
)
def test_a_typo_gets_at_most_one_suggestion_the_closest(
    cli: Cli, args: list[str], message: str
) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.count("Did you mean") <= 1
    assert message in result.stderr
