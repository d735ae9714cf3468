"""`import --from SOURCE`: other tools' histories -> sessions (docs/import-export.md).

llm and shell_gpt run for real (their virtualenvs from .ci/peer-tools.sh, found
through $SESSIONCTL_PEERS_DIR) against the OpenAI-compatible test server; the
ChatGPT, Claude Code and ShareGPT fixtures in tests/data/import were written from
those formats' public descriptions.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Cli
from llm_server import FakeLLMServer, Reply

DATA = REPO / "tests" / "data" / "import"
PEERS = Path(os.environ.get("SESSIONCTL_PEERS_DIR") or "/var/cache/sessionctl-ci/peers")


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer()
    try:
        yield server
    finally:
        server.close()


def peer(tool: str) -> Path:
    exe = PEERS / tool / "bin" / tool
    if not os.access(exe, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"no {tool} at {exe}: run bash .ci/peer-tools.sh")
        pytest.skip(f"no {tool} at {exe} (install with: bash .ci/peer-tools.sh)")
    return exe


def summary(cli: Cli, *args: str) -> dict[str, Any]:
    result = cli("import", *args, "--json")
    assert result.exit_code == 0, result.stderr
    value: dict[str, Any] = json.loads(result.stdout)
    return value


def exported(cli: Cli, name: str) -> dict[str, Any]:
    result = cli("export", name, "--format", "json")
    assert result.exit_code == 0, result.stderr
    value: dict[str, Any] = json.loads(result.stdout)
    return value


# -- real llm ------------------------------------------------------------------------------------


def run_llm(exe: Path, env: dict[str, str], *args: str) -> None:
    done = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_real_llm_logs_db(cli: Cli, tmp_path: Path, llm_server: FakeLLMServer) -> None:
    exe = peer("llm")
    user = tmp_path / "llm-user"
    user.mkdir()
    (user / "extra-openai-models.yaml").write_text(
        f"- model_id: fake\n  model_name: test-model\n  api_base: {llm_server.base_url}\n"
        "  api_key_name: fakekey\n"
    )
    (user / "keys.json").write_text('{"fakekey": "sk-test"}')
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LLM_USER_PATH": str(user)}
    for text in ("First answer.", "Second answer.", "Third answer."):
        llm_server.push(Reply(text=text))
    run_llm(exe, env, "-m", "fake", "-s", "Answer briefly.", "What is one?")
    run_llm(exe, env, "-c", "And two?")
    run_llm(exe, env, "-m", "fake", "Unrelated question")
    db = user / "logs.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from turns").fetchone()[0] == 3
    conn.close()

    first = summary(cli, "--from", "llm", str(db))
    assert first["sessions_created"] == 2 and first["messages_added"] == 6
    assert first["skipped"] == []
    names = sorted(s["name"] for s in first["sessions"])
    sessions = [exported(cli, n) for n in names]
    long = next(s for s in sessions if len(s["messages"]) == 4)
    assert long["system"] == "Answer briefly."
    roles = [(m["role"], m["content"]) for m in long["messages"]]
    assert roles == [
        ("user", "What is one?"), ("assistant", "First answer."),
        ("user", "And two?"), ("assistant", "Second answer."),
    ]  # fmt: skip
    assert long["messages"][1]["model"] == "fake"
    assert long["messages"][1]["usage"]["completion_tokens"] is not None
    assert long["metadata"]["imported_from"]["source"] == "llm"

    again = summary(cli, "--from", "llm", str(db))  # idempotent
    assert again["messages_added"] == 0 and again["sessions_unchanged"] == 2

    llm_server.push(Reply(text="Fourth answer."))
    run_llm(exe, env, "-c", "And three?")  # the source grows
    grown = summary(cli, "--from", "llm", str(db))
    assert grown["messages_added"] == 2 and grown["sessions_updated"] == 1
    contents = [m["content"] for m in exported(cli, grown["sessions"][0]["name"])["messages"]]
    # llm -c continues the latest conversation: the unrelated one
    assert contents == ["Unrelated question", "Third answer.", "And three?", "Fourth answer."]


# -- real shell_gpt --------------------------------------------------------------------------


def test_real_sgpt_chat_cache(cli: Cli, tmp_path: Path, llm_server: FakeLLMServer) -> None:
    exe = peer("sgpt")
    config = tmp_path / ".config" / "shell_gpt"
    config.mkdir(parents=True)
    cache = tmp_path / "chat_cache"
    (config / ".sgptrc").write_text(
        f"API_BASE_URL={llm_server.base_url.removesuffix('/v1')}/v1\nOPENAI_API_KEY=sk-test\n"
        f"CHAT_CACHE_PATH={cache}\nCACHE_PATH={tmp_path / 'cache'}\nDEFAULT_MODEL=test-model\n"
        "OPENAI_USE_FUNCTIONS=false\nPRETTIFY_MARKDOWN=false\nSHOW_FUNCTIONS_OUTPUT=false\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "OPENAI_API_KEY": "sk-test"}
    for text in ("Blue.", "Green."):
        llm_server.push(Reply(text=text))
    for prompt in ("Name a colour", "Another one"):
        done = subprocess.run(
            [str(exe), "--no-md", "--chat", "colours", prompt],
            env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    assert (cache / "colours").is_file()
    first = summary(cli, "--from", "sgpt", str(cache))
    assert first["sessions_created"] == 1
    session = exported(cli, "sgpt-colours")
    assert session["system"]  # shell_gpt's role prompt is the first message
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "Name a colour"), ("assistant", "Blue."),
        ("user", "Another one"), ("assistant", "Green."),
    ]  # fmt: skip
    assert summary(cli, "--from", "sgpt", str(cache))["messages_added"] == 0


# -- fixtures from the public formats -------------------------------------------------------


def test_chatgpt_current_node_and_branches(cli: Cli) -> None:
    path = str(DATA / "chatgpt-conversations.json")
    first = summary(cli, "--from", "chatgpt", path)
    assert first["sessions_created"] == 1
    name = first["sessions"][0]["name"]
    session = exported(cli, name)
    assert [m["content"] for m in session["messages"]] == [
        "How long to proof?", "About 4 hours at 24C.", "Thanks!",
    ]  # fmt: skip
    assert session["messages"][1]["model"] == "gpt-4o"
    assert session["messages"][0]["created_at"].startswith("2023-11-14T22:13:30")
    assert session["metadata"]["title"] == "Sourdough help"
    forks = summary(cli, "--from", "chatgpt", "--branches", path)
    assert forks["sessions_created"] == 1 and forks["sessions_unchanged"] == 1
    fork = exported(cli, forks["sessions"][0]["name"])
    assert fork["parent"] == name
    assert [m["content"] for m in fork["messages"]] == ["An abandoned first answer."]
    assert fork["parent_message"] == session["messages"][0]["id"]


def test_claude_code_tool_calls(cli: Cli, tmp_path: Path) -> None:
    project = tmp_path / "projects" / "-home-me-proj"
    project.mkdir(parents=True)
    shutil.copy(DATA / "claude-session.jsonl", project / "5e551011.jsonl")
    (project / "link.jsonl").symlink_to("/etc/passwd")  # never followed
    result = summary(cli, "--from", "claude-code", str(tmp_path / "projects"))
    assert result["sessions_created"] == 1
    assert result["skipped"] == [
        {"where": f"{project / '5e551011.jsonl'}: line 5: block 2", "reason": "block 'image'"}
    ]
    session = exported(cli, result["sessions"][0]["name"])
    msgs = session["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant"]
    assert msgs[1]["tool_calls"][0]["function"] == {
        "name": "Bash", "arguments": json.dumps({"command": "pytest -q"})
    }  # fmt: skip
    assert msgs[2]["tool_call_id"] == "toolu_1" and msgs[2]["content"] == "3 passed"
    assert msgs[1]["created_at"].startswith("2025-06-01T10:00:05.000")
    assert session["model"] == "claude-sonnet-4"


def test_sharegpt_reports_unmappable_turn(cli: Cli) -> None:
    result = summary(cli, "--from", "sharegpt", str(DATA / "sharegpt.json"))
    assert result["skipped"][0]["where"].endswith("conversation 1: turn 3")
    session = exported(cli, "sharegpt-sg1")
    assert session["system"] == "You are kind."
    assert [m["content"] for m in session["messages"]] == [
        "Name a colour.",
        "Blue.",
        "Another?",
        "Green.",
    ]


def test_openai_jsonl_and_dry_run(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "ft.jsonl"
    line = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path.write_text(json.dumps(line) + "\n" + json.dumps(line) + "\n")
    dry = summary(cli, "--from", "openai", "--dry-run", str(path))
    assert dry["sessions_created"] == 2
    assert cli("list", "--json").stdout.count('"name"') == 0
    real = summary(cli, "--from", "openai", "--prefix", "ft", str(path))
    assert sorted(s["name"] for s in real["sessions"]) == ["ft-ft-1", "ft-ft-2"]


# -- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "body", "expect"),
    [
        ("openai", '{"messages": [{"role": "user", "content": "a"}]}\n{"messages": [', "line 2"),
        ("openai", "[" * 100000, "nested"),
        ("chatgpt", '{"not": "a list"}', "list of conversations"),
        ("chatgpt", '[{"mapping": 3}]', "conversation 1"),
        ("sharegpt", '[{"conversations": "x"}]', "conversation 1"),
        ("llm", "not sqlite at all" * 100, "logs.db"),
        ("openai", '{"messages": [{"role": "user", "content": NaN}]}', "line 1"),
    ],
)
def test_hostile_input_one_line_error(
    cli: Cli, tmp_path: Path, source: str, body: str, expect: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(body)
    result = cli("import", "--from", source, str(path))
    assert result.exit_code == 2, result.stderr
    assert expect in result.stderr and str(path) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_missing_source_and_bad_names(cli: Cli, tmp_path: Path) -> None:
    assert cli("import", "--from", "llm", str(tmp_path / "nope.db")).exit_code == 3
    assert cli("import", "--from", "nosuch", str(tmp_path)).exit_code == 2
    path = tmp_path / "x.jsonl"
    path.write_text(
        '{"id": "../../etc/évil name", "conversations": [{"from": "human", "value": "q"}]}\n'
    )
    result = summary(cli, "--from", "sharegpt", str(path))
    name = result["sessions"][0]["name"]
    assert name == "sharegpt-etc-vil-name" and result["renamed"][0]["name"] == name
    assert not (tmp_path / "etc").exists()


def test_truncated_and_huge_lines(cli: Cli, tmp_path: Path) -> None:
    whole = (DATA / "chatgpt-conversations.json").read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(whole[: len(whole) // 2])
    result = cli("import", "--from", "chatgpt", str(cut))
    assert result.exit_code == 2 and "not valid JSON" in result.stderr and "line" in result.stderr
    huge = tmp_path / "huge.jsonl"
    with huge.open("w") as stream:
        stream.write('{"messages": [{"role": "user", "content": "ok"}]}\n')
        stream.write('{"messages": [{"role": "user", "content": "' + "x" * (17 * 2**20) + '"}]}\n')
    result = cli("import", "--from", "openai", str(huge))
    assert result.exit_code == 2 and f"{huge}: line 2: longer than" in result.stderr
    assert cli("list", "--json").stdout.count('"name"') == 0  # nothing half-imported


def test_wrong_types_are_reported_not_dropped(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "types.json"
    path.write_text(json.dumps([{"role": "user", "content": 5}, {"role": "user", "content": "ok"}]))
    result = summary(cli, "--from", "openai", str(path))
    assert result["messages_added"] == 1
    assert result["skipped"][0]["where"] == f"{path}: message 1"


def test_gptme_logs_from_documented_format(cli: Cli, tmp_path: Path) -> None:
    # gptme's logs dir: one folder per conversation with conversation.jsonl of
    # {"role", "content", "timestamp"} lines (gptme.logmanager)
    conv = tmp_path / "logs" / "2025-01-01-happy-fox"
    conv.mkdir(parents=True)
    lines = [
        {"role": "system", "content": "You are gptme.", "timestamp": "2025-01-01T10:00:00"},
        {"role": "user", "content": "hello", "timestamp": "2025-01-01T10:00:01"},
        {"role": "assistant", "content": "hi", "timestamp": "2025-01-01T10:00:02"},
    ]
    (conv / "conversation.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = summary(cli, "--from", "gptme", str(tmp_path / "logs"))
    assert result["sessions"][0]["name"] == "gptme-2025-01-01-happy-fox"
    session = exported(cli, "gptme-2025-01-01-happy-fox")
    assert [m["role"] for m in session["messages"]] == ["system", "user", "assistant"]
    with (conv / "conversation.jsonl").open("a") as stream:  # growth
        stream.write(json.dumps({"role": "user", "content": "more"}) + "\n")
    assert summary(cli, "--from", "gptme", str(tmp_path / "logs"))["messages_added"] == 1


def test_secrets_are_redacted_on_import(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    secret = "sk-proj-" + "A1b2C3d4" * 6
    path.write_text(json.dumps([{"role": "user", "content": f"my key is {secret}"}]))
    summary(cli, "--from", "openai", str(path))
    stored = exported(cli, "openai-s")["messages"][0]["content"]
    assert secret not in stored


# -- many sessions at once (created in groups: SessionStore.create_many) -------------------------


def _many(path: Path, count: int, turns: int = 4) -> None:
    with path.open("w") as stream:
        for c in range(count):
            messages = [
                {"role": "user" if t % 2 == 0 else "assistant", "content": f"conv {c} turn {t}"}
                for t in range(turns)
            ]
            stream.write(json.dumps({"messages": messages}) + "\n")


def _transcripts(home: Path) -> dict[str, int]:
    """name -> number of message records, of every session file under ``home``."""
    out = {}
    for path in (home / "sessions").glob("*.jsonl"):
        lines = path.read_text().splitlines()
        out[path.stem] = sum(1 for line in lines if json.loads(line).get("type") == "message")
    return out


def test_many_sessions_private_complete_and_idempotent(
    cli: Cli, home: Path, tmp_path: Path
) -> None:
    source = tmp_path / "many.jsonl"
    _many(source, 700)  # more than one group of the service and of the file backend
    got = summary(cli, "--from", "openai", str(source))
    assert (got["sessions_created"], got["messages_added"]) == (700, 2800)
    assert _transcripts(home) == {f"openai-many-{n}": 4 for n in range(1, 701)}
    modes = {oct(p.stat().st_mode & 0o777) for p in (home / "sessions").iterdir()}
    assert modes == {"0o600"} and oct((home / "sessions").stat().st_mode & 0o777) == "0o700"
    assert not [p for p in (home / "sessions").iterdir() if p.name.endswith(".tmp")]
    listed = cli("list", "--json")
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)["sessions"]) == 700
    assert exported(cli, "openai-many-5")["messages"][1]["content"] == "conv 4 turn 1"
    again = summary(cli, "--from", "openai", str(source))
    assert (again["messages_added"], again["sessions_unchanged"]) == (0, 700)
    # a taken name in a group: SessionExists before anything of it is written
    from sessionctl import SessionExists, Store
    from sessionctl.backend.base import NewSession, SessionHeader

    backend = Store(home).backend
    header = SessionHeader(
        "01J0000000000000000000000A", "2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z"
    )
    with pytest.raises(SessionExists):
        backend.create_many(
            [NewSession("fresh", header, []), NewSession("openai-many-1", header, [])]
        )
    with pytest.raises(SessionExists):
        backend.create_many([NewSession("twice", header, []), NewSession("twice", header, [])])
    assert not backend.exists("fresh") and not backend.exists("twice")
    backend.close()


def test_a_killed_import_leaves_sessions_whole_or_absent(home: Path, tmp_path: Path) -> None:
    import signal
    import sys
    import time

    source = tmp_path / "big.jsonl"
    _many(source, 3000, turns=6)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "sessionctl", "import", "--from", "openai", str(source)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sessions = home / "sessions"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if sessions.is_dir() and any(p.suffix == ".jsonl" for p in sessions.iterdir()):
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.stderr is not None
    proc.stderr.close()
    found = _transcripts(home)
    assert 0 < len(found) < 3000  # killed in the middle
    assert set(found.values()) == {6}  # every session there is whole
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _transcripts(home) == {f"openai-big-{n}": 6 for n in range(1, 3001)}


@pytest.mark.parametrize(
    "value",
    [
        "2025-01-01T10:00:00.123456Z", "2025-01-01T10:00:00Z", "2025-01-01T10:00:00.123Z",
        "2024-02-29T23:59:59.999Z", "2025-02-30T10:00:00.000000Z", "2025-01-01T25:00:00.000Z",
        "1000-01-01T00:00:00Z", "0999-01-01T00:00:00Z", "2025-01-01T23:59:60Z",
        "2025-01-01T10:00:00.1234Z", "2025-01-01T10:00:00.123456+02:00", "9999-12-31T23:59:59Z",
    ],
)  # fmt: skip
def test_quick_time_check_gives_what_the_full_one_gives(value: str) -> None:
    from sessionctl.service.importing import Invalid, message_from
    from sessionctl.timeutil import format_iso, parse_iso

    expected: str | None = None
    try:
        normal = format_iso(parse_iso(value))
        parse_iso(normal)
        expected = normal
    except (ValueError, OverflowError):
        pass
    try:
        got: str | None = message_from({"role": "user", "created_at": value}, 1).created_at
    except Invalid:
        got = None
    assert got == expected


def test_stable_ids_hash_what_json_dumps_spells() -> None:
    import hashlib

    from sessionctl.sources import stable_id

    for parts in (
        ("llm", "01abc", "system"), ("chatgpt", "k", 3, -7, 10**30),
        ("x", 'é"\\\n\x00\u2028😀'), ("s", True, None, 1.5, ["a"]), ("claude-code",),
    ):  # fmt: skip
        digest = hashlib.sha256(json.dumps(list(parts), default=str).encode()).hexdigest()
        assert stable_id(*parts) == f"{parts[0].replace('-', '')}-{digest[:24]}"


def test_source_times_read_as_strftime_spells_them() -> None:
    import random
    from datetime import datetime, timezone

    from sessionctl.sources import _time

    def spelled(value: float | str) -> str:
        if isinstance(value, float):
            stamp = datetime.fromtimestamp(value, timezone.utc)
        else:
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    rng = random.Random(17)
    values: list[float | str] = [1.7e9, 0.0, 1700000000.9999, -6e10, 253402300799.999]
    values += [rng.uniform(-6.2e10, 2.5e11) for _ in range(2000)]
    values += ["2025-01-01T10:00:00.123456+02:00", "0999-05-01T00:00:00Z", "2025-01-01T23:59:59Z"]
    assert [_time(v) for v in values] == [spelled(v) for v in values]


def test_import_reports_progress_checking_then_importing(home: Path) -> None:
    from sessionctl import Store
    from sessionctl.service.bulk_import import import_checked
    from sessionctl.sources import read_source

    calls: list[tuple[str, int, int | None]] = []
    store = Store(home)
    path = str(DATA / "chatgpt-conversations.json")
    summary = import_checked(
        store, "chatgpt", lambda: read_source("chatgpt", path, branches=False),
        progress=lambda phase, done, total: calls.append((phase, done, total)),
    )  # fmt: skip
    n = summary["sessions_created"]
    assert n >= 1
    assert calls == [("checking", i, None) for i in range(1, n + 1)] + [
        ("importing", i, n) for i in range(1, n + 1)
    ]
    store.close()
