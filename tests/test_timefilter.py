"""--since / --until on relevant, recent, list (and export), and their Python API.

Corpora with fixed timestamps (written as transcripts and imported, so every
message keeps its own time) spanning 30 days; relative bounds against a
session whose messages are hours and days old.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import Cli, set_activity

from sessionctl import Store
from sessionctl.errors import UsageError
from sessionctl.service.timefilter import time_window
from sessionctl.timeutil import format_iso

BASE = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def write_session(
    path: Path, name: str, texts: list[tuple[str, datetime]], created: datetime | None = None
) -> Path:
    """A transcript file for `import` whose messages carry the given times."""
    created = created or texts[0][1]
    header = {
        "type": "header", "format": "sessionctl-transcript", "version": 1, "name": name,
        "created_at": format_iso(created), "updated_at": format_iso(texts[-1][1]),
        "model": None, "system": None, "metadata": {}, "parent": None, "parent_message": None,
    }  # fmt: skip
    lines = [json.dumps(header)]
    for seq, (text, when) in enumerate(texts, 1):
        role = "user" if seq % 2 else "assistant"
        lines.append(
            json.dumps(
                {
                    "type": "message",
                    "id": f"01TIME{name.upper()}{seq:04d}",
                    "seq": seq,
                    "role": role,
                    "content": text,
                    "created_at": format_iso(when),
                }
            )
        )
    file = path / f"{name}.import.jsonl"
    file.write_text("\n".join(lines) + "\n")
    return file


def imported(
    cli: Cli, tmp_path: Path, home: Path, name: str, texts: list[tuple[str, datetime]]
) -> None:
    file = write_session(tmp_path, name, texts)
    result = cli("import", str(file))
    assert result.exit_code == 0, result.stderr
    # last active when its last message was written, as if used back then
    set_activity(home / "sessions" / f"{name}.jsonl", texts[-1][1].timestamp())


def days(first: int, last: int, what: str = "note") -> list[tuple[str, datetime]]:
    return [(f"day {d} {what}", BASE + timedelta(days=d)) for d in range(first, last + 1)]


# -- parsing the bounds ---------------------------------------------------------


def test_bounds_durations_dates_timestamps() -> None:
    now = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc)
    assert time_window("30m", now=now).since == now - timedelta(minutes=30)
    assert time_window("24h", "1h", now=now) == (
        now - timedelta(hours=24),
        now - timedelta(hours=1),
    )
    w = time_window("2026-11-02", "2026-11-02", now=now)  # one whole day, both inclusive
    assert w.since == datetime(2026, 11, 2, tzinfo=timezone.utc)
    assert w.until == datetime(2026, 11, 2, 23, 59, 59, 999999, tzinfo=timezone.utc)
    assert time_window(until="2026-11-02T09:30:00", now=now).until == datetime(
        2026, 11, 2, 9, 30, tzinfo=timezone.utc
    )  # naive: UTC
    assert time_window(since="2026-11-02T09:30:00+01:00").since == datetime(
        2026, 11, 2, 8, 30, tzinfo=timezone.utc
    )
    assert time_window(date(2026, 11, 2), date(2026, 11, 2)) == w
    assert time_window().open


@pytest.mark.parametrize(
    ("since", "until", "says"),
    [
        ("yesterday", None, "invalid --since 'yesterday'"),
        (None, "7 days", "invalid --until '7 days'"),
        ("0d", None, "invalid --since '0d'"),
        ("2026-13-01", None, "invalid --since"),
        ("2026-11-05", "2026-11-01", "is after --until"),
        ("1h", "2d", "is after --until"),
    ],
)
def test_bad_bounds_are_usage_errors(since: str | None, until: str | None, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        time_window(since, until)


@pytest.mark.parametrize(
    "args",
    [
        ["recent", "a", "--since", "yesterday"],
        ["list", "--until", "soon"],
        ["relevant", "x", "--since", "2026-11-05", "--until", "2026-11-01"],
        ["export", "a", "--since", "last week"],
        ["list", "--deleted", "--since", "7d"],
    ],
)
def test_bad_bounds_from_the_shell_are_exit_2(
    cli: Cli, tmp_path: Path, home: Path, args: list[str]
) -> None:
    imported(cli, tmp_path, home, "a", days(0, 2))
    before = sorted(p.name for p in (home / "sessions").iterdir())
    result = cli(*args)
    assert result.exit_code == 2, result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in (home / "sessions").iterdir()) == before


# -- recent ---------------------------------------------------------------------


def test_recent_within_a_window_of_dates(cli: Cli, tmp_path: Path, home: Path) -> None:
    imported(cli, tmp_path, home, "a", days(0, 29))
    out = cli(
        "recent", "a", "-k", "100", "--since", "2026-11-11", "--until", "2026-11-13", "--json"
    )
    assert out.exit_code == 0, out.stderr
    assert [m["content"] for m in json.loads(out.stdout)] == [
        "day 10 note",
        "day 11 note",
        "day 12 note",
    ]
    # -k cuts after the window: the last two inside it
    out = cli("recent", "a", "-k", "2", "--until", "2026-11-13", "--text")
    assert out.stdout.splitlines() == ["day 11 note", "day 12 note"]
    # either bound alone; an empty window is no error
    out = cli("recent", "a", "-k", "100", "--since", "2026-11-29", "--text")
    assert out.stdout.splitlines() == ["day 28 note", "day 29 note"]
    out = cli("recent", "a", "--until", "2020-01-01", "--json")
    assert (out.exit_code, json.loads(out.stdout)) == (0, [])
    # with --role too
    out = cli("recent", "a", "-k", "100", "--since", "2026-11-11", "--until", "2026-11-13",
              "--role", "user", "--text")  # fmt: skip
    assert out.stdout.splitlines() == ["day 10 note", "day 12 note"]


def test_recent_relative_bounds(cli: Cli, home: Path) -> None:
    store = Store(home)
    session = store.session("r")
    session.add_messages([{"role": "user", "content": "fresh"}])
    assert session.get_recent(since="1h", as_text=True) == ["fresh"]
    assert session.get_recent(until="1h") == []
    assert session.get_recent(
        since=datetime.now(timezone.utc) - timedelta(minutes=5), as_text=True
    ) == ["fresh"]
    with pytest.raises(UsageError):
        session.get_recent(since=42)  # type: ignore[arg-type]


# -- list -------------------------------------------------------------------------


def test_list_keeps_sessions_whose_activity_overlaps(cli: Cli, tmp_path: Path, home: Path) -> None:
    imported(cli, tmp_path, home, "early", days(0, 9))  # Nov 1 - 10
    imported(cli, tmp_path, home, "middle", days(10, 19))  # Nov 11 - 20
    imported(cli, tmp_path, home, "late", days(20, 29))  # Nov 21 - 30

    def names(*args: str) -> list[str]:
        out = cli("list", "--json", *args)
        assert out.exit_code == 0, out.stderr
        return [s["name"] for s in json.loads(out.stdout)["sessions"]]

    assert names() == ["late", "middle", "early"]
    assert names("--since", "2026-11-15") == ["late", "middle"]
    assert names("--until", "2026-11-11") == ["middle", "early"]  # middle began on Nov 11
    assert names("--since", "2026-11-12", "--until", "2026-11-13") == ["middle"]
    assert names("--since", "2026-12-01T00:00:00Z") == []
    # pages of the filtered list: the cursor continues inside the window
    out = cli("list", "--json", "--limit", "1", "--until", "2026-11-25")
    page = json.loads(out.stdout)
    assert [s["name"] for s in page["sessions"]] == ["late"]
    nxt = json.loads(cli("list", "--json", "--limit", "1", "--until", "2026-11-25",
                         "--cursor", page["next_cursor"]).stdout)  # fmt: skip
    assert [s["name"] for s in nxt["sessions"]] == ["middle"]
    store = Store(home)
    assert [i.name for i in store.list_sessions(since=date(2026, 11, 25)).sessions] == ["late"]


# -- relevant -------------------------------------------------------------------


def test_relevant_finds_the_one_message_in_the_window_however_deep(
    cli: Cli, tmp_path: Path, home: Path
) -> None:
    """The target sits at unfiltered rank 40; the window holds only it: -k 1 returns it."""
    corpus = [
        (
            f"the deploy of service {n} failed because the database was locked",
            BASE + timedelta(hours=n),
        )
        for n in range(60)
    ]
    imported(cli, tmp_path, home, "ops", corpus)
    out = cli("relevant", "deploy database locked", "-k", "60", "--mode", "vector", "--json")
    ranked = json.loads(out.stdout)
    assert len(ranked) == 60
    target = ranked[39]
    when = target["created_at"]
    for mode in ("vector", "text", "hybrid"):
        out = cli("relevant", "deploy database locked", "-k", "1", "--mode", mode,
                  "--since", when, "--until", when, "--json")  # fmt: skip
        assert out.exit_code == 0, out.stderr
        hits = json.loads(out.stdout)
        assert [h["seq"] for h in hits] == [target["seq"]], mode
        assert hits[0]["sources"][mode if mode != "hybrid" else "vector"]["rank"] == 1
    # k results whenever k qualify: 5 of the 60 are inside this window
    first = format_iso(BASE + timedelta(hours=20))
    last = format_iso(BASE + timedelta(hours=24))
    out = cli(
        "relevant", "deploy database locked", "-k", "5", "--since", first, "--until", last, "--json"
    )
    assert sorted(h["seq"] for h in json.loads(out.stdout)) == [21, 22, 23, 24, 25]
    # nothing inside: empty, and --fall-back stays inside the window too
    out = cli("relevant", "deploy", "-s", "ops", "--until", "2020-01-01", "--fall-back", "--json")
    assert (out.exit_code, json.loads(out.stdout)) == (0, [])
    store = Store(home)
    found = store.get_relevant(
        "deploy database locked", top_k=2, since=first, until=last, mode="text"
    )
    assert len(found) == 2
    assert all(first <= h["created_at"] <= last for h in found)  # type: ignore[index]
    first_only = store.session("ops").get_relevant(
        "deploy", since="2026-11-01T12:00:00Z", until="2026-11-01T12:00:00Z", as_text=True
    )
    assert first_only == [corpus[0][0]]


def test_export_until_a_date_includes_that_day(cli: Cli, tmp_path: Path, home: Path) -> None:
    imported(cli, tmp_path, home, "a", days(0, 5))
    out = cli("export", "a", "--since", "2026-11-02", "--until", "2026-11-03")
    contents = [json.loads(line).get("content") for line in out.stdout.splitlines()]
    assert [c for c in contents if c] == ["day 1 note", "day 2 note"]


# -- --meta and --model -----------------------------------------------------------


def test_json_values_compare_by_json_type() -> None:
    from sessionctl.service.timefilter import same_json

    assert same_json(3, 3.0) and same_json("x", "x") and same_json(None, None)
    assert not same_json(True, 1) and not same_json(0, False) and not same_json("3", 3)
    assert same_json({"a": [1, {"b": True}]}, {"a": [1.0, {"b": True}]})
    assert not same_json({"a": [1]}, {"a": [1, 2]}) and not same_json([True], [1])


def test_meta_items_read_as_the_meta_command_reads_them() -> None:
    from sessionctl.service.timefilter import criteria

    assert criteria(meta=["n=3"]).metadata == (("n", (3, "3")),)
    assert criteria(meta=['n="3"', "env=prod", "x=null"]).metadata == (
        ("n", ("3",)), ("env", ("prod",)), ("x", (None, "null")),
    )  # fmt: skip
    assert criteria(meta={"n": [1, 2]}).metadata == (("n", ([1, 2],)),)
    for bad in (["novalue"], ["=3"], "n=3", [3]):
        with pytest.raises(UsageError):
            criteria(meta=bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        criteria(model="")


def test_relevant_by_metadata_of_the_message_or_its_session(cli: Cli, home: Path) -> None:
    store = Store(home)
    store.session("work").add_messages(
        [
            {"role": "user", "content": "the deploy failed at noon", "metadata": {"ticket": 42}},
            {
                "role": "user",
                "content": "the deploy worked",
                "metadata": {"ticket": "42", "ok": True},
            },
            {"role": "user", "content": "deploy again", "metadata": {"ticket": None}},
            {"role": "user", "content": "a deploy with no ticket"},
        ]
    )
    store.session("ops").add_messages([{"role": "user", "content": "deploy the ops stack"}])
    store.session("ops").update(metadata={"env": "prod", "ticket": 7})

    def seqs(*args: str) -> list[tuple[str, int]]:
        out = cli("relevant", "deploy", "-k", "10", "--json", *args)
        assert out.exit_code == 0, out.stderr
        return sorted((h["session"], h["seq"]) for h in json.loads(out.stdout))

    assert seqs("--meta", "ticket=42") == [("work", 1), ("work", 2)]  # 42, and "42" as text
    assert seqs("--meta", 'ticket="42"') == [("work", 2)]
    assert seqs("--meta", "ticket=null") == [("work", 3)]  # a stored null, not a missing key
    assert seqs("--meta", "ok=true", "--meta", "ticket=42") == [("work", 2)]  # AND
    assert seqs("--meta", "ok=1") == []  # true is not 1
    assert seqs("--meta", "env=prod") == [("ops", 1)]  # the session's metadata
    assert seqs("--meta", "ticket=7") == [("ops", 1)]
    assert seqs("--meta", "env=prod", "--mode", "text") == [("ops", 1)]
    assert seqs("--meta", "env=staging") == []
    hits = store.get_relevant("deploy", top_k=10, meta={"ticket": 42}, mode="vector")
    assert sorted(h["seq"] for h in hits) == [1]  # type: ignore[index]  # exact JSON value


def test_relevant_by_model_of_the_answer_or_the_session(cli: Cli, home: Path) -> None:
    store = Store(home)
    store.session("a").add_messages(
        [
            {"role": "user", "content": "how do I deploy"},
            {"role": "assistant", "content": "deploy with make", "model": "llama-3"},
            {"role": "assistant", "content": "deploy with a script", "model": "gpt-4o"},
        ]
    )
    store.session("a").update(model="llama-3")
    store.session("b").add_messages([{"role": "user", "content": "deploy question"}])

    def found(*args: str) -> list[tuple[str, int]]:
        out = cli("relevant", "deploy", "-k", "10", "--json", *args)
        assert out.exit_code == 0, out.stderr
        return sorted((h["session"], h["seq"]) for h in json.loads(out.stdout))

    # the prompt names no model: its session's counts; an answer's own model counts
    assert found("--model", "llama-3") == [("a", 1), ("a", 2)]
    assert found("--model", "gpt-4o") == [("a", 3)]
    assert found("--model", "mistral") == []


def test_a_metadata_target_deep_in_the_ranking_still_comes_back(home: Path) -> None:
    store = Store(home)
    store.session("ops").add_messages(
        [
            {
                "role": "user",
                "content": f"the deploy of service {n} failed because the database was locked",
                "metadata": {"n": n},
            }
            for n in range(60)
        ]
    )
    ranked = store.get_relevant("deploy database locked", top_k=60, mode="vector")
    target = ranked[39]
    assert isinstance(target, dict)
    for mode in ("vector", "text", "hybrid"):
        hits = store.get_relevant(
            "deploy database locked", top_k=1, meta={"n": target["metadata"]["n"]}, mode=mode
        )
        assert [h["seq"] for h in hits] == [target["seq"]], mode  # type: ignore[index]


@pytest.mark.parametrize("k", [1, 5, 50])
@pytest.mark.parametrize("every", [1, 3, 97, 1000, 5000])
def test_fetching_deeper_finds_the_same_first_k_kept_as_one_full_fetch(k: int, every: int) -> None:
    from sessionctl.models import Message
    from sessionctl.service.memory import Hit, _within

    ranking = [
        Hit("s", Message(id=str(i), seq=i, role="user", content="", created_at=""), None)
        for i in range(1, 4001)
    ]
    depths: list[int] = []

    def fetch(depth: int) -> list[Hit]:
        depths.append(depth)
        return ranking[:depth]

    def keep(name: str, message: Message) -> bool:
        return message.seq % every == 0

    assert _within(fetch, keep, k) == [h for h in ranking if keep("s", h.message)][:k]
    assert depths == sorted(depths) and len(depths) <= 6, depths
