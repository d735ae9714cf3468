"""Record an app's own OpenAI-client calls in a session (Memori-style).

``capture(client)`` patches ``client.chat.completions.create`` of an
``openai.OpenAI`` client: each call goes out unchanged and returns the
client's own response; the request messages the session does not already
hold, then the answer, are appended through :meth:`Session.add_messages`
(so redaction applies). A failed call records nothing; a recording failure
warns once and never breaks the call. Streaming, async clients and litellm
are not handled yet.
"""

from __future__ import annotations

import secrets
import time
import warnings
from typing import Any

from sessionctl.errors import SessionNotFound
from sessionctl.service.session import Session
from sessionctl.service.store import Store


class Capture:
    """Handle returned by :func:`capture`."""

    def __init__(
        self, store: Store, session: str | None, user: str | None, agent: str | None
    ) -> None:
        self._store = store
        self._user = user
        self._agent = agent
        self._warned = False
        self._name = session or _new_name()

    @property
    def session(self) -> str:
        return self._name

    def reset_session(self) -> str:
        self._name = _new_name()
        return self._name

    def set_session(self, name: str) -> None:
        self._name = name

    def _meta(self) -> dict[str, Any]:
        return {k: v for k, v in (("user", self._user), ("agent", self._agent)) if v is not None}

    def record(self, request: list[dict[str, Any]], answer: dict[str, Any]) -> None:
        try:
            sess: Session = self._store.session(self._name)
            try:
                held = [(m.get("role"), m.get("content")) for m in sess.messages]
            except SessionNotFound:
                held = []
            new = list(request)
            # drop the prefix the session already holds (apps resend history)
            n = len(held)
            while n and [(m.get("role"), m.get("content")) for m in new[:n]] != held[-n:]:
                n -= 1
            items = [dict(m) for m in new[n:]] + [answer]
            meta = self._meta()
            if meta:
                for m in items:
                    m["metadata"] = {**(m.get("metadata") or {}), **meta}
            sess.add_messages(items)
        except Exception as exc:  # recording must never break the app's call
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"sessionctl capture: not recorded: {exc}", RuntimeWarning, stacklevel=3
                )


def _new_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def capture(
    client: Any,
    *,
    session: str | None = None,
    store: Store | None = None,
    user: str | None = None,
    agent: str | None = None,
) -> Capture:
    """Patch ``client.chat.completions.create`` to record each exchange."""
    handle = Capture(store or Store(), session, user, agent)
    completions = client.chat.completions
    original = completions.create

    def create(*args: Any, **kwargs: Any) -> Any:
        response = original(*args, **kwargs)
        if not kwargs.get("stream"):
            msg = response.choices[0].message
            answer: dict[str, Any] = {"role": "assistant", "content": msg.content or ""}
            if msg.tool_calls:
                answer["tool_calls"] = [tc.model_dump() for tc in msg.tool_calls]
            handle.record(list(kwargs.get("messages") or []), answer)
        return response

    completions.create = create
    return handle
