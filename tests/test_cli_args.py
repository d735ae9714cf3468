"""How commands take their arguments: the home and config paths, the session (positional,
-s or SESSIONCTL_SESSION), choices, and what is said on stderr (hardening items 22-26)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Cli, Result

from sessionctl import Store

ERROR = "sessionctl: error: "


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result
    assert ERROR not in result.stderr and "Traceback" not in result.stderr
    return result


def usage_error(result: Result, *needles: str) -> str:
    assert result.exit_code == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_in(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess started in ``cwd`` (where a relative path points)."""
    full = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "sessionctl", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        timeout=60,
    )


# -- 22: the home and the config path are absolute ----------------------------------------


def test_relative_home_and_config_are_resolved_once_and_shown_resolved(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {"SESSIONCTL_HOME": "data", "SESSIONCTL_CONFIG": "conf/config.toml"}
    done = run_in(work, "config", "show", "--json", env=env)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["settings"]["home"]["value"] == str(work / "data")
    assert shown["config_path"] == str(work / "conf" / "config.toml")
    table = run_in(work, "config", "show", env=env)
    assert any(
        line.split()[:2] == ["home", str(work / "data")] for line in table.stdout.split("\n")
    )
    assert f"config file: {work / 'conf' / 'config.toml'}" in table.stderr
    assert run_in(work, "config", "path", "home", env=env).stdout == f"{work / 'data'}\n"
    assert run_in(work, "config", "path", env=env).stdout == f"{work / 'conf' / 'config.toml'}\n"
    flag = run_in(work, "--home", "elsewhere", "config", "path", "home", env={})
    assert flag.stdout == f"{work / 'elsewhere'}\n"


def test_a_store_keeps_its_home_when_the_directory_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SESSIONCTL_HOME", "data")
    store = Store()
    assert store.home == tmp_path / "data"
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    store.session("work").store("q", "a")  # a relative home would write under other/
    assert (tmp_path / "data" / "sessions" / "work.jsonl").is_file()
    assert not (other / "data").exists()
    assert Store("rel").home == other / "rel"


@pytest.mark.parametrize(
    "command",
    [["list"], ["list", "--deleted"], ["list", "--json"], ["prune", "--older-than", "1d"]],
)
def test_reading_a_home_that_does_not_exist_says_so_and_exits_0(
    cli: Cli, tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "typo"
    result = ok(cli("--home", str(missing), *command))
    assert f"sessionctl: no data at {missing} yet" in result.stderr.splitlines()
    if "--json" in command:
        assert json.loads(result.stdout) == {"sessions": [], "next_cursor": None}
    else:
        assert result.stdout == ""
    assert not missing.exists()  # reading creates nothing


def test_an_existing_empty_store_gets_no_note(cli: Cli, home: Path) -> None:
    ok(cli("store", "-s", "work", "q", "a"))
    ok(cli("delete", "work", "--purge"))
    assert "no data" not in ok(cli("list")).stderr
    assert ok(cli("list")).stdout == ""
