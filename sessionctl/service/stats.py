"""Usage and cost summed over answers: what ``sessionctl stats`` prints.

Each assistant message's ``usage`` (see docs/format.md) may hold ``input_tokens``,
``output_tokens``, ``cached_tokens``, ``latency_s``, ``ttft_s`` and ``cost_usd``.
Costs that are unknown (``null`` or absent) are counted as unknown, never as zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sessionctl.errors import SessionNotFound, StoreError, UsageError
from sessionctl.timeutil import parse_duration, parse_iso

if TYPE_CHECKING:
    from sessionctl.models import Message
    from sessionctl.service.store import Store

BY_CHOICES = ("session", "model", "day")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``30d``/``12h``/``2w`` ago, or an ISO date or timestamp (UTC when naive)."""
    now = now or datetime.now(timezone.utc)
    try:
        return now - parse_duration(text)
    except UsageError:
        pass
    try:
        return parse_iso(text)
    except ValueError:
        raise UsageError(
            f"invalid --since {text!r}: use a duration such as 30d or 12h, "
            "or a date such as 2026-11-01"
        ) from None


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


class _Row:
    def __init__(self, key: str) -> None:
        self.key = key
        self.answers = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0
        self.cost_usd = 0.0
        self.cost_known = 0
        self.cost_unknown = 0
        self.latency: list[float] = []
        self.ttft: list[float] = []

    def add(self, usage: dict[str, Any]) -> None:
        self.answers += 1
        for name in ("input_tokens", "output_tokens", "cached_tokens"):
            raw = {"input_tokens": "prompt_tokens", "output_tokens": "completion_tokens"}
            value = _number(usage.get(name, usage.get(raw.get(name, ""))))
            if value is not None:
                setattr(self, name, getattr(self, name) + int(value))
        cost = _number(usage.get("cost_usd"))
        if cost is None:
            self.cost_unknown += 1
        else:
            self.cost_known += 1
            self.cost_usd += cost
        for name, into in (("latency_s", self.latency), ("ttft_s", self.ttft)):
            value = _number(usage.get(name))
            if value is not None:
                into.append(value)

    def as_dict(self, by: str) -> dict[str, Any]:
        def mean(values: list[float]) -> float | None:
            return round(sum(values) / len(values), 3) if values else None

        return {
            by: self.key,
            "answers": self.answers,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            # the known part; None when no answer's cost is known
            "cost_usd": round(self.cost_usd, 6) if self.cost_known else None,
            "cost_unknown": self.cost_unknown,
            "mean_latency_s": mean(self.latency),
            "mean_ttft_s": mean(self.ttft),
        }


def usage_stats(
    store: Store,
    *,
    session: str | None = None,
    since: datetime | None = None,
    by: str = "session",
) -> dict[str, Any]:
    """Sums of the answers' usage, grouped ``by`` session, model or day (UTC)."""
    if by not in BY_CHOICES:
        raise UsageError(f"--by must be one of {', '.join(BY_CHOICES)}, not {by!r}")
    if session is not None:
        one = store.session(session)
        if not one.exists:
            raise SessionNotFound(f"no session named {session!r} (see `sessionctl list`)")
        names = [session]
    else:
        names = [info.name for info in store.list_sessions().sessions]
    rows: dict[str, _Row] = {}
    total = _Row("total")
    for name in names:
        try:
            messages: Iterable[Message] = store.session(name).get_messages()
        except SessionNotFound:
            continue  # removed while we read
        except StoreError as exc:
            store.warn(f"skipped: {exc}")
            continue
        for m in messages:
            if m.role != "assistant":
                continue
            if since is not None and parse_iso(m.created_at) < since:
                continue
            usage = m.usage if isinstance(m.usage, dict) else {}
            key = {"session": name, "model": m.model or "(unknown)", "day": m.created_at[:10]}[by]
            rows.setdefault(key, _Row(key)).add(usage)
            total.add(usage)
    ordered = sorted(rows.values(), key=lambda r: r.key)
    summary = total.as_dict(by)
    summary.pop(by)
    return {"by": by, "rows": [r.as_dict(by) for r in ordered], "total": summary}
