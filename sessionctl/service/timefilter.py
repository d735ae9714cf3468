"""Time windows for ``relevant``, ``recent`` and ``list`` (``--since`` / ``--until``),
and the other criteria of ``relevant`` (``--meta``, ``--model``).

A bound is a relative duration (``30m``, ``24h``, ``7d``, ``2w``: that long
ago), an ISO-8601 timestamp (naive means UTC) or a date. Both bounds are
inclusive; a date given as ``--until`` means the end of that day, so
``--since 2026-11-02 --until 2026-11-02`` is the whole of that day.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from sessionctl.errors import UsageError
from sessionctl.timeutil import format_iso, parse_duration, parse_iso

When = str | datetime | date
if TYPE_CHECKING:
    from sessionctl.backend.base import SessionHeader
    from sessionctl.models import Message

_DATE_ONLY = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class TimeWindow(NamedTuple):
    """An inclusive window of instants; a missing bound is open."""

    since: datetime | None = None
    until: datetime | None = None

    @property
    def open(self) -> bool:
        return self.since is None and self.until is None

    def holds(self, created_at: str) -> bool:
        """True when an ISO timestamp lies in the window (an unreadable one never does,
        unless the window is open)."""
        if self.open:
            return True
        try:
            moment = parse_iso(created_at)
        except (ValueError, TypeError):
            return False
        return (self.since is None or moment >= self.since) and (
            self.until is None or moment <= self.until
        )

    def overlaps(self, start: str, end: str) -> bool:
        """True when the span [start, end] (ISO timestamps) meets the window."""
        if self.open:
            return True
        try:
            first, last = parse_iso(start), parse_iso(end)
        except (ValueError, TypeError):
            return False
        first, last = min(first, last), max(first, last)
        return (self.since is None or last >= self.since) and (
            self.until is None or first <= self.until
        )


def parse_when(value: When, *, option: str, end_of_day: bool, now: datetime) -> datetime:
    """One bound as an aware UTC datetime, or UsageError naming ``option``."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return _day(value, end_of_day)
    if not isinstance(value, str):
        raise UsageError(f"{option} takes a date, a timestamp or a duration, got {value!r}")
    try:
        ago = parse_duration(value)
    except UsageError:
        pass
    else:
        try:
            return now - ago
        except OverflowError:
            return _EPOCH
    try:
        if _DATE_ONLY.match(value):
            return _day(date.fromisoformat(value.strip()), end_of_day)
        return parse_iso(value.strip())
    except ValueError:
        raise UsageError(
            f"invalid {option} {value!r}: use a duration such as 30m, 24h or 7d (that long"
            " ago), a date such as 2026-11-01, or a timestamp such as 2026-11-01T09:30:00Z"
        ) from None


def time_window(
    since: When | None = None,
    until: When | None = None,
    *,
    now: datetime | None = None,
) -> TimeWindow:
    """The window of ``since``/``until`` (both optional, both inclusive)."""
    now = now or datetime.now(timezone.utc)
    start = (
        None if since is None else parse_when(since, option="--since", end_of_day=False, now=now)
    )
    end = None if until is None else parse_when(until, option="--until", end_of_day=True, now=now)
    if start is not None and end is not None and start > end:
        raise UsageError(
            f"--since ({format_iso(start)}) is after --until ({format_iso(end)}):"
            " nothing can match; swap them"
        )
    return TimeWindow(start, end)


def _day(day: date, end_of_day: bool) -> datetime:
    return datetime.combine(day, time.max if end_of_day else time.min, tzinfo=timezone.utc)


class Criteria(NamedTuple):
    """What a search keeps besides its query: a time window, metadata, a model.

    ``metadata``: (key, accepted values) pairs, all required (AND); a pair holds
    when the message's metadata, or else its session's, has the key with one of
    the values. Values compare as JSON values: ``3`` and ``3.0`` are equal,
    ``true`` is not ``1``, a string is not a number, ``null`` matches a stored
    null and never a missing key. ``model``: the model that produced the message,
    or, for a message that names none (a prompt), its session's model.
    """

    window: TimeWindow = TimeWindow()
    metadata: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    model: str | None = None

    @property
    def open(self) -> bool:
        return self.window.open and not self.metadata and self.model is None

    def bind(self, header: Callable[[str], SessionHeader | None]) -> Callable[[str, Message], bool]:
        """A predicate on (session name, message); ``header(name)`` is asked at most once
        per session (None: the session is gone, nothing of it is kept)."""
        headers: dict[str, SessionHeader | None] = {}

        def session_header(name: str) -> SessionHeader | None:
            if name not in headers:
                headers[name] = header(name)
            return headers[name]

        def keep(name: str, message: Message) -> bool:
            if not self.window.holds(message.created_at):
                return False
            if self.model is not None:
                own = message.model
                if own is None:
                    found = session_header(name)
                    own = None if found is None else found.model
                if own != self.model:
                    return False
            for key, values in self.metadata:
                mine = message.metadata or {}
                if key in mine and any(same_json(mine[key], v) for v in values):
                    continue
                found = session_header(name)
                theirs = {} if found is None else found.metadata
                if key in theirs and any(same_json(theirs[key], v) for v in values):
                    continue
                return False
            return True

        return keep


def same_json(a: Any, b: Any) -> bool:
    """Equality of two JSON values by JSON's types (``true`` is not ``1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def criteria(
    since: When | None = None,
    until: When | None = None,
    *,
    meta: Mapping[str, Any] | Iterable[str] | None = None,
    model: str | None = None,
    now: datetime | None = None,
) -> Criteria:
    """The search criteria from the API's (or the CLI's) arguments.

    ``meta``: a mapping (the exact JSON values wanted) or ``KEY=VALUE`` strings, as
    the CLI's ``--meta``: VALUE is read as ``sessionctl meta`` reads it (JSON, else
    text), and a VALUE that reads as a JSON number, boolean or null also matches the
    same characters stored as text.
    """
    pairs: list[tuple[str, tuple[Any, ...]]] = []
    if meta is not None:
        if isinstance(meta, Mapping):
            for key, value in meta.items():
                if not isinstance(key, str) or not key:
                    raise UsageError(f"metadata keys are non-empty text, got {key!r}")
                pairs.append((key, (value,)))
        elif isinstance(meta, str):
            raise UsageError("meta takes KEY=VALUE items (a list), or a mapping")
        else:
            for item in meta:
                pairs.append(_assignment(item))
    if model is not None and (not isinstance(model, str) or not model):
        raise UsageError(f"model must be a non-empty name, got {model!r}")
    return Criteria(time_window(since, until, now=now), tuple(pairs), model)


def _assignment(item: object) -> tuple[str, tuple[Any, ...]]:
    import json

    if not isinstance(item, str):
        raise UsageError(f"--meta takes KEY=VALUE, got {item!r}")
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise UsageError(f"--meta takes KEY=VALUE, got {item!r}")
    try:
        value = json.loads(text)
    except ValueError:
        return key, (text,)
    return key, (value,) if isinstance(value, str) else (value, text)
