"""Tables at narrow terminal widths: `list` keeps the name whole, `relevant` stacks its
hits rather than squeezing the content, and the `--cursor` hint's token is never broken.

Through the renderer's width parameter, and as a real process on a pseudo-terminal
with COLUMNS=40 and 80.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from sessionctl import Store
from sessionctl.cli.render import Output, session_table
from sessionctl.models import SessionInfo

LONG = "project-alpha-long-name-2026"
SGR = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def info(name: str, parent: str | None = None) -> SessionInfo:
    return SessionInfo(
        name=name,
        messages=12,
        created_at="2026-11-30T08:00:00.000000Z",
        updated_at="2026-12-01T09:15:42.123456Z",
        metadata={},
        model="gpt-4o-mini",
        parent=parent,
        deleted_at="2026-12-01T09:15:42.123456Z",
    )


def rendered(width: int, *, deleted: bool = False) -> list[str]:
    out = io.StringIO()
    o = Output(out, io.StringIO(), color="always", no_color=True, width=width)
    headers, rows, narrower = session_table([info(LONG), info("b", LONG)], deleted=deleted)
    o.table(headers, rows, keep=["name"], narrower=narrower)
    return [line.rstrip() for line in SGR.sub("", out.getvalue()).splitlines()]


def test_list_with_room_is_whole() -> None:
    lines = rendered(110)
    assert lines[0].split() == ["name", "messages", "last", "active", "(UTC)", "model", "parent"]
    assert lines[1].split() == [LONG, "12", "2026-12-01", "09:15:42", "gpt-4o-mini", "-"]
    assert lines[2].split() == ["b", "12", "2026-12-01", "09:15:42", "gpt-4o-mini", LONG]


@pytest.mark.parametrize("width", [40, 50, 60, 70])
def test_list_narrow_keeps_the_name_and_shortens_the_rest(width: int) -> None:
    lines = rendered(width)
    assert all(len(line) <= width for line in lines), lines
    assert "…" not in "".join(lines)
    assert lines[1].split()[0] == LONG and lines[2].split()[0] == "b"
    assert len(lines) == 3  # nothing wrapped onto a second line
    for line in lines[1:]:
        assert "09:15" not in line  # the time went first, before any column
    if width >= 50:
        assert "2026-12-01" in lines[1]  # the date part stays while there is room


def test_list_narrower_than_the_name_still_prints_it_whole() -> None:
    lines = rendered(20)
    assert lines[1].split() == [LONG]
    assert lines[0].split() == ["name"]


def test_deleted_list_narrow() -> None:
    lines = rendered(50, deleted=True)
    assert lines[0].split() == ["name", "msgs", "deleted"]


def test_cursor_hint_token_on_its_own_line() -> None:
    token = "WzE3OTYyMzI5NDQwNTk2MDkxOTQsImMiXQ"
    err = io.StringIO()
    Output(io.StringIO(), err, color="always", width=40).more("sessionctl list --cursor", token)
    lines = err.getvalue().splitlines()
    assert lines == ["sessionctl: more: the next page:", "sessionctl list --cursor \\", token]
    err = io.StringIO()
    Output(io.StringIO(), err, color="always", width=80).more("sessionctl list --cursor", token)
    assert err.getvalue() == f"sessionctl: more: sessionctl list --cursor {token}\n"
    err = io.StringIO()  # piped: always the one line, whatever the width
    Output(io.StringIO(), err, width=40).more("sessionctl list --cursor", token)
    assert err.getvalue() == f"sessionctl: more: sessionctl list --cursor {token}\n"


# -- a real pseudo-terminal ------------------------------------------------------------


def in_pty(home: Path, columns: int, *args: str) -> list[str]:
    """Run sessionctl with stdout and stderr on a pseudo-terminal; the lines it showed."""
    import pty

    leader, follower = pty.openpty()
    env = {
        **os.environ,
        "SESSIONCTL_HOME": str(home),
        "PYTHONPATH": str(REPO),
        "COLUMNS": str(columns),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessionctl", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
        cwd=REPO,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child has closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=120) == 0, b"".join(chunks).decode()
    screen = SGR.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")
    return [line.rstrip() for line in screen.splitlines()]


def test_list_and_cursor_on_a_terminal(home: Path) -> None:
    store = Store(home=home)
    for name in (LONG, "b", "c"):
        store.session(name).add_message({"role": "user", "content": "hi"})
    for columns in (40, 80):
        lines = in_pty(home, columns, "list", "--limit", "2")
        assert all(len(line) <= columns for line in lines), (columns, lines)
        names = [line.split()[0] for line in lines[1:3]]
        assert names == ["c", "b"]
        hint = lines[3:]
        token = hint[-1].split()[-1]
        assert len(token) > 20
        if columns == 40:
            assert hint[-2:] == ["sessionctl list --cursor \\", token]
        else:
            assert hint == [f"sessionctl: more: sessionctl list --cursor {token}"]
        # the token works: the next page holds the long name, whole
        page = in_pty(home, columns, "list", "--cursor", token)
        assert page[1].split()[0] == LONG, page


def test_relevant_stacks_on_a_narrow_terminal(home: Path) -> None:
    text = "We deploy the frontend on Friday after the review, then watch the error rate."
    store = Store(home=home)
    store.session(LONG).add_message({"role": "assistant", "content": text})
    wide = in_pty(home, 80, "relevant", "when do we deploy the frontend", "-k", "1")
    assert wide[0].split() == ["distance", "session", "seq", "role", "content"]
    assert LONG in wide[1] and "We deploy the frontend" in wide[1]
    assert all(len(line) <= 80 for line in wide)
    narrow = in_pty(home, 40, "relevant", "when do we deploy the frontend", "-k", "1")
    assert all(len(line) <= 40 for line in narrow), narrow
    head = [line for line in narrow if not line.startswith("  ")]
    body = [line for line in narrow if line.startswith("  ")]
    assert " ".join(head).split()[1:] == [LONG, "#1", "assistant"]  # wrapped between words
    assert " ".join(line.strip() for line in body) == text
    assert min(len(line) for line in body[:-1]) > 25  # content gets the width, not 5
    # the table again once there is room for 20 columns of content
    query = "when do we deploy the frontend"
    assert in_pty(home, 78, "relevant", query)[0].split()[0] == "distance"
    assert in_pty(home, 77, "relevant", query)[0].split()[1] == LONG
