"""`sessionctl scrub`: matches leave transcripts, set-aside lines and indexes, verified."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_redact import fake_secrets, grep_home


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessionctl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr
    return proc


def test_scrub_literal_and_secrets_leave_nothing_on_disk(home: Path) -> None:
    secrets = fake_secrets(23)[:4]
    for i, (_kind, _lit, text) in enumerate(secrets):
        ok(cli("add", "-s", f"s{i % 2}", "--role", "user", "--no-redact", text))
    ok(cli("add", "-s", "s0", "--role", "user", "--no-redact", "my password is hunter2-xyz"))
    ok(cli("add", "-s", "clean", "--role", "user", "nothing secret here"))
    ok(cli("relevant", "password", "-k", "3"))  # builds the indexes from the raw text
    literals = [s[1] for s in secrets] + ["hunter2-xyz"]
    assert grep_home(home, literals)

    dry = json.loads(
        ok(cli("scrub", "--literal", "hunter2-xyz", "--all", "--dry-run", "--json")).stdout
    )
    assert dry["dry_run"] and dry["matches"] == 1
    assert grep_home(home, ["hunter2-xyz"])  # a dry run changes nothing

    report = json.loads(ok(cli("scrub", "--literal", "hunter2-xyz", "--all", "--json")).stdout)
    assert report["verified"] and report["matches"] == 1
    assert {s["session"]: s["matches"] for s in report["sessions"]} == {
        "clean": 0,
        "s0": 1,
        "s1": 0,
    }
    report = json.loads(ok(cli("scrub", "--secrets", "-s", "s0", "-s", "s1", "--json")).stdout)
    assert report["verified"] and report["matches"] == 4
    assert grep_home(home, literals) == []
    shown = json.loads(ok(cli("show", "s0", "--json")).stdout)
    counts = [m.get("metadata", {}).get("redactions") for m in shown["messages"]]
    assert counts[-1] == {"scrubbed": 1}
    assert all(c for c in counts)
    # the rebuilt index finds the scrubbed text
    hits = json.loads(ok(cli("relevant", "password", "-s", "s0", "--json")).stdout)
    assert any("[REDACTED:scrubbed]" in h["content"] for h in hits)


def test_scrub_reaches_set_aside_lines_and_the_system_prompt(home: Path) -> None:
    ok(cli("add", "-s", "w", "--role", "user", "first"))
    path = home / "sessions" / "w.jsonl"
    with path.open("a") as f:
        f.write('{"broken": "hunter2-abc\n')  # a corrupt line holding the literal
    ok(cli("add", "-s", "w", "--role", "user", "second"))  # sets the bad line aside
    assert (home / "sessions" / "w.rejects").read_text().count("hunter2-abc") == 1
    from sessionctl import Store
    from sessionctl.config import load_settings

    store = Store(settings=load_settings(home=home)._replace(redact=False))
    store.session("w").update(system="you know hunter2-abc")
    ok(cli("scrub", "--pattern", r"hunter2-[a-z]+", "-s", "w"))
    assert grep_home(home, ["hunter2-abc"]) == []
    assert Store(home).session("w").header.system == "you know [REDACTED:scrubbed]"


def test_scrub_trash_reaches_deleted_sessions_and_keeps_their_times(home: Path) -> None:
    ok(cli("add", "-s", "gone", "--role", "user", "--no-redact", "the code is hunter2-qq"))
    ok(cli("add", "-s", "gone", "--role", "assistant", "noted"))
    ok(cli("relevant", "code", "-s", "gone"))  # a sidecar index that holds vectors of it
    ok(cli("add", "-s", "live", "--role", "user", "--no-redact", "also hunter2-qq here"))
    ok(cli("delete", "gone"))
    ok(cli("add", "-s", "gone", "--role", "user", "--no-redact", "a new gone: hunter2-qq"))
    ok(cli("delete", "gone"))  # two trash entries of the same name
    before = json.loads(ok(cli("list", "--deleted", "--json")).stdout)["sessions"]
    assert len(before) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in (home / "trash").rglob("*.jsonl")}

    # without --trash the trash is left alone (and said nothing about)
    ok(cli("scrub", "--literal", "hunter2-qq", "--all"))
    assert len(grep_home(home / "trash", ["hunter2-qq"])) == 2
    assert grep_home(home / "sessions", ["hunter2-qq"]) == []

    # -s NAME --trash reaches a name that only the trash holds
    report = json.loads(
        ok(cli("scrub", "--literal", "hunter2-qq", "-s", "gone", "--trash", "--json")).stdout
    )
    assert report["verified"]
    assert sorted((s["session"], s["matches"]) for s in report["sessions"]) == [
        ("gone", 1),
        ("gone", 1),
    ]
    assert all(s["trash_id"] for s in report["sessions"])
    assert grep_home(home, ["hunter2-qq"]) == []
    assert not list((home / "trash").rglob("*.faiss"))  # derived vectors of the old text gone
    # the last activity is kept (what a restore takes); the deletion time can only move
    # later (the kernel's ctime of the entry is one of its witnesses), so prune --purge
    # never removes a scrubbed entry sooner than it would have
    assert {p: p.stat().st_mtime_ns for p in (home / "trash").rglob("*.jsonl")} == mtimes
    after = json.loads(ok(cli("list", "--deleted", "--json")).stdout)["sessions"]
    assert [(i["name"], i["trash_id"]) for i in after] == [
        (i["name"], i["trash_id"]) for i in before
    ]
    assert [i["updated_at"] for i in after] == [i["updated_at"] for i in before]
    assert all(a["deleted_at"] >= b["deleted_at"] for a, b in zip(after, before, strict=True))

    ok(cli("restore", "gone"))
    shown = json.loads(ok(cli("show", "gone", "--json")).stdout)
    assert shown["messages"][0]["content"] == "a new gone: [REDACTED:scrubbed]"
    hits = json.loads(ok(cli("relevant", "new gone", "-s", "gone", "--json")).stdout)
    assert hits and "[REDACTED:scrubbed]" in hits[0]["content"]  # its index is rebuilt
    # the second entry, scrubbed in the trash, restores whole after the first is renamed away
    ok(cli("rename", "gone", "gone2"))
    ok(cli("restore", "gone"))
    shown = json.loads(ok(cli("show", "gone", "--json")).stdout)
    assert [m["content"] for m in shown["messages"]] == ["the code is [REDACTED:scrubbed]", "noted"]
    # a name neither live nor deleted is still an unknown session
    assert cli("scrub", "--literal", "x", "-s", "never", "--trash").returncode == 3


def test_scrub_usage_errors(home: Path) -> None:
    ok(cli("add", "-s", "w", "--role", "user", "x"))
    for args in (
        ["--all"],
        ["--literal", "a", "--pattern", "b", "--all"],
        ["--literal", "a"],
        ["--literal", "a", "-s", "w", "--all"],
        ["--pattern", "(", "--all"],
        ["--pattern", "a*", "--all"],
        ["--literal", "", "--all"],
    ):
        proc = cli("scrub", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("sessionctl: error: ") and proc.stderr.count("\n") == 1
    assert cli("scrub", "--literal", "a", "-s", "nope").returncode == 3


def test_kill_during_scrub_leaves_each_session_scrubbed_or_untouched(home: Path) -> None:
    from sessionctl import Store
    from sessionctl.config import load_settings

    store = Store(settings=load_settings(home=home)._replace(redact=False))
    names = [f"k{i:02d}" for i in range(12)]
    for name in names:
        store.session(name).add_messages(
            [{"role": "user", "content": f"{i} SECRET-LIT-{i} " + "pad " * 3000} for i in range(40)]
        )
    rng = random.Random(5)
    outcomes = {"scrubbed": 0, "untouched": 0}
    for _attempt in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "sessionctl", "scrub", "--pattern", r"SECRET-LIT-\d+", "--all"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 1.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for name in names:
            left = sum("SECRET-LIT-" in m.content for m in store.session(name).get_messages())
            assert left in (0, 40), (name, left)
            outcomes["scrubbed" if left == 0 else "untouched"] += 1
        if outcomes["untouched"] == 0:
            break
        # put the scrubbed ones back for the next attempt
        for name in names:
            session = store.session(name)
            if "SECRET-LIT-" not in session.get_messages()[0].content:
                session.clear()
                session.add_messages(
                    [
                        {"role": "user", "content": f"{i} SECRET-LIT-{i} " + "pad " * 3000}
                        for i in range(40)
                    ]
                )
    ok(cli("scrub", "--pattern", r"SECRET-LIT-\d+", "--all"))
    assert grep_home(home, ["SECRET-LIT-"]) == []
