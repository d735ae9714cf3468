"""``sessionctl migrate``: files -> PostgreSQL -> files, lossless, verified, resumable."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Cli
from local_postgres import postgres, postgres_server

from sessionctl import Store
from sessionctl.config import load_settings

__all__ = ["postgres", "postgres_server"]
pytestmark = pytest.mark.postgres


def _state(store: Store) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, _ in sorted(store.backend.names()):
        snap = store.backend.snapshot(name)
        out[name] = (snap.header, [m._replace(pos=0) for m in snap.messages],
                     snap.high_seq, snap.last_active_ns)  # fmt: skip
    return out


def _build(home: Path) -> Store:
    store = Store(home)
    work = store.session("work")
    work.update(model="m1", system="be brief", metadata={"team": {"x": 1}, "n": None})
    work.add_messages([
        {"role": "user", "content": 'r\u2028é🙂\x00\n"q"'},
        {"role": "assistant", "content": "a", "tool_calls": [{"id": "c", "type": "function"}]},
        {"role": "tool", "content": "42", "tool_call_id": "c", "name": "f"},
    ])  # fmt: skip
    work.add_message({"role": "user", "content": "dropped later"})
    work.drop()  # the high-water seq (4) is above the last message's (3)
    store.fork("work", "work-alt")
    store.session("gone").add_message({"role": "user", "content": "bye"})
    store.delete("gone")
    return store


def test_files_to_postgres_and_back_is_lossless_and_rerunning_changes_nothing(
    cli: Cli, postgres: str, tmp_path: Path
) -> None:
    source = _build(tmp_path / "src")
    first = cli("--home", str(source.home), "migrate", "--to", postgres, "--include-trash")
    assert first.exit_code == 0, first.stderr
    with Store(settings=load_settings(store=postgres, namespace=None)) as pg:
        assert _state(pg) == _state(source)
        assert [i.name for i in pg.list_sessions(deleted=True).sessions] == ["gone"]
        assert pg.session("work").get_messages()[0].content == 'r\u2028é🙂\x00\n"q"'
    again = cli("--home", str(source.home), "migrate", "--to", postgres, "--include-trash")
    assert again.exit_code == 0 and "0 session(s)" in again.stderr and "3 already" in again.stderr
    back_home = tmp_path / "back"
    back = cli("--store", postgres, "migrate", "--to", str(back_home))
    assert back.exit_code == 0, back.stderr
    restored = Store(back_home)
    assert _state(restored) == _state(source)
    assert restored.list_sessions().sessions == source.list_sessions().sessions
    added = restored.session("work").add_message({"role": "user", "content": "next"})
    assert added.seq == 5  # from the high-water seq: the dropped 4 is never reused


def test_a_different_session_at_the_destination_is_a_mismatch_and_left_alone(
    cli: Cli, postgres: str, tmp_path: Path
) -> None:
    source = _build(tmp_path / "src")
    with Store(settings=load_settings(store=postgres)) as pg:
        pg.session("work").add_message({"role": "user", "content": "someone else's"})
    result = cli("--home", str(source.home), "migrate", "--to", postgres)
    assert result.exit_code == 1
    assert "differ at the destination: work" in result.stderr
    with Store(settings=load_settings(store=postgres)) as pg:
        assert [m.content for m in pg.session("work").get_messages()] == ["someone else's"]


def test_dry_run_writes_nothing(cli: Cli, postgres: str, tmp_path: Path) -> None:
    source = _build(tmp_path / "src")
    result = cli("--home", str(source.home), "migrate", "--to", postgres, "--dry-run")
    assert result.exit_code == 0 and "would copy 2 session(s)" in result.stderr
    with Store(settings=load_settings(store=postgres)) as pg:
        assert pg.backend.names() == []
