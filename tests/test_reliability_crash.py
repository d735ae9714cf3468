"""Crash: kill -9 a writer at random moments, then check that nothing acknowledged is lost.

DESIGN §4: a crash at any instant leaves the old or the new state plus at most one
torn last line, which readers ignore and the next writer repairs. Each cycle starts a
writer process on the same data dir in one of several modes (appends with some large
messages, drop-by-id rewrites and drop_last, fork, index catch-up and reindex, rename,
delete/restore, meta rewrites, or all mixed), kills it with SIGKILL after a random delay,
and then checks:

- every line of every transcript parses, except at most a torn last line;
- every message whose write had returned (logged, fsynced, by the writer *after* the
  call returned) is present, exactly once; nothing appears that was never written; a
  removal that returned is never undone;
- every command still works (recent, list, show, add, relevant on the session);
- the index repairs itself: catch-up succeeds and covers exactly the transcript;
- no temp file is left once the next writer of that session has run.

At least 30 kills in CI; by hand::

    SESSIONCTL_STRESS=1 pytest tests/test_reliability_crash.py -s            # 300 kills
    SESSIONCTL_STRESS_KILLS=1000 pytest tests/test_reliability_crash.py -s

This file is also the writer the test spawns (``python THIS_FILE HOME LOG SEED MODE``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import sys
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
KILLS = int(os.environ.get("SESSIONCTL_STRESS_KILLS") or (300 if STRESS else 32))
MODES = ("append", "drop", "fork", "index", "rename", "delete", "meta", "mixed")
MAIN, REN, DEL = "main", ("ren-a", "ren-b"), "del"
# Large messages make kills land inside a write() or a rewrite. Not larger: embedding
# cost grows faster than linearly with the text (the tokenizer sees all of it).
BIG = 128 * 1024


# -- the writer (runs in the spawned process, until it is killed) -----------------------------


class AckLog:
    """``begin`` before each operation, ``ack`` after it returned (written and fsynced)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def begin(self, **record: Any) -> None:
        os.write(self.fd, (json.dumps({"t": "begin", **record}) + "\n").encode())

    def ack(self, **record: Any) -> None:
        os.write(self.fd, (json.dumps({"t": "ack", **record}) + "\n").encode())
        os.fsync(self.fd)


def _run(args: list[str]) -> tuple[int, str]:
    from sessionctl.cli.app import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(args)
    if code != 0:
        raise RuntimeError(f"{args}: exit {code}: {err.getvalue()}")
    return code, out.getvalue()


class Writer:
    def __init__(self, home: str, log: str, seed: int, mode: str) -> None:
        from sessionctl import Store

        self.store = Store(home)
        self.log = AckLog(log)
        self.rng = random.Random(seed)
        self.tag = f"s{seed}"
        self.mode = mode
        self.n = 0
        self.embedder: Any = None

    def content(self, big: bool = False) -> str:
        self.n += 1
        text = f"{self.tag}-{self.n}"
        if big:  # large enough that a kill can land inside its write() or rewrite
            text += " " + "x" * BIG
        else:
            text += " " + self.rng.choice(("deploy friday", "lunch order", "the cat", "bug 42"))
        return text

    # -- operations ---------------------------------------------------------------------
    def add(self, session: str) -> None:
        how = self.rng.random()
        if how < 0.4:
            contents = [self.content(big=self.rng.random() < 0.05)]
            self.log.begin(op="add", session=session, contents=contents)
            _run(["add", "-s", session, "--role", "user", contents[0]])
        elif how < 0.7:
            contents = [self.content()]
            self.log.begin(op="add", session=session, contents=contents)
            self.store.session(session).add_message({"role": "user", "content": contents[0]})
        else:
            contents = [self.content(), self.content(big=self.rng.random() < 0.1)]
            self.log.begin(op="add", session=session, contents=contents)
            if how < 0.85:
                self.store.session(session).store(contents[0], contents[1])
            else:
                _run(["store", "-s", session, contents[0], contents[1]])
        self.log.ack(op="add", session=session, contents=contents)

    def drop(self) -> None:
        messages = self.store.session(MAIN).get_messages()
        if len(messages) < 5:
            for _ in range(5):
                self.add(MAIN)
            return
        how = self.rng.random()
        if how < 0.45:
            target = self.rng.choice(messages[1:])  # keep the first: the fork anchor
            self.log.begin(op="drop", session=MAIN, content=target.content)
            _run(["drop", "-s", MAIN, target.id])
        elif how < 0.9:
            target = messages[-1]
            self.log.begin(op="drop", session=MAIN, content=target.content)
            if how < 0.7:
                _run(["drop", "-s", MAIN])
            else:
                self.store.session(MAIN).drop()
        elif how < 0.95 and len(messages) > 40:
            self.log.begin(op="clear", session=MAIN)
            self.store.session(MAIN).clear()
            self.log.ack(op="clear", session=MAIN)
            return
        else:
            self.add(MAIN)
            return
        self.log.ack(op="drop", session=MAIN, content=target.content)

    def fork(self) -> None:
        forks = [n for n, _ in self.store.backend.names() if n.startswith("fk-")]
        if forks and (len(forks) > 3 or self.rng.random() < 0.4):
            name = self.rng.choice(forks)
            self.log.begin(op="purge", session=name)
            _run(["delete", name, "--purge"])
            self.log.ack(op="purge", session=name)
            return
        name = f"fk-{self.tag}-{self.n}"
        self.n += 1
        self.log.begin(op="fork", session=name)
        _run(["fork", MAIN, name])
        self.log.ack(op="fork", session=name)

    def index(self) -> None:
        if self.embedder is None:
            from sessionctl.service.memory import embedder_for

            self.embedder = embedder_for(self.store)
        how = self.rng.random()
        if how < 0.5:
            self.add(MAIN)
        self.log.begin(op="index")
        if how < 0.9:
            _sidecars(self.store).catch_up(MAIN, self.embedder)
        else:
            self.store.reindex([MAIN])
        self.log.ack(op="index")

    def rename(self) -> None:
        live = [n for n in REN if self.store.backend.exists(n)]
        if len(live) != 1:
            raise RuntimeError(f"rename pair broken: {live}")
        old = live[0]
        if self.rng.random() < 0.4:
            self.add(old)
            return
        new = REN[1] if old == REN[0] else REN[0]
        self.log.begin(op="rename", session=old, to=new)
        if self.rng.random() < 0.5:
            _run(["rename", old, new])
        else:
            self.store.rename(old, new)
        self.log.ack(op="rename", session=old, to=new)

    def delete(self) -> None:
        if self.store.backend.exists(DEL):
            if self.rng.random() < 0.4:
                self.add(DEL)
                return
            self.log.begin(op="delete", session=DEL)
            _run(["delete", DEL])
            self.log.ack(op="delete", session=DEL)
        else:
            self.log.begin(op="restore", session=DEL)
            _run(["restore", DEL])
            self.log.ack(op="restore", session=DEL)

    def meta(self) -> None:
        if self.rng.random() < 0.3:
            self.add(MAIN)
            return
        value = f"{self.tag}-{self.n}"
        self.n += 1
        self.log.begin(op="meta", session=MAIN, value=value)
        if self.rng.random() < 0.5:
            _run(["meta", MAIN, f"k={value}"])
        else:
            self.store.session(MAIN).update(metadata={"k": value})
        self.log.ack(op="meta", session=MAIN, value=value)

    def step(self) -> None:
        mode = self.mode if self.mode != "mixed" else self.rng.choice(MODES[:-1])
        if mode == "append":
            self.add(MAIN)
        else:
            getattr(self, mode)()

    def loop(self) -> None:
        if self.mode in ("index", "mixed"):
            from sessionctl.service.memory import embedder_for

            self.embedder = embedder_for(self.store)
            self.embedder.embed(["warm up"])
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        parent = os.getppid()
        while os.getppid() == parent:  # until SIGKILL (or the test went away)
            self.step()


# -- deterministic crash points (a fork server; the test asks it to crash at call N) -----------

MUTATORS = (
    "write", "pwrite", "fsync", "replace", "rename", "link", "unlink", "ftruncate", "mkdir",
    "rmdir",
)  # fmt: skip


class HashEmbedder:
    """A cheap deterministic embedder (unit vectors from a hash), for crash-point runs."""

    model_id = "test/hash-16"
    dimension = 16
    default_distance_threshold = 0.5

    def embed(self, texts: Any) -> Any:
        import hashlib

        import numpy as np

        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vec = np.random.default_rng(seed).standard_normal(self.dimension)
            rows.append(vec / np.linalg.norm(vec))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dimension)


def use_hash_embedder() -> None:
    from sessionctl.service import memory

    memory.embedder_for = lambda store, **_: HashEmbedder()


def crash_at(n: int) -> None:
    """SIGKILL this process at its n-th file-mutating call (a write is torn in half first)."""
    import signal

    calls = [0]

    def wrap(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == n:
                if name == "write" and len(args[1]) > 1:
                    real(args[0], bytes(args[1])[: len(args[1]) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        return call

    for name in MUTATORS:
        setattr(os, name, wrap(name, getattr(os, name)))


def crash_op(op: str, home: str) -> None:
    """One operation of the crash-point test, on the baseline data dir copied to ``home``."""
    from sessionctl import Store

    store = Store(home)
    main = store.session(MAIN)
    if op == "add":
        main.add_message({"role": "user", "content": "new-1 added"})
    elif op == "add-cli":
        _run(["add", "-s", MAIN, "--role", "user", "new-1 added"])
    elif op == "store":
        main.store("new-1 prompt", "new-2 " + "answer " * 2000)
    elif op == "repair":  # the baseline's main has a torn tail: this add repairs it first
        main.add_message({"role": "user", "content": "new-1 after repair"})
    elif op == "drop-id":
        main.drop(main.get_messages()[3].id)
    elif op == "drop-last":
        main.drop()
    elif op == "clear":
        main.clear()
    elif op == "meta":
        main.update(metadata={"k": "new"}, model="m2", system="be brief")
    elif op == "fork":
        store.fork(MAIN, "fk")
    elif op == "catch-up":
        _sidecars(store).catch_up(MAIN, HashEmbedder())
    elif op == "reindex":
        store.reindex([MAIN])
    elif op == "rename":
        store.rename(REN[0], REN[1])
    elif op == "delete":
        store.delete(DEL)
    elif op == "purge":
        store.delete(DEL, purge=True)
    elif op == "restore":
        store.restore("gone")
    elif op == "import":
        data = main.to_dict()
        store.from_dict(data, name="imp")
    elif op == "scrub":
        from sessionctl.service.scrub import check, scrub

        check(scrub(store, [MAIN], pattern=r"old-\d+"))
    else:
        raise SystemExit(f"unknown op {op}")


def zygote() -> None:
    """Read ``OP N HOME`` lines; fork a child that runs OP, crashing at call N; say how it ended."""
    import traceback

    use_hash_embedder()
    # Imported once, before any fork.
    import sessionctl.backend.files.sidecar
    import sessionctl.cli.app
    from sessionctl import Store

    del sessionctl, Store

    for line in sys.stdin:
        op, n, home = line.split()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.environ["SESSIONCTL_HOME"] = home
                crash_at(int(n))
                crash_op(op, home)
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            result = f"signal {os.WTERMSIG(status)}"
        else:
            result = f"exit {os.WEXITSTATUS(status)}"
        sys.stdout.write(result + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1] == "zygote":
        zygote()
        sys.exit(0)
    home, log, seed, mode = sys.argv[1:5]
    os.environ["SESSIONCTL_HOME"] = home
    Writer(home, log, int(seed), mode).loop()


# -- the test --------------------------------------------------------------------------------

import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import pytest  # noqa: E402

pytestmark = pytest.mark.slow


def tag_of(content: str) -> str:
    return content.split(" ", 1)[0]


def parse_lines(path: Path) -> list[dict[str, Any]]:
    """Every line parses; only the last may be torn (no newline, or not JSON)."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"{path.name}: line {number} of {len(lines)} does not parse: {line[:80]!r}")
    if tail:  # a torn last line: allowed after a crash, must not parse as a whole record
        with contextlib.suppress(ValueError):
            json.loads(tail)
            pytest.fail(f"{path.name}: the last record lost only its newline: {tail[:80]!r}")
    assert records and records[0]["type"] == "header"
    messages = [r for r in records[1:] if r.get("type") == "message"]
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(set(seqs)), f"{path.name}: seqs not strictly increasing"
    return records


class Model:
    """What must be, and what may be, in each session after a cycle."""

    def __init__(self) -> None:
        self.sessions: dict[str, set[str]] = {MAIN: set(), REN[0]: set(), DEL: set()}
        self.meta: str | None = None
        self.torn = 0  # torn last lines seen in the last check
        self.checks = 0

    def expectations(
        self, log: list[dict[str, Any]]
    ) -> tuple[dict[str, set[str]], dict[str, set[str]], set[str | None]]:
        """Return (required tags, allowed tags) per logical session, and allowed meta values."""
        required = {k: set(v) for k, v in self.sessions.items()}
        allowed = {k: set(v) for k, v in self.sessions.items()}
        metas: set[str | None] = {self.meta} if self.meta is not None else {None}
        for rec in log:
            if rec["t"] == "begin":
                key = _logical(rec.get("session"))
                if rec["op"] == "add":
                    allowed[key] |= {tag_of(c) for c in rec["contents"]}
                elif rec["op"] == "drop":
                    required[key].discard(tag_of(rec["content"]))
                elif rec["op"] == "clear":
                    required[key] = set()
                elif rec["op"] == "meta":
                    metas.add(rec["value"])
                continue
            key = _logical(rec.get("session"))
            if rec["op"] == "add":
                required[key] |= {tag_of(c) for c in rec["contents"]}
            elif rec["op"] == "drop":
                allowed[key].discard(tag_of(rec["content"]))
            elif rec["op"] == "clear":
                allowed[key] = set()
            elif rec["op"] == "meta":
                metas = {rec["value"]}
        return required, allowed, metas


def _logical(name: str | None) -> str:
    if name in REN:
        return REN[0]
    return name or MAIN


def _read_log(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_bytes().split(b"\n"):
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def _spawn(home: Path, log: Path, seed: int, mode: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, str(home), str(log), str(seed), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "SESSIONCTL_HOME": str(home), "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )


def _wait_ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != b"ready\n":
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"writer did not start: {line!r} {err.decode()[-3000:]}")


def _temps(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.name.endswith(".tmp")]


def test_kill_9_at_random_moments_loses_nothing_acknowledged(
    home: Path, tmp_path: Path, cli: Any
) -> None:
    from sessionctl import Store

    store = Store(home)
    store.session(MAIN).add_message({"role": "system", "content": "anchor-0 first"})
    store.session(REN[0]).add_message({"role": "user", "content": "ren-0 first"})
    store.session(DEL).add_message({"role": "user", "content": "del-0 first"})
    model = Model()
    model.sessions = {MAIN: {"anchor-0"}, REN[0]: {"ren-0"}, DEL: {"del-0"}}
    rng = random.Random(int(os.environ.get("SESSIONCTL_STRESS_SEED") or 1234))
    started = time.monotonic()
    stats: Counter[str] = Counter()
    for cycle in range(KILLS):
        mode = MODES[cycle % len(MODES)] if cycle < len(MODES) else rng.choice(MODES)
        log_path = tmp_path / f"cycle-{cycle}.log"
        t0 = time.monotonic()
        proc = _spawn(home, log_path, cycle, mode)
        try:
            _wait_ready(proc)
            stats["startup ms"] += int(1000 * (time.monotonic() - t0))
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        if proc.returncode != -signal.SIGKILL:
            pytest.fail(f"cycle {cycle} ({mode}): writer died by itself: {err.decode()[-3000:]}")
        log = _read_log(log_path)
        inflight = log[-1] if log and log[-1]["t"] == "begin" else None
        stats[mode] += 1
        stats["inflight:" + (inflight["op"] if inflight else "none")] += 1
        stats["acked ops"] += sum(1 for r in log if r["t"] == "ack")
        t0 = time.monotonic()
        _check_cycle(home, cli, model, log, f"cycle {cycle} ({mode}, in flight: {inflight})")
        stats["check ms"] += int(1000 * (time.monotonic() - t0))
        stats["torn tails"] += model.torn
    elapsed = time.monotonic() - started
    print(f"\n{KILLS} kills in {elapsed:.1f}s: {dict(sorted(stats.items()))}")


def _check_cycle(home: Path, cli: Any, model: Model, log: list[dict[str, Any]], where: str) -> None:
    from conftest import files_backend

    from sessionctl import Store

    store = Store(home)
    sessions = home / "sessions"
    required, allowed, metas = model.expectations(log)
    model.torn = 0
    model.checks += 1
    check_tag = f"check-{model.checks}"

    # 1. Files: every line parses (a torn last line at most); who exists.
    live = {n for n, _ in store.backend.names()}
    for name in live:
        raw = (sessions / f"{name}.jsonl").read_bytes()
        model.torn += bool(raw) and not raw.endswith(b"\n")
        parse_lines(sessions / f"{name}.jsonl")
    ren_live = [n for n in REN if n in live]
    assert len(ren_live) == 1, f"{where}: rename left {ren_live}"
    deleted = [i for i in files_backend(store).deleted() if i.name == DEL]
    assert (DEL in live) + len(deleted) == 1, f"{where}: delete/restore left {deleted}, live"

    # 2. Every acknowledged message is there exactly once; nothing never written is.
    where_is = {MAIN: MAIN, REN[0]: ren_live[0], DEL: DEL}
    for key, name in where_is.items():
        if name == DEL and DEL not in live:
            path = home / "trash" / str(deleted[0].trash_id) / f"{DEL}.jsonl"
            records = parse_lines(path)
            tags = [tag_of(r["content"]) for r in records[1:] if r.get("type") == "message"]
        else:
            tags = [tag_of(m.content) for m in store.session(name).get_messages()]
        assert len(tags) == len(set(tags)), f"{where}: {name} has a message twice"
        missing = required[key] - set(tags)
        assert not missing, f"{where}: {name} lost acknowledged messages {sorted(missing)[:5]}"
        extra = set(tags) - allowed[key]
        assert not extra, f"{where}: {name} has messages never written/ dropped {sorted(extra)}"
        model.sessions[key] = set(tags)
    meta = store.session(MAIN).header.metadata.get("k")
    assert meta in metas, f"{where}: meta k={meta!r}, expected one of {metas}"
    model.meta = meta

    # 3. Every command still works (the add is the next writer: it repairs a torn tail).
    for args in (
        ("recent", "-s", MAIN, "--json"),
        ("list", "--json"),
        ("show", MAIN, "--json"),
        ("add", "-s", MAIN, "--role", "user", f"{check_tag} after the kill"),
        ("recent", "-s", ren_live[0], "-k", "2", "--json"),
        ("relevant", "deploy", "-s", MAIN, "--json"),
    ):
        result = cli(*args)
        assert result.exit_code == 0, f"{where}: {args}: {result.stderr}"
        assert "Traceback" not in result.stderr
        if "--json" in args:
            json.loads(result.stdout)
        if args[0] == "add":
            model.sessions[MAIN].add(check_tag)
    assert (sessions / f"{MAIN}.jsonl").read_bytes().endswith(b"\n")
    # Keep the test's cost flat: at most two large messages stay in the main session.
    big = [m for m in store.session(MAIN).get_messages() if len(m.content) >= BIG]
    for message in big[:-2]:
        result = cli("drop", "-s", MAIN, message.id)
        assert result.exit_code == 0, f"{where}: drop: {result.stderr}"
        model.sessions[MAIN].discard(tag_of(message.content))

    # 4. The index repairs itself: catch-up covers exactly the transcript.
    for name in sorted({n for n, _ in store.backend.names()}):
        _assert_index_consistent(store, name, where)

    # 4b. The store-wide index too: its next writer covers every live message once.
    _assert_store_index_consistent(store, where)

    # 5. No temp file survives the next writer of its session (or of the store index).
    for tmp in _temps(home):
        if tmp.parent.name == "index":
            continue  # removed by the store index's writer above
        owner = tmp.name[1:].split("~")[0]
        for suffix in (".jsonl", ".faiss", ".index.json", ".rejects"):
            if owner.endswith(suffix):
                owner = owner[: -len(suffix)]
        with files_backend(store).lock(owner):  # what every writer of that session does first
            pass
    assert not _temps(home), f"{where}: temp files left: {_temps(home)}"


def _assert_store_index_consistent(store: Any, where: str) -> None:
    from sessionctl.backend.files.vectors.journal import load
    from sessionctl.service.memory import embedder_for

    warned: list[str] = []
    store.backend.warn = warned.append
    # The writers and the per-session checks embed with the default model; a
    # store-wide index built (from their per-session indexes) with another one
    # would rightly be rebuilt, with a warning.
    store.backend.vectors.catch_up(None, embedder_for(store))
    loaded = load(store.home / "index")
    dead = loaded.dead_mask()
    by_key = {s.key: s.name for s in loaded.sessions.values()}
    rows: dict[str, list[int]] = {}
    for row, gone in zip(loaded.rows, dead, strict=True):
        name = by_key[int(row["key"])]
        if not gone and name is not None:
            rows.setdefault(name, []).append(int(row["seq"]))
    for name, _ in store.backend.names():
        seqs = [m.seq for m in store.backend.messages(name)]
        assert sorted(rows.get(name, [])) == seqs, f"{where}: store index of {name}"
    assert not [w for w in warned if "rebuilt" in w and "missing" not in w], (where, warned)


def _assert_index_consistent(store: Any, name: str, where: str) -> None:
    from sessionctl.backend.files.manifest import Manifest
    from sessionctl.service.memory import embedder_for

    messages, report = _sidecars(store).catch_up(name, embedder_for(store))
    assert report.save_error is None, where
    manifest_path = store.backend.path(name, ".index.json")
    manifest = Manifest.from_json(manifest_path.read_bytes())
    assert list(manifest.seqs) == [m.seq for m in messages], f"{where}: index of {name}"
    assert manifest.transcript_uid == store.session(name).header.uid


# -- crash before every file-mutating call of each operation ---------------------------------

CRASH_OPS = (
    "add", "add-cli", "store", "repair", "drop-id", "drop-last", "clear", "meta", "fork",
    "catch-up", "reindex", "rename", "delete", "purge", "restore", "import", "scrub",
)  # fmt: skip
TORN = b'{"type":"message","id":"01TORN","seq":99,"role":"user","content":"torn-1 half'
NAMES = (MAIN, *REN, DEL, "gone", "fk", "imp")


def _build_baseline(home: Path) -> None:
    from sessionctl import Store

    store = Store(home)
    catch_up = _sidecars(store).catch_up
    main = store.session(MAIN)
    main.add_messages([{"role": "user", "content": f"old-{i} message"} for i in range(12)])
    main.update(metadata={"k": "old"})
    catch_up(MAIN, HashEmbedder())
    main.add_messages([{"role": "assistant", "content": f"late-{i} unindexed"} for i in range(3)])
    store.session(REN[0]).add_messages([{"role": "user", "content": f"ren-{i}"} for i in range(3)])
    catch_up(REN[0], HashEmbedder())
    store.session(DEL).add_messages([{"role": "user", "content": f"del-{i}"} for i in range(2)])
    catch_up(DEL, HashEmbedder())
    store.session("gone").add_message({"role": "user", "content": "gone-0"})
    store.delete("gone")


def _snapshot(home: Path) -> dict[str, Any]:
    from conftest import files_backend

    from sessionctl import Store
    from sessionctl.backend.files import transcript

    store = Store(home)
    live = {n for n, _ in store.backend.names()}
    trash = {i.name: i.trash_id for i in files_backend(store).deleted()}
    snap: dict[str, Any] = {}
    for name in NAMES:
        if name in live:
            session = store.session(name)
            header = session.header
            messages = tuple((m.role, m.content[:30]) for m in session.get_messages())
            snap[name] = ("live", messages, header.metadata, header.model, header.system)
        elif name in trash:
            scanned = transcript.scan(home / "trash" / str(trash[name]) / f"{name}.jsonl")
            snap[name] = ("trash", tuple((m.role, m.content[:30]) for m in scanned.messages))
    return snap


class Zygote:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
        )
        self.err = ""

    def run(self, op: str, n: int, home: Path) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{op} {n} {home}\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> str:
        if self.proc.returncode is None:
            _, self.err = self.proc.communicate(timeout=60)
        return self.err


def test_crash_before_every_write_step_leaves_old_or_new_state(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For each operation: SIGKILL it before its 1st, 2nd, ... file-mutating call (a write
    torn in half first). The state is then exactly the old or the new one, the next writer
    repairs it, the index catches up, and no temp file survives."""
    import shutil

    monkeypatch.setattr("sessionctl.service.memory.embedder_for", lambda store, **_: HashEmbedder())
    baseline = tmp_path / "baseline"
    _build_baseline(baseline)
    zygote = Zygote()
    crashes: Counter[str] = Counter()
    try:
        for op in CRASH_OPS:
            base = baseline
            if op == "repair":
                base = tmp_path / "baseline-torn"
                shutil.copytree(baseline, base, symlinks=True)
                with open(base / "sessions" / f"{MAIN}.jsonl", "ab") as f:
                    f.write(TORN)
            reference = tmp_path / f"{op}-ref"
            shutil.copytree(base, reference, symlinks=True)
            assert zygote.run(op, 0, reference) == "exit 0", zygote.close()
            before, after = _snapshot(base), _snapshot(reference)
            assert before != after or op in ("catch-up", "reindex", "repair"), op
            for n in range(1, 200):
                work = tmp_path / f"{op}-{n}"
                shutil.copytree(base, work, symlinks=True)
                result = zygote.run(op, n, work)
                if result == "exit 0":
                    break
                assert result == "signal 9", (op, n, result, zygote.close())
                crashes[op] += 1
                _check_crash_point(work, before, after, f"{op} killed at call {n}")
                shutil.rmtree(work)
            else:
                pytest.fail(f"{op} never finished")
    finally:
        err = zygote.close()
    assert "Traceback" not in err, err
    print(f"\ncrash points: {sum(crashes.values())} {dict(crashes)}")


def _check_crash_point(home: Path, before: Any, after: Any, where: str) -> None:
    from conftest import as_dicts, files_backend

    from sessionctl import Store

    store = Store(home)
    sessions = home / "sessions"
    live = sorted(n for n, _ in store.backend.names())
    for name in live:
        parse_lines(sessions / f"{name}.jsonl")
    state = _snapshot(home)
    assert state in (before, after), f"{where}: neither the old nor the new state:\n{state}"
    # Search shows only what readers show (not the half of a write cut short).
    visible = {(m.seq, m.content) for m in store.session(MAIN).get_messages()}
    hits = as_dicts(
        store.get_relevant("message", sessions=[MAIN], top_k=100, distance_threshold=2.0)
    )
    assert {(h["seq"], h["content"]) for h in hits} <= visible, where

    # The next writer: repairs a torn tail (setting it aside, never dropping it).
    main = sessions / f"{MAIN}.jsonl"
    raw = main.read_bytes()
    torn = raw[raw.rfind(b"\n") + 1 :]
    store.session(MAIN).add_message({"role": "user", "content": "recovered"})
    assert main.read_bytes().endswith(b"\n"), where
    if torn:
        rejects = (sessions / f"{MAIN}.rejects").read_text()
        kept = []
        for line in rejects.splitlines():
            with contextlib.suppress(ValueError):  # a record a crash tore (kept as text)
                kept.append(json.loads(line)["data"])
        assert torn.decode("utf-8", "backslashreplace") in kept, f"{where}: torn tail lost"
    for name in live:
        with files_backend(store).lock(name):  # what every writer of that session does first
            pass
    for name in sorted(n for n, _ in store.backend.names()):
        _assert_index_consistent(store, name, where)
    _assert_store_index_consistent(store, where)  # its writer removes its own temp files
    temps = [t for t in _temps(home) if t.parent.name != "index"]
    for tmp in temps:  # a session that no longer exists: its next writer (re)creates it
        owner = tmp.name[1:].split("~")[0].split(".")[0]
        with files_backend(store).lock(owner):
            pass
    assert not _temps(home), f"{where}: temp files left: {_temps(home)}"
