"""The PostgreSQL backend beyond the contract suite: the CLI's --store, secrets kept out
of every output, namespaces, several processes at once, a lost connection."""

from __future__ import annotations

import json
import multiprocessing
import socket
from pathlib import Path

import pytest
from conftest import Cli
from local_postgres import postgres, postgres_server

from sessionctl import Store
from sessionctl.config import load_settings
from sessionctl.errors import StoreError

__all__ = ["postgres", "postgres_server"]  # the fixtures, re-exported for pytest
pytestmark = pytest.mark.postgres


def _with_password(url: str, password: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")


def _store(url: str, namespace: str = "t") -> Store:
    return Store(settings=load_settings(store=url, namespace=namespace))


def test_cli_store_flag_reads_and_writes_the_database(cli: Cli, postgres: str) -> None:
    url = _with_password(postgres, "s3cret-pw")  # trust auth: accepted and ignored
    added = cli(
        "--store", url, "--namespace", "team", "add", "-s", "work", "-r", "user", "hello there"
    )
    assert added.exit_code == 0, added.stderr
    shown = cli("--store", url, "--namespace", "team", "show", "work", "--json")
    assert shown.exit_code == 0, shown.stderr
    assert "hello there" in shown.stdout
    listed = cli("--store", url, "--namespace", "team", "list", "--json")
    assert [s["name"] for s in json.loads(listed.stdout)["sessions"]] == ["work"]
    # Another namespace of the same database sees nothing.
    other = cli("--store", url, "--namespace", "other", "list", "--json")
    assert json.loads(other.stdout)["sessions"] == []
    for result in (added, shown, listed, other):
        assert "s3cret-pw" not in result.stdout + result.stderr


def test_config_show_never_prints_the_password(
    cli: Cli, postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSIONCTL_STORE", _with_password(postgres, "s3cret-pw"))
    shown = cli("config", "show")
    assert shown.exit_code == 0, shown.stderr
    assert "s3cret-pw" not in shown.stdout + shown.stderr
    assert "postgres:***@" in shown.stdout


def test_server_down_is_one_line_naming_the_server_not_the_password(cli: Cli) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    url = f"postgresql://alice:s3cret-pw@127.0.0.1:{port}/db"
    result = cli("--store", url, "list")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}/db" in lines[0] and "s3cret-pw" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_store_value_is_a_usage_error(cli: Cli) -> None:
    result = cli("--store", "mysql://x@y/z", "list")
    assert result.exit_code == 2
    assert "postgresql://" in result.stderr


def test_a_lost_connection_fails_once_cleanly_and_the_next_call_reconnects(
    postgres: str,
) -> None:
    import psycopg

    with _store(postgres) as store:
        store.session("work").add_message({"role": "user", "content": "one"})
        with psycopg.connect(postgres, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'sessionctl'"
            )
        with pytest.raises(StoreError, match="lost the connection") as caught:
            store.session("work").add_message({"role": "user", "content": "two"})
        assert "127.0.0.1" in str(caught.value)
        store.session("work").add_message({"role": "user", "content": "three"})
        messages = store.session("work").get_messages()
        assert [m.content for m in messages] == ["one", "three"]
        assert [m.seq for m in messages] == [1, 2]


def _writer(args: tuple[str, int]) -> None:
    url, w = args
    with _store(url) as store:
        for i in range(25):
            store.session("busy").add_messages(
                [
                    {"role": "user", "content": f"q {w}-{i}"},
                    {"role": "assistant", "content": f"a {w}-{i}"},
                ]
            )


def test_processes_appending_at_once_get_contiguous_seqs_and_adjacent_pairs(
    postgres: str,
) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_writer, [(postgres, w) for w in range(4)])
    with _store(postgres) as store:
        messages = store.session("busy").get_messages()
        assert [m.seq for m in messages] == list(range(1, 201))
        for q, a in zip(messages[::2], messages[1::2], strict=True):
            assert q.content[2:] == a.content[2:] and q.role == "user"
        assert store.session("busy").info().messages == 200


def test_two_stores_on_one_database_see_each_others_writes_at_once(postgres: str) -> None:
    with _store(postgres) as one, _store(postgres) as two:
        one.session("shared").add_message({"role": "user", "content": "from one"})
        two.session("shared").add_message({"role": "user", "content": "from two"})
        assert [m.content for m in one.session("shared").get_messages()] == [
            "from one",
            "from two",
        ]


def test_relevant_and_its_fall_back_never_cross_namespaces(postgres: str) -> None:
    with _store(postgres, "alice") as alice, _store(postgres, "bob") as bob:
        alice.session("trip").add_message({"role": "user", "content": "The ferry leaves at noon."})
        bob.session("trip").add_message({"role": "user", "content": "The ferry leaves at one."})
        bob.session("pets").add_message({"role": "user", "content": "My cat is called Miso."})
        hits = alice.get_relevant("when does the ferry leave?", top_k=10, distance_threshold=2.0)
        assert [h["content"] for h in hits if isinstance(h, dict)] == ["The ferry leaves at noon."]
        far = alice.get_relevant("zebra", top_k=5, distance_threshold=0.0, fall_back=True)
        # alice's fall-back: her most recent session, never bob's
        assert [h["content"] for h in far if isinstance(h, dict)] == ["The ferry leaves at noon."]
        assert [n for n in alice.names()] == ["trip"]
        assert bob.session("pets").get_messages()[0].content == "My cat is called Miso."


def test_import_from_creates_sessions_in_groups(cli: Cli, postgres: str, tmp_path: Path) -> None:
    """import --from through create_many: one transaction per group, all of it or none."""
    from sessionctl.backend.base import NewSession, SessionHeader
    from sessionctl.errors import SessionExists

    source = tmp_path / "many.jsonl"
    with source.open("w") as stream:
        for c in range(300):  # more than one group (CREATE_GROUP)
            turns = [{"role": "user", "content": f"q {c}"}, {"role": "assistant", "content": "a"}]
            stream.write(json.dumps({"messages": turns}) + "\n")
    args = ("--store", postgres, "--namespace", "imp", "import", "--from", "openai")
    first = cli(*args, str(source), "--json")
    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["messages_added"] == 600
    again = cli(*args, str(source), "--json")
    assert json.loads(again.stdout)["messages_added"] == 0
    store = _store(postgres, "imp")
    try:
        assert len(store.names()) == 300
        assert [m.content for m in store.backend.messages("openai-many-7")] == ["q 6", "a"]
        now = "2025-01-01T00:00:00Z"
        header = SessionHeader("01J0000000000000000000000A", now, now)
        with pytest.raises(SessionExists):
            store.backend.create_many(
                [NewSession("fresh", header, []), NewSession("openai-many-1", header, [])]
            )
        assert not store.backend.exists("fresh")
    finally:
        store.backend.close()
