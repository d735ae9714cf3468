"""How commands take their arguments: the home and config paths, the session (positional,
-s or SESSIONCTL_SESSION), choices, and what is said on stderr (hardening items 22-26)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, Cli, Result

from sessionctl import Store

ERROR = "sessionctl: error: "
Sh = Callable[..., "subprocess.CompletedProcess[str]"]


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


# -- 22: the home and the config path are absolute ----------------------------------------


def test_relative_home_and_config_are_resolved_once_and_shown_resolved(
    sh: Sh, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {"SESSIONCTL_HOME": "data", "SESSIONCTL_CONFIG": "conf/config.toml"}
    done = sh("config", "show", "--json", env=env, cwd=work)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["settings"]["home"]["value"] == str(work / "data")
    assert shown["config_path"] == str(work / "conf" / "config.toml")
    table = sh("config", "show", env=env, cwd=work)
    assert any(
        line.split()[:2] == ["home", str(work / "data")] for line in table.stdout.split("\n")
    )
    assert f"config file: {work / 'conf' / 'config.toml'}" in table.stderr
    assert sh("config", "path", "home", env=env, cwd=work).stdout == f"{work / 'data'}\n"
    assert sh("config", "path", env=env, cwd=work).stdout == f"{work / 'conf' / 'config.toml'}\n"
    flag = sh("--home", "elsewhere", "config", "path", "home", env={}, cwd=work)
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


# -- 23: one session, named as an argument or with -s -------------------------------------


def ids(result: Result) -> list[str]:
    return ok(result).stdout.split()


def contents(cli: Cli, name: str) -> list[str]:
    return [m["content"] for m in json.loads(ok(cli("recent", name, "-k", "99", "--json")).stdout)]


@pytest.mark.parametrize(
    "command",
    [
        ["show", "--json"],
        ["export"],
        ["meta", "--json"],
        ["recent", "--text"],
        ["reindex"],
        ["clear"],
        ["delete", "--purge"],
    ],
    ids=lambda c: c[0],
)
def test_a_session_argument_or_s_means_the_same(cli: Cli, command: list[str]) -> None:
    outputs = []
    for how in (["work"], ["-s", "work"], ["--session", "work"], ["work", "-s", "work"]):
        for name in ("work", "other"):
            cli("delete", name, "--purge")
            ok(cli("store", name, f"q-{name}", f"a-{name}"))
        result = ok(cli(command[0], *how, *command[1:]))
        assert contents(cli, "other") == ["q-other", "a-other"]  # never the other session
        outputs.append(result.stdout)
        if command[0] in ("clear", "delete"):
            assert "'work'" in result.stderr
    if command[0] in ("meta", "recent", "clear", "delete"):
        assert outputs[1:] == outputs[:1] * 3  # (show and export carry fresh ids)
    refused = usage_error(cli(command[0], "work", "-s", "other", *command[1:]), "once")
    assert "'work'" in refused and "'other'" in refused


def test_clear_scratch_works_and_two_names_are_refused(sh: Sh) -> None:
    assert sh("store", "scratch", "q", "a").returncode == 0
    done = sh("clear", "scratch")  # the real CLI in a subprocess
    assert (done.returncode, done.stdout) == (0, "")
    assert "cleared 2 messages from 'scratch'" in done.stderr
    refused = sh("clear", "scratch", "-s", "work")
    assert refused.returncode == 2
    assert refused.stderr == (
        f"{ERROR}two sessions given, 'scratch' and -s 'work': name the session once\n"
    )
    missing = sh("clear")
    assert missing.returncode == 2
    assert "`sessionctl clear NAME` or `sessionctl clear -s NAME`" in missing.stderr


def test_drop_takes_the_session_first_and_with_s_a_lone_id(cli: Cli) -> None:
    first, second, third, fourth = (
        ids(cli("add", "work", "--role", "user", t))[0] for t in ("a", "b", "c", "d")
    )
    assert ids(cli("drop", "work")) == [fourth]  # the last one
    assert ids(cli("drop", "work", first)) == [first]
    assert ids(cli("drop", "-s", "work", second)) == [second]  # with -s: the ID
    assert ids(cli("drop", "-s", "work", "work", third)) == [third]  # same name twice: fine
    assert contents(cli, "work") == []
    ok(cli("add", "work", "--role", "user", "e"))
    usage_error(cli("drop", "-s", "other", "work", "ID"), "two sessions")
    assert contents(cli, "work") == ["e"]


def test_add_one_argument_is_always_the_text(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    ok(cli("add", "notes", "--role", "user", "two args: session, text"))
    ok(cli("add", "-s", "notes", "--role", "user", "with -s: the text"))
    ok(cli("add", "-s", "notes", "--role", "user", input="piped\n"))
    assert contents(cli, "notes") == ["two args: session, text", "with -s: the text", "piped"]
    # without -s (or the variable) a lone argument is still the text: no session given
    usage_error(cli("add", "--role", "user", "notes", input="x\n"), "no session given", "-s NAME")
    monkeypatch.setenv("SESSIONCTL_SESSION", "notes")
    ok(cli("add", "--role", "user", "from the variable"))
    ok(cli("add", "other", "--role", "user", "an argument beats the variable"))
    assert contents(cli, "notes")[-1] == "from the variable"
    assert contents(cli, "other") == ["an argument beats the variable"]
    usage_error(cli("add", "a", "b", "--role", "user", "-s", "notes"), "two sessions")


def test_store_three_arguments_start_with_the_session(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(cli("store", "pair", "P1", "R1"))
    ok(cli("store", "-s", "pair", "P2", "R2"))
    assert contents(cli, "pair") == ["P1", "R1", "P2", "R2"]
    usage_error(cli("store", "P", "R"), "no session given", "PROMPT RESPONSE")
    usage_error(cli("store", "pair", "P"), "no session given")  # two: PROMPT RESPONSE
    usage_error(cli("store", "pair"), "PROMPT", "RESPONSE")
    monkeypatch.setenv("SESSIONCTL_SESSION", "pair")
    ok(cli("store", "P3", "R3"))
    assert contents(cli, "pair")[-2:] == ["P3", "R3"]


def test_fork_and_rename_take_the_source_with_s_too(cli: Cli) -> None:
    ok(cli("store", "work", "q", "a"))
    assert ok(cli("fork", "work", "alt")).stdout == "alt\n"
    assert ok(cli("fork", "-s", "work", "alt2")).stdout == "alt2\n"
    ok(cli("rename", "alt", "alt3"))
    ok(cli("rename", "-s", "alt2", "alt4"))
    listed = [s["name"] for s in json.loads(ok(cli("list", "--json")).stdout)["sessions"]]
    assert sorted(listed) == ["alt3", "alt4", "work"]
    usage_error(cli("fork", "-s", "work"), "new session's name")
    usage_error(cli("rename", "-s", "work"), "NEW")
    usage_error(cli("fork", "work", "x", "-s", "alt3"), "two sessions")
    usage_error(cli("fork", "x"), "no session given", "SOURCE NEW")


def test_restore_takes_a_deleted_name_both_ways(cli: Cli) -> None:
    ok(cli("store", "a", "q", "a"))
    ok(cli("store", "b", "q", "a"))
    ok(cli("delete", "a"))
    ok(cli("delete", "-s", "b"))
    ok(cli("restore", "a"))
    ok(cli("restore", "-s", "b"))
    assert len(json.loads(ok(cli("list", "--json")).stdout)["sessions"]) == 2


def test_meta_tells_assignments_from_the_session_by_their_equals_sign(cli: Cli) -> None:
    ok(cli("store", "work", "q", "a"))
    assert ok(cli("meta", "-s", "work", "a=1", "b=x")).stdout == "a=1\nb=x\n"
    assert ok(cli("meta", "work", "c=true")).stdout == "a=1\nb=x\nc=true\n"
    assert json.loads(ok(cli("meta", "--json", "-s", "work")).stdout) == {
        "a": 1,
        "b": "x",
        "c": True,
    }


READS_THE_VARIABLE = [
    ["show", "--json"],
    ["export"],
    ["meta", "--json"],
    ["recent", "--json"],
    ["add", "--role", "user", "text"],
    ["store", "p", "r"],
    ["fork", "copy"],
]
NEVER_READS_IT = [["clear"], ["delete"], ["drop"], ["rename", "new"], ["restore"], ["reindex"]]


@pytest.mark.parametrize("command", READS_THE_VARIABLE, ids=lambda c: c[0])
def test_sessionctl_session_fills_in_for_reading_and_adding(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    ok(cli("store", "work", "q", "a"))
    monkeypatch.setenv("SESSIONCTL_SESSION", "work")
    ok(cli(*command))
    if command[0] == "fork":
        assert contents(cli, "copy") == ["q", "a"]


@pytest.mark.parametrize("command", NEVER_READS_IT, ids=lambda c: c[0])
def test_sessionctl_session_never_picks_what_is_removed_or_moved(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    ok(cli("store", "work", "q", "a"))
    monkeypatch.setenv("SESSIONCTL_SESSION", "work")
    usage_error(cli(*command), "no session given")
    assert "SESSIONCTL_SESSION" not in cli(*command).stderr
    assert contents(cli, "work") == ["q", "a"]


def test_help_shows_both_ways_and_the_variable_only_where_read(cli: Cli) -> None:
    for command in ("show", "recent", "add", "store", "meta", "export", "fork"):
        assert "SESSIONCTL_SESSION" in ok(cli(command, "--help")).stdout, command
    for command in ("clear", "delete", "drop", "rename", "restore", "reindex"):
        text = ok(cli(command, "--help")).stdout
        assert "SESSIONCTL_SESSION" not in text and "--session" in text, command
    assert "Usage: sessionctl store [OPTIONS] [SESSION] PROMPT RESPONSE" in (
        ok(cli("store", "--help")).stdout
    )
    assert "Usage: sessionctl fork [OPTIONS] [SOURCE] NEW" in ok(cli("fork", "--help")).stdout


# -- 24: say which session was used when the user did not name it ---------------------------


def test_recent_without_a_session_says_which_it_used_on_stderr(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(cli("store", "older", "q1", "a1"))
    ok(cli("store", "newer", "q2", "a2"))
    plain = ok(cli("recent", "--text"))
    assert (plain.stdout, plain.stderr) == ("q2\na2\n", "sessionctl: session: newer\n")
    as_json = ok(cli("recent", "--json"))
    assert [m["content"] for m in json.loads(as_json.stdout)] == ["q2", "a2"]
    assert as_json.stderr == "sessionctl: session: newer\n"
    for named in (["older"], ["-s", "older"]):
        assert ok(cli("recent", *named, "--text")).stderr == ""
    monkeypatch.setenv("SESSIONCTL_SESSION", "older")  # chosen by the user, if not here
    assert ok(cli("recent", "--text")).stdout == "q1\na1\n"
    assert ok(cli("recent", "--text")).stderr == ""


# -- 26: choices, one reindex bar, Ctrl-C, help examples ---------------------------------------


def test_export_format_and_role_are_choices(cli: Cli) -> None:
    ok(cli("store", "work", "q", "a"))
    markdown = ok(cli("export", "work", "--format", "markdown")).stdout
    assert (
        markdown.startswith("# work") and ok(cli("export", "work", "-f", "md")).stdout == markdown
    )
    usage_error(cli("export", "work", "--format", "xml"), "'xml'", "'jsonl'", "'md'")
    assert ok(cli("recent", "work", "-r", "llm", "--text")).stdout == "a\n"  # llm: assistant
    for command in (["recent", "work"], ["relevant", "q"], ["add", "work", "x"]):
        usage_error(cli(*command, "--role", "wizard"), "'wizard'", "'assistant'")


def test_the_choices_are_the_service_s() -> None:
    from sessionctl.cli.options import ExportFormat, Role
    from sessionctl.models import ROLE_ALIASES, ROLES
    from sessionctl.service.transfer import EXPORT_ALIASES, EXPORT_FORMATS

    assert [r.value for r in Role] == [*ROLES, *ROLE_ALIASES]
    assert [f.value for f in ExportFormat] == [*EXPORT_FORMATS, *EXPORT_ALIASES]


def run_on_a_terminal(
    args: list[str], *, interrupt_after: bytes | None = None, timeout: float = 60
) -> tuple[int, bytes]:
    """Run the CLI with stdin/stdout/stderr on a pty; optionally Ctrl-C it once
    ``interrupt_after`` has been printed. Return its exit status and everything it wrote."""
    import pty
    import select
    import signal
    import time

    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessionctl", *args],
        stdin=child,
        stdout=child,
        stderr=child,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"},
        cwd=REPO,
    )
    os.close(child)
    out = b""
    sent = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.1)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the pty
                break
            if not data:
                break
            out += data
        if interrupt_after is not None and not sent and interrupt_after in out:
            proc.send_signal(signal.SIGINT)
            sent = True
    os.close(main)
    return proc.wait(timeout=timeout), out


def last_line(out: bytes) -> str:
    """The last line a terminal shows of ``out`` (escape sequences and redraws dropped)."""
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode())
    lines = [part for line in text.split("\n") for part in line.split("\r") if part.strip()]
    return lines[-1] if lines else ""


def many_sessions(count: int, messages: int) -> None:
    store = Store()
    for i in range(count):
        batch = [{"role": "user", "content": f"note {j} of session {i}"} for j in range(messages)]
        store.session(f"s{i:03d}").add_messages(batch)


def test_reindex_all_shows_one_overall_bar(home: Path) -> None:
    many_sessions(40, 3)
    code, out = run_on_a_terminal(["reindex", "--all"])
    assert code == 0, out
    text = out.decode()
    assert "reindexing" in text and "/40" in text and "sessions" in text  # one bar, of 40
    # a display of one line never moves the cursor up, except once to clear it at the end
    # (a bar per session redrew 40 lines with 39 cursor-ups each time)
    assert out.count(b"\x1b[1A") <= 1
    assert last_line(out).startswith("sessionctl: reindexed 40 session(s)")


def test_ctrl_c_in_reindex_exits_130_saying_interrupted_not_error(home: Path) -> None:
    many_sessions(150, 10)
    code, out = run_on_a_terminal(["reindex", "--all"], interrupt_after=b"/150")
    last = last_line(out)
    assert code == 130, out
    assert last.startswith("sessionctl: interrupted after ") and "of 150 session(s)" in last
    assert "error" not in last and "Traceback" not in out.decode()


def test_every_help_example_is_indented_the_same(cli: Cli) -> None:
    from sessionctl._build.docmodel import command_tree

    for command in command_tree().walk():
        if not command.example:
            continue
        lines = ok(cli(*command.path, "--help")).stdout.splitlines()
        head = next(
            i for i, line in enumerate(lines) if line.strip() == command.example_title + ":"
        )
        example = next(line for line in lines[head + 1 :] if line.strip())
        indent = len(example) - len(example.lstrip())
        heading = len(lines[head]) - len(lines[head].lstrip())
        assert indent - heading == 4, (command.name, lines[head], example)


@pytest.mark.parametrize(
    "args",
    [["add", "-s", "x", "hi"], ["export", "x", "--format", "yaml"], ["recent", "--bogus"]],
)
def test_usage_errors_are_one_line(cli: Cli, args: list[str]) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "\t" not in result.stderr, result.stderr
    assert result.stderr.startswith("sessionctl: error: ")
