"""Contract: ``relevant`` with the real default embedding model (DESIGN §5, §7, §8).

- distances are cosine distances (0..2) between the query's and the message's
  embeddings; the threshold is inclusive (a message at exactly the threshold
  distance is returned); hits are sorted by (distance, session, seq), filters
  apply before the cut to k.
- ``fall_back`` returns the recent messages of the sessions asked about only,
  never another session's (RedisVL's bug); without ``sessions``, those of the
  most recently active session.
- the index follows the transcript at once: dropped, cleared and deleted
  messages are never found, new ones are.

The model is loaded once per process (sessionctl.embed caches it), so every
test may build its own small store.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from sessionctl import SessionNotFound, Store, UsageError

FAR = "zebra migration patterns across the serengeti"
CLOSE_ENOUGH = 0.05  # nothing unrelated is this close; only the same text is


def _hits(store: Store, query: str, **kwargs: Any) -> list[dict[str, Any]]:
    hits = store.get_relevant(query, **kwargs)
    assert all(isinstance(h, dict) for h in hits)
    return [h for h in hits if isinstance(h, dict)]


def _key(hit: dict[str, Any]) -> tuple[float, str, int]:
    return (hit["distance"], hit["session"], hit["seq"])


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _corpus(store: Store) -> None:
    store.session("travel").add_messages(
        [
            _user("The ferry to the island leaves at noon."),
            {"role": "assistant", "content": "Boats to the island depart every two hours."},
            _user("I booked a window seat on the train to Porto."),
        ]
    )
    store.session("pets").add_messages(
        [
            _user("My sister's cat is called Miso."),
            {"role": "assistant", "content": "Miso is a lovely name for a cat."},
        ]
    )
    store.session("food").add_messages(
        [_user("Sourdough needs a long cold proof."), _user("Add salt after the autolyse.")]
    )


# -- distance and threshold -----------------------------------------------------------
def test_distances_are_cosine_distances_of_the_embeddings(store: Store) -> None:
    from sessionctl.embed import get_embedder

    _corpus(store)
    query = "when does the boat to the island go?"
    # Distances and their order are the vector side's (hybrid orders by fused rank).
    hits = _hits(store, query, top_k=100, distance_threshold=2.0, mode="vector")
    assert len(hits) == 7  # every message of every live session
    model = get_embedder(store.settings.embedding_model)
    vectors = np.asarray(model.embed([query, *(h["content"] for h in hits)]), dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for hit, vec in zip(hits, vectors[1:], strict=True):
        assert 0.0 <= hit["distance"] <= 2.0
        assert hit["distance"] == pytest.approx(1.0 - float(vectors[0] @ vec), abs=2e-3), hit
    assert hits[0]["content"] == "Boats to the island depart every two hours."


def test_the_same_text_is_at_distance_zero(store: Store) -> None:
    _corpus(store)
    text = "Sourdough needs a long cold proof."
    best = _hits(store, text, top_k=1)[0]
    assert (best["session"], best["seq"], best["content"]) == ("food", 1, text)
    assert best["distance"] == pytest.approx(0.0, abs=2e-3)


def test_the_threshold_is_inclusive(store: Store) -> None:
    """Each hit's own distance, used as the threshold, returns it and every closer one."""
    _corpus(store)
    query = "what is the cat's name?"
    everything = _hits(store, query, top_k=100, distance_threshold=2.0, mode="vector")
    assert len(everything) == 7
    for i, hit in enumerate(everything):
        d = hit["distance"]
        got = _hits(store, query, top_k=100, distance_threshold=d, mode="vector")
        expected = [h for h in everything if h["distance"] <= d]
        assert [_key(h) for h in got] == [_key(h) for h in expected]
        assert everything[i]["id"] in {h["id"] for h in got}  # exactly at the threshold: kept
        below = _hits(store, query, top_k=100, distance_threshold=max(0.0, d - 0.01), mode="vector")
        assert hit["id"] not in {h["id"] for h in below}


@pytest.mark.parametrize("threshold", [-0.01, 2.01, math.nan, math.inf, "0.5"])
def test_a_threshold_outside_0_to_2_is_a_usage_error(store: Store, threshold: Any) -> None:
    _corpus(store)
    with pytest.raises(UsageError):
        store.get_relevant("cat", distance_threshold=threshold)


@pytest.mark.parametrize("top_k", [-1, True, 1.5])
def test_a_bad_top_k_is_a_usage_error(store: Store, top_k: Any) -> None:
    _corpus(store)
    with pytest.raises(UsageError):
        store.get_relevant("cat", top_k=top_k)


def test_top_k_zero_returns_nothing(store: Store) -> None:
    _corpus(store)
    assert store.get_relevant("cat", top_k=0, fall_back=True) == []


# -- order ------------------------------------------------------------------------------
def test_hits_are_sorted_by_distance_then_session_then_seq(store: Store) -> None:
    twin = "A red kite circles slowly over the valley."
    for name in ("b", "c", "a"):  # created out of order: order must not come from creation
        store.session(name).add_messages(
            [_user(twin), _user(f"unrelated {name}: invoices are due monthly"), _user(twin)]
        )
    hits = _hits(store, "a bird of prey gliding above the hills", top_k=100, distance_threshold=2.0)
    assert [_key(h) for h in hits] == sorted(_key(h) for h in hits)
    tied = [(h["session"], h["seq"]) for h in hits if h["content"] == twin]
    assert tied == [("a", 1), ("a", 3), ("b", 1), ("b", 3), ("c", 1), ("c", 3)]
    assert len({h["distance"] for h in hits if h["content"] == twin}) == 1  # a true tie
    assert [(h["session"], h["seq"]) for h in hits[:6]] == tied  # the closest group first
    top3 = _hits(store, "a bird of prey gliding above the hills", top_k=3, distance_threshold=2.0)
    assert [(h["session"], h["seq"]) for h in top3] == tied[:3]  # the cut to k comes after


def test_a_role_filter_applies_before_the_cut_to_k(store: Store) -> None:
    work = store.session("work")
    work.add_messages([_user(f"The ferry to the island leaves at {h} o'clock.") for h in range(8)])
    work.add_message({"role": "assistant", "content": "Sourdough needs a long cold proof."})
    hits = _hits(store, "ferry departure times", top_k=1, distance_threshold=2.0, role="assistant")
    assert [(h["role"], h["seq"]) for h in hits] == [("assistant", 9)]


def test_sessions_limits_the_search_and_is_exact(store: Store) -> None:
    _corpus(store)
    hits = _hits(store, "cat", sessions=["travel", "travel", "food"], top_k=100,
                 distance_threshold=2.0)  # fmt: skip
    assert sorted((h["session"], h["seq"]) for h in hits) == [
        ("food", 1), ("food", 2), ("travel", 1), ("travel", 2), ("travel", 3)
    ]  # fmt: skip
    assert store.get_relevant("cat", sessions=[]) == []
    for bad in (["nope"], ["Pets"], ["pets", "nope"]):
        with pytest.raises(SessionNotFound):
            store.get_relevant("cat", sessions=bad)


# -- fall-back --------------------------------------------------------------------------
def test_fall_back_returns_only_the_asked_sessions_recent_messages(store: Store) -> None:
    _corpus(store)
    store.session("other").add_message(_user(FAR))  # close to the query, but not asked about
    hits = _hits(store, FAR, sessions=["pets"], distance_threshold=CLOSE_ENOUGH, fall_back=True)
    recent = store.session("pets").get_recent(top_k=5)
    assert [(h["session"], h["id"], h["distance"]) for h in hits] == [
        ("pets", m["id"], None) for m in recent if isinstance(m, dict)
    ]
    several = _hits(
        store, FAR, sessions=["food", "travel"], top_k=2, distance_threshold=CLOSE_ENOUGH,
        fall_back=True,
    )  # fmt: skip
    assert {h["session"] for h in several} <= {"food", "travel"} and several
    assert all(h["distance"] is None for h in several)
    for name in ("food", "travel"):
        mine = [h["id"] for h in several if h["session"] == name]
        recent_ids = [m.id for m in store.session(name).recent_messages(2)]
        assert mine == recent_ids[len(recent_ids) - len(mine) :]


def test_fall_back_without_sessions_uses_the_most_recently_active_one(store: Store) -> None:
    _corpus(store)
    store.session("pets").add_message(_user("Miso sleeps all day."))  # now the most recent
    hits = _hits(store, FAR, distance_threshold=CLOSE_ENOUGH, fall_back=True, top_k=2)
    assert [(h["session"], h["content"], h["distance"]) for h in hits] == [
        ("pets", "Miso is a lovely name for a cat.", None),
        ("pets", "Miso sleeps all day.", None),
    ]


def test_fall_back_is_not_used_when_something_is_close_enough(store: Store) -> None:
    _corpus(store)
    store.session("other").add_message(_user(FAR))
    hits = _hits(store, FAR, distance_threshold=CLOSE_ENOUGH, fall_back=True)
    assert [(h["session"], h["content"]) for h in hits] == [("other", FAR)]
    assert hits[0]["distance"] is not None


def test_without_fall_back_nothing_close_is_nothing(store: Store) -> None:
    _corpus(store)
    assert store.get_relevant(FAR, distance_threshold=CLOSE_ENOUGH) == []
    assert store.get_relevant(FAR, sessions=["pets"], distance_threshold=CLOSE_ENOUGH) == []


def test_fall_back_of_an_empty_session_is_empty(store: Store) -> None:
    _corpus(store)
    store.session("empty").update(system="nothing said yet")
    assert store.get_relevant(FAR, sessions=["empty"], fall_back=True) == []


def test_a_search_of_an_empty_store(store: Store) -> None:
    assert store.get_relevant("anything", fall_back=True) == []


# -- the index follows the transcript --------------------------------------------------
def test_dropped_cleared_and_new_messages_are_reflected_at_once(store: Store) -> None:
    work = store.session("work")
    written = work.add_messages(
        [_user("The ferry leaves at noon."), _user("The cat is called Miso."),
         _user("Sourdough needs a long proof.")]
    )  # fmt: skip
    assert {h["seq"] for h in _hits(store, "ferry", top_k=10, distance_threshold=2.0)} == {1, 2, 3}
    work.drop(written[0].id)
    hits = _hits(store, "The ferry leaves at noon.", top_k=10, distance_threshold=2.0)
    assert sorted((h["seq"], h["id"]) for h in hits) == [(m.seq, m.id) for m in written[1:]]
    work.drop()
    new = work.add_message(_user("The ferry is late today."))
    hits = _hits(store, "ferry", top_k=10, distance_threshold=2.0)
    assert [(h["seq"], h["content"]) for h in hits] == [(4, new.content), (2, written[1].content)]
    work.clear()
    assert store.get_relevant("ferry", top_k=10, distance_threshold=2.0) == []
    assert store.get_relevant("ferry", sessions=["work"], fall_back=True) == []


# -- keyword and hybrid ---------------------------------------------------------------
def test_an_exact_identifier_is_found_by_text_and_first_by_hybrid(store: Store) -> None:
    _corpus(store)
    store.session("ops").add_messages(
        [_user("The deploy failed with ERR_E4471 on host db-7."), _user("Rolled back at nine.")]
    )
    store.delete("food")  # a deleted session never matches
    for mode in ("text", "hybrid"):
        hits = _hits(store, "ERR_E4471", top_k=1, mode=mode)
        assert [(h["session"], h["seq"]) for h in hits] == [("ops", 1)], mode
        assert "text" in hits[0]["sources"], mode
    assert _hits(store, "Sourdough autolyse", top_k=5, mode="text") == []
    assert _hits(store, "zzqx-nothing-like-it", top_k=5, mode="text") == []


# -- time windows ---------------------------------------------------------------------
def test_a_time_window_applies_before_the_cut_on_every_backend(
    store: Store, tick: Callable[[], float]
) -> None:
    from datetime import datetime, timezone

    store.session("before").add_messages([_user("The ferry to the island leaves at noon.")])
    between = datetime.fromtimestamp(tick(), timezone.utc)
    store.session("after").add_messages(
        [_user("Boats to the island depart every two hours."), _user("Sourdough needs salt.")]
    )
    query = "when does the boat to the island go?"
    for mode in ("vector", "text", "hybrid"):
        late = _hits(store, query, top_k=1, since=between, mode=mode)
        assert [(h["session"], h["seq"]) for h in late] == [("after", 1)], mode
        early = _hits(store, query, top_k=5, until=between, mode=mode)
        assert [(h["session"], h["seq"]) for h in early] == [("before", 1)], mode
    assert store.session("after").get_recent(since=between, as_text=True) == [
        "Boats to the island depart every two hours.",
        "Sourdough needs salt.",
    ]
    assert store.session("before").get_recent(since=between) == []
    assert [i.name for i in store.list_sessions(since=between).sessions] == ["after"]
    assert [i.name for i in store.list_sessions(until=between).sessions] == ["before"]
    with pytest.raises(UsageError, match="is after --until"):
        store.get_relevant(query, since="1h", until="2d")


# -- one session's search, through the VectorStore interface ----------------------------
def _one(store: Store, name: str, query: str, **kwargs: Any) -> list[tuple[str, int, str]]:
    from sessionctl.service.memory import embedder_for

    model = embedder_for(store)
    vec = model.embed([query])[0]
    hits = store.backend.vectors.search_session(name, vec, model, **kwargs)
    distances = [h.distance for h in hits]
    assert all(d is not None and 0.0 <= d <= kwargs["max_distance"] for d in distances)
    keys = [(h.distance, h.seq) for h in hits]
    assert keys == sorted(keys), keys
    return [(h.session, h.seq, h.message.content) for h in hits]


def test_search_session_is_the_store_wide_search_scoped_to_one_session(store: Store) -> None:
    from sessionctl.backend.base import SearchFilter
    from sessionctl.service.memory import embedder_for

    _corpus(store)
    model = embedder_for(store)
    query = "when does the boat to the island go?"
    vec = model.embed([query])[0]
    for roles in (None, frozenset({"assistant"})):
        for k in (1, 2, 10):
            one = _one(store, "travel", query, k=k, max_distance=2.0, roles=roles)
            wide = store.backend.vectors.search(
                vec, model, k=k, max_distance=2.0, where=SearchFilter(["travel"], roles)
            )
            assert one == [(h.session, h.seq, h.message.content) for h in wide], (roles, k)
    assert [seq for _, seq, _ in _one(store, "travel", query, k=10, max_distance=2.0)] == [
        2, 1, 3
    ]  # fmt: skip
    assert _one(store, "pets", FAR, k=5, max_distance=0.01) == []  # the threshold applies
    assert _one(store, "food", query, k=5, max_distance=2.0, roles=frozenset({"system"})) == []


def test_search_session_follows_the_transcript_and_knows_a_gone_session(store: Store) -> None:
    _corpus(store)
    travel = store.session("travel")
    travel.drop(travel.get_messages()[1].id)  # the boats
    travel.add_message(_user("Ferries to the island are cancelled in a storm."))
    found = _one(store, "travel", "when does the boat to the island go?", k=10, max_distance=2.0)
    assert sorted(seq for _, seq, _ in found) == [1, 3, 4]
    store.delete("travel")
    for gone in ("travel", "nope"):
        with pytest.raises(SessionNotFound):
            _one(store, gone, "ferry", k=5, max_distance=2.0)


def test_rebuild_session_embeds_one_session_again(store: Store) -> None:
    from sessionctl.service.memory import embedder_for

    _corpus(store)
    query = "when does the boat to the island go?"
    before = _one(store, "travel", query, k=10, max_distance=2.0)
    seen: list[tuple[str, int, int]] = []
    report = store.backend.vectors.rebuild_session(
        "travel", embedder_for(store), progress=lambda *args: seen.append(args)
    )
    assert report.total == 3 and report.added == 3
    assert seen and seen[-1] == ("travel", 3, 3)
    assert _one(store, "travel", query, k=10, max_distance=2.0) == before
    assert len(_hits(store, query, top_k=100, distance_threshold=2.0, mode="vector")) == 7
    with pytest.raises(SessionNotFound):
        store.backend.vectors.rebuild_session("nope", embedder_for(store))
