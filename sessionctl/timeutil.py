"""UTC timestamps and human durations."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from sessionctl.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def now_iso() -> str:
    """Return the current UTC time as ISO-8601 with microseconds and a ``Z``."""
    return format_iso(datetime.now(timezone.utc))


def format_iso(moment: datetime) -> str:
    """Return ``moment`` in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_epoch_ns(ns: int) -> str:
    """Return an ISO-8601 UTC string for a nanosecond epoch timestamp."""
    return format_iso(datetime.fromtimestamp(ns / 1e9, timezone.utc))


def parse_iso(text: str) -> datetime:
    """Parse an ISO-8601 timestamp (``Z`` accepted); naive values are taken as UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


def parse_duration(text: str) -> timedelta:
    """Parse ``90m``, ``12h``, ``30d``, ``2w`` (also ``s``) into a positive timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(
            f"invalid duration {text!r}: use a whole number and a unit, like 90m, 12h, 30d or 2w"
        )
    amount = int(match.group(1))
    if amount <= 0:
        raise UsageError(f"invalid duration {text!r}: it must be greater than zero")
    return timedelta(seconds=amount * _UNIT_SECONDS[match.group(2)])
