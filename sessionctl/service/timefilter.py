"""Time windows for ``relevant``, ``recent`` and ``list``: ``--since`` / ``--until``.

A bound is a relative duration (``30m``, ``24h``, ``7d``, ``2w``: that long
ago), an ISO-8601 timestamp (naive means UTC) or a date. Both bounds are
inclusive; a date given as ``--until`` means the end of that day, so
``--since 2026-11-02 --until 2026-11-02`` is the whole of that day.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timezone
from typing import NamedTuple

from sessionctl.errors import UsageError
from sessionctl.timeutil import format_iso, parse_duration, parse_iso

When = str | datetime | date
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
