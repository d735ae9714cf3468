"""Concurrency: many processes write one session while others read, search, fork and prune.

DESIGN §4: concurrent writers never lose or interleave messages. Writers mix the
CLI (``run()`` in a loop inside a driver process, plus real ``python -m sessionctl``
processes) and the Python API; readers loop ``recent``/``list``/``show``; one long-lived
process loops ``relevant`` (real embedding model, loaded once), ``fork`` and ``prune``.
A second scenario races ``drop`` (last and by id) and ``clear`` against the appends.

CI size by default. Larger by hand::

    SESSIONCTL_STRESS=1 pytest tests/test_reliability_concurrency.py       # 8 procs x 200
    SESSIONCTL_STRESS_PROCS=8 SESSIONCTL_STRESS_MESSAGES=500 \
        pytest tests/test_reliability_concurrency.py

This file is also the driver the test spawns (``python THIS_FILE ROLE ...``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sessionctl.backend.files.sessionindex import SessionIndexes


def _sidecars(store: Any) -> SessionIndexes:
    """The file backend's per-session indexes (``Store.backend`` is typed as the Protocol)."""
    from sessionctl.backend.files.local import LocalBackend

    backend = store.backend
    assert isinstance(backend, LocalBackend)
    return backend.vectors.sessions


REPO = Path(__file__).resolve().parent.parent
STRESS = os.environ.get("SESSIONCTL_STRESS", "") not in ("", "0")
PROCS = int(os.environ.get("SESSIONCTL_STRESS_PROCS") or 8)
MESSAGES = int(os.environ.get("SESSIONCTL_STRESS_MESSAGES") or (200 if STRESS else 25))
SESSION = "shared"


# -- the driver (runs in the spawned processes) ------------------------------------------


class Log:
    """Append-only JSON-lines log of what a driver saw acknowledged."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def __call__(self, **record: Any) -> None:
        os.write(self.fd, (json.dumps(record) + "\n").encode())


def _cli(args: list[str]) -> tuple[int, str, str]:
    from sessionctl.cli.app import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(args)
    return code, out.getvalue(), err.getvalue()


_PARENT = os.getppid()
_DEADLINE = time.monotonic() + 3600


def _stopped(stop: str, rounds: int, minimum: int = 3) -> bool:
    if os.getppid() != _PARENT or time.monotonic() > _DEADLINE:
        raise SystemExit("the test went away")  # never outlive a failed test
    return os.path.exists(stop) and rounds >= minimum


def _track_removals(log: Log) -> None:
    """Log every message a rewrite, drop by id or drop_last removes (after it returned)."""
    from sessionctl.backend.files.local import LocalBackend

    rewrite, drop_last = LocalBackend.rewrite, LocalBackend.drop_last

    def logged_rewrite(self: Any, name: str, transform: Any) -> Any:
        removed: list[str] = []

        def spy(header: Any, messages: Any) -> Any:
            header, kept = transform(header, messages)
            keep = {m.id for m in kept}
            removed[:] = [m.id for m in messages if m.id not in keep]
            return header, kept

        result = rewrite(self, name, spy)
        log(op="removed", session=name, ids=removed)
        return result

    def logged_drop_last(self: Any, name: str) -> Any:
        message = drop_last(self, name)
        log(op="removed", session=name, ids=[message.id])
        return message

    drop = LocalBackend.drop

    # by id: a streamed rewrite
    def logged_drop(self: Any, name: str, message_id: str | None = None) -> Any:
        message = drop(self, name, message_id)
        log(op="removed", session=name, ids=[message.id])
        return message

    LocalBackend.rewrite = logged_rewrite  # type: ignore[method-assign]
    LocalBackend.drop_last = logged_drop_last  # type: ignore[method-assign]
    LocalBackend.drop = logged_drop  # type: ignore[method-assign]


def role_cli_writer(log: Log, tag: str, count: int) -> int:
    failures = 0
    for i in range(count):
        if i % 5 == 4:
            prompt, answer = f"{tag}-{i}", f"{tag}-{i}-answer"
            code, out, err = _cli(["store", "-s", SESSION, prompt, answer])
            ids = out.split()
            if code == 0 and len(ids) == 2:
                log(op="add", content=prompt, id=ids[0])
                log(op="add", content=answer, id=ids[1])
                continue
        else:
            code, out, err = _cli(["add", "-s", SESSION, "--role", "user", f"{tag}-{i}"])
            if code == 0 and out.strip():
                log(op="add", content=f"{tag}-{i}", id=out.strip())
                continue
        failures += 1
        log(op="fail", args=f"{tag}-{i}", code=code, err=err)
    return failures


def role_api_writer(log: Log, tag: str, count: int) -> int:
    from sessionctl import Store

    session = Store(os.environ["SESSIONCTL_HOME"]).session(SESSION)
    i = 0
    while i < count:
        kind = i % 3
        if kind == 0:
            written = [session.add_message({"role": "user", "content": f"{tag}-{i}"})]
            i += 1
        elif kind == 1:
            n = min(3, count - i)
            batch = [{"role": "tool", "content": f"{tag}-{i + j}"} for j in range(n)]
            written = session.add_messages(batch)
            i += n
        else:
            if i + 1 >= count:
                written = [session.add_message({"role": "user", "content": f"{tag}-{i}"})]
                i += 1
            else:
                written = list(session.store(f"{tag}-{i}", f"{tag}-{i + 1}", model="m"))
                i += 2
        for m in written:
            log(op="add", content=m.content, id=m.id, seq=m.seq)
    return 0


def role_reader(log: Log, stop: str) -> int:
    rounds = failures = 0
    while not _stopped(stop, rounds):
        for args in (
            ["recent", "-s", SESSION, "-k", "7", "--json"],
            ["list", "--json"],
            ["show", SESSION, "--json"],
            ["recent", "-k", "2", "--text"],
        ):
            code, out, err = _cli(args)
            problem = None
            if code != 0 or "Traceback" in err:
                problem = f"exit {code}: {err}"
            elif "--json" in args:
                data = json.loads(out)
                messages = data if args[0] == "recent" else data.get("messages", [])
                seqs = [m["seq"] for m in messages]
                if seqs != sorted(set(seqs)):
                    problem = f"seqs out of order: {seqs}"
            if problem is not None:
                failures += 1
                log(op="fail", args=args, problem=problem)
        rounds += 1
    log(op="rounds", rounds=rounds)
    return 1 if failures else 0


def role_memory(log: Log, stop: str, drops: str) -> int:
    """relevant (API, model loaded once), fork (CLI) and prune (CLI) in a loop."""
    from sessionctl import Store

    store = Store(os.environ["SESSIONCTL_HOME"])
    rounds = failures = 0
    while not _stopped(stop, rounds):
        try:
            hits = store.get_relevant("a message from a writer", sessions=[SESSION], top_k=3)
            assert isinstance(hits, list)
        except Exception as exc:  # report, don't die: the test reads the log
            failures += 1
            log(op="fail", args="relevant", problem=repr(exc))
        name = f"fork-{rounds}"
        code, out, err = _cli(["fork", SESSION, name])
        if code == 0:
            log(op="fork", name=name)
        else:
            failures += 1
            log(op="fail", args=["fork", name], problem=err)
        code, out, err = _cli(["prune", "--older-than", "1000d"])
        if code != 0 or out.strip():
            failures += 1
            log(op="fail", args="prune", problem=f"exit {code}, removed {out!r}: {err}")
        rounds += 1
    log(op="rounds", rounds=rounds)
    return 1 if failures else 0


def role_dropper(log: Log, stop: str) -> int:
    """drop (last and by id) and clear, through the CLI and the API, racing the writers."""
    from sessionctl import MessageNotFound, Store

    _track_removals(log)
    session = Store(os.environ["SESSIONCTL_HOME"]).session(SESSION)
    rng = random.Random(os.getpid())
    rounds = failures = 0
    clear_at = rng.randint(3, 12)
    while not _stopped(stop, rounds, minimum=clear_at + 1):
        choice = rng.random()
        if rounds == clear_at:  # one clear per dropper, early: later adds survive it
            if rng.random() < 0.5:
                code, _, err = _cli(["clear", "-s", SESSION])
                ok = code == 0
            else:
                session.clear()
                ok, err = True, ""
        elif choice < 0.5:  # half the rounds only read: many messages survive to be checked
            ok, err = isinstance(session.get_recent(top_k=3), list), ""
        elif choice < 0.7:
            code, _, err = _cli(["drop", "-s", SESSION])
            ok = code in (0, 3)
        elif choice < 0.9:
            recent = session.get_recent(top_k=20)
            if recent:
                chosen = rng.choice(recent)
                assert isinstance(chosen, dict)  # get_recent without as_text: dicts
                target = chosen["id"]
                code, _, err = _cli(["drop", "-s", SESSION, target])
                ok = code in (0, 3)  # 3: another dropper or a clear got it first
            else:
                ok, err = True, ""
        else:
            try:
                session.drop()
            except MessageNotFound:
                pass
            ok, err = True, ""
        if not ok:
            failures += 1
            log(op="fail", args="drop/clear", problem=err)
        rounds += 1
        time.sleep(rng.random() * 0.02)
    log(op="rounds", rounds=rounds)
    return 1 if failures else 0


def driver_main(argv: list[str]) -> int:
    role, log_path, *rest = argv
    log = Log(log_path)
    if role == "cli-writer":
        return role_cli_writer(log, rest[0], int(rest[1]))
    if role == "api-writer":
        return role_api_writer(log, rest[0], int(rest[1]))
    if role == "reader":
        return role_reader(log, rest[0])
    if role == "memory":
        return role_memory(log, rest[0], rest[1])
    if role == "dropper":
        return role_dropper(log, rest[0])
    raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    sys.exit(driver_main(sys.argv[1:]))


# -- the tests -----------------------------------------------------------------------------

import itertools  # noqa: E402

import pytest  # noqa: E402

pytestmark = pytest.mark.slow
_RUNNING: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap() -> Any:
    """Never leave a driver running (or its pipes open) when a test fails."""
    yield
    while _RUNNING:
        proc = _RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "SESSIONCTL_HOME": str(home), "PYTHONPATH": str(REPO)}


def _spawn(home: Path, logs: Path, role: str, *args: str) -> tuple[subprocess.Popen[str], Path]:
    log = logs / f"{role}-{len(list(logs.iterdir()))}.log"
    log.touch()
    proc = subprocess.Popen(
        [sys.executable, __file__, role, str(log), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(home),
        cwd=REPO,
    )
    _RUNNING.append(proc)
    return proc, log


def _records(logs: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(logs.iterdir()):
        out += [json.loads(line) for line in path.read_text().splitlines()]
    return out


def read_transcript(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every line parses, ends with a newline, seqs strictly increase, ids unique."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), "torn last line"
    lines = raw.split(b"\n")[:-1]
    records = [json.loads(line) for line in lines]  # no torn or interleaved line
    header, rest = records[0], records[1:]
    assert header["type"] == "header"
    assert all(r["type"] in ("message", "dropped") for r in rest)
    messages = [r for r in rest if r["type"] == "message"]
    seqs = [m["seq"] for m in messages]
    assert all(a < b for a, b in itertools.pairwise(seqs)), "seq not increasing"
    assert len({m["id"] for m in messages}) == len(messages), "duplicate id"
    return header, messages


def assert_index_consistent(home: Path, name: str) -> None:
    """After catch-up the index covers exactly the transcript's seqs, and stays put."""
    from sessionctl import Store
    from sessionctl.backend.files.manifest import Manifest
    from sessionctl.service.memory import embedder_for

    store = Store(home)
    embedder = embedder_for(store)
    sidecars = _sidecars(store)
    messages, report = sidecars.catch_up(name, embedder)
    assert report.save_error is None
    assert report.total == len(messages)
    manifest = Manifest.from_json((home / "sessions" / f"{name}.index.json").read_bytes())
    assert list(manifest.seqs) == [m.seq for m in messages]
    assert manifest.transcript_uid == store.session(name).header.uid
    again = sidecars.index(name).sync(
        [(m.seq, m.content) for m in messages], embedder, transcript_uid=manifest.transcript_uid
    )
    assert (again.added, again.removed, again.rebuilt_reason) == (0, 0, None)


def _finish(procs: list[tuple[subprocess.Popen[str], Path]], timeout: float = 600) -> None:
    for proc, log in procs:
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, (log.name, err[-2000:], log.read_text()[-2000:])
        assert "Traceback" not in err, err


def _real_cli_adds(home: Path, n: int) -> list[subprocess.Popen[str]]:
    """Real ``python -m sessionctl add`` processes, each appending one message from stdin."""
    procs = []
    for i in range(n):
        source = home.parent / f"real-{i}.txt"
        source.write_text(f"real-{i}\n")
        with source.open() as stdin:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sessionctl", "add", "-s", SESSION, "--role", "llm"],
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_env(home),
                cwd=REPO,
            )
        _RUNNING.append(proc)
        procs.append(proc)
    return procs


def _collect_real(procs: list[subprocess.Popen[str]]) -> dict[str, str]:
    acked = {}
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "Traceback" not in err, err
        acked[out.strip()] = f"real-{i}"
    return acked


def test_appends_from_many_processes_lose_nothing(home: Path, tmp_path: Path) -> None:
    from sessionctl import Store

    Store(home).session(SESSION).add_message({"role": "system", "content": "start"})
    logs, stop = tmp_path / "logs", tmp_path / "stop"
    logs.mkdir()
    started = time.monotonic()
    others = [
        _spawn(home, logs, "reader", str(stop)),
        _spawn(home, logs, "memory", str(stop), "no-drops"),
    ]
    writers = [
        _spawn(home, logs, "cli-writer" if n % 2 else "api-writer", f"w{n}", str(MESSAGES))
        for n in range(PROCS)
    ]
    real = _real_cli_adds(home, 3)
    real_acked = _collect_real(real)
    _finish(writers)
    stop.touch()
    _finish(others)
    elapsed = time.monotonic() - started

    records = _records(logs)
    assert not [r for r in records if r["op"] == "fail"]
    acked = {r["id"]: r["content"] for r in records if r["op"] == "add"}
    acked.update(real_acked)
    _, messages = read_transcript(home / "sessions" / f"{SESSION}.jsonl")
    got = {m["id"]: m["content"] for m in messages[1:]}
    assert messages[0]["content"] == "start"
    assert len(messages) == 1 + len(acked)
    assert got == acked  # every message present exactly once, nothing else
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))  # consecutive
    assert [m["pos"] for m in messages] == list(range(1, len(messages) + 1))
    api_seqs = {r["id"]: r["seq"] for r in records if r["op"] == "add" and "seq" in r}
    assert all(next(m for m in messages if m["id"] == i)["seq"] == s for i, s in api_seqs.items())
    for n in range(PROCS):  # one writer's messages keep its order
        mine = [m["content"] for m in messages if m["content"].startswith(f"w{n}-")]
        assert len(mine) == (MESSAGES + (MESSAGES + 1) // 5 if n % 2 else MESSAGES)
        order = [m["content"] for m in messages if m["content"].split("-")[0] == f"w{n}"]
        assert order == sorted(order, key=lambda c: (int(c.split("-")[1]), c))
    assert Store(home).session(SESSION).info().messages == len(messages)

    # Every fork is a snapshot: a prefix of the final transcript, with fresh ids.
    contents = [m["content"] for m in messages]
    forks = [r["name"] for r in records if r["op"] == "fork"]
    assert forks
    for name in forks:
        fork_header, copied = read_transcript(home / "sessions" / f"{name}.jsonl")
        assert fork_header["parent"] == SESSION
        assert [m["content"] for m in copied] == contents[: len(copied)]
        assert [m["seq"] for m in copied] == list(range(1, len(copied) + 1))
        assert not {m["id"] for m in copied} & set(got)
    assert_index_consistent(home, SESSION)
    assert_index_consistent(home, forks[-1])
    assert not [p for p in (home / "sessions").iterdir() if p.name.endswith(".tmp")]
    print(f"\n{PROCS} writers x {MESSAGES}: {len(messages)} messages, {len(forks)} forks "
          f"in {elapsed:.1f}s")  # fmt: skip


def test_drop_and_clear_racing_appends(home: Path, tmp_path: Path) -> None:
    from sessionctl import Store

    start = Store(home).session(SESSION).add_message({"role": "system", "content": "start"})
    logs, stop = tmp_path / "logs", tmp_path / "stop"
    logs.mkdir()
    started = time.monotonic()
    others = [
        _spawn(home, logs, "dropper", str(stop)),
        _spawn(home, logs, "dropper", str(stop)),
        _spawn(home, logs, "reader", str(stop)),
        _spawn(home, logs, "memory", str(stop), "drops"),
    ]
    writers = [
        _spawn(home, logs, "cli-writer" if n % 2 else "api-writer", f"w{n}", str(MESSAGES))
        for n in range(max(2, PROCS // 2))
    ]
    real_acked = _collect_real(_real_cli_adds(home, 2))
    _finish(writers)
    stop.touch()
    _finish(others)

    records = _records(logs)
    assert not [r for r in records if r["op"] == "fail"]
    acked = {r["id"]: r["content"] for r in records if r["op"] == "add"}
    acked.update(real_acked)
    acked[start.id] = "start"
    removed = [i for r in records if r["op"] == "removed" for i in r["ids"]]
    assert len(removed) == len(set(removed)), "a message was removed twice"
    assert removed, "the droppers removed nothing: the race was not exercised"
    _, messages = read_transcript(home / "sessions" / f"{SESSION}.jsonl")
    present = {m["id"]: m["content"] for m in messages}
    # Exactly the acknowledged messages that no acknowledged drop or clear removed.
    assert set(removed) <= set(acked)
    assert present == {i: c for i, c in acked.items() if i not in set(removed)}
    info = Store(home).session(SESSION).info()
    assert info.messages == len(messages)
    assert_index_consistent(home, SESSION)
    assert not [p for p in (home / "sessions").iterdir() if p.name.endswith(".tmp")]
    rounds = sum(r["rounds"] for r in records if r["op"] == "rounds")
    print(f"\n{len(writers)} writers x {MESSAGES} racing 2 droppers: {len(acked)} acknowledged, "
          f"{len(removed)} removed by drop/clear, {len(messages)} left; {rounds} reader/dropper "
          f"rounds, {time.monotonic() - started:.1f}s")  # fmt: skip


# -- an MCP server among the writers ------------------------------------------------


def test_an_mcp_server_writing_beside_cli_writers_loses_nothing(home: Path) -> None:
    """20 add_messages and 20 searches at once through one MCP client, while two CLI
    processes each add 20 messages to the same session."""
    import anyio
    from mcp import Client
    from test_mcp import _env, seed, stdio, with_client

    from sessionctl import Store

    history = seed(home)

    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(w)],
            env=_env(history),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for w in range(2)
    ]

    async def body(client: Client) -> list[Any]:
        results: list[Any] = []

        async def add(i: int) -> None:
            message = {"role": "user", "content": f"mcp note {i}"}
            results.append(
                await client.call_tool(
                    "add_messages", {"session": "work-shared", "messages": [message]}
                )
            )

        async def search(i: int) -> None:
            results.append(await client.call_tool("search_history", {"query": f"note {i}"}))

        async with anyio.create_task_group() as tasks:
            for i in range(20):
                tasks.start_soon(add, i)
                tasks.start_soon(search, i)
        return results

    results = with_client(stdio(history, "--allow-write"), body)
    for w in writers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    assert not any(r.is_error for r in results), [r.content[0].text for r in results if r.is_error]
    store = Store(history)
    messages = store.session("work-shared").get_messages()
    store.close()
    contents = sorted(m.content for m in messages)
    expected = sorted(
        [f"mcp note {i}" for i in range(20)] + [f"cli {w} {i}" for w in range(2) for i in range(20)]
    )
    assert contents == expected
    assert sorted(m.seq for m in messages) == list(range(1, 61))


_WRITER = """
import sys
from sessionctl.cli.app import run
w = sys.argv[1]
for i in range(20):
    assert run(["add", "-s", "work-shared", "--role", "user", f"cli {w} {i}"]) == 0
"""
