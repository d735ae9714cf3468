"""Use cases: the store, sessions, and whole-session transfer."""

from __future__ import annotations

from sessionctl.service.session import Session
from sessionctl.service.store import PruneReport, Store

__all__ = ["PruneReport", "Session", "Store"]
