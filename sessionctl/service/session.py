"""One session: the RedisVL/Zep-style operations on a named conversation."""

from __future__ import annotations

import collections
from collections.abc import (
    AsyncGenerator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any

from sessionctl.backend.base import HeaderPatch
from sessionctl.errors import SessionNotFound, UsageError
from sessionctl.ids import new_ulid
from sessionctl.jsonlines import encode
from sessionctl.models import OPTIONAL_FIELDS, Message, SessionInfo, normalize_role
from sessionctl.service.checks import check_top_k, roles_filter
from sessionctl.timeutil import now_iso

if TYPE_CHECKING:
    from sessionctl.backend.base import SessionHeader, SessionStore
    from sessionctl.llm import ChatStream
    from sessionctl.service.chat import ChatOptions
    from sessionctl.service.conversation import Reply, StreamEvent
    from sessionctl.service.store import Store
    from sessionctl.service.timefilter import When

MessageInput = Mapping[str, Any]
# ``Store`` itself, set by sessionctl.service.store: that module imports this one,
# so this one does not import it (no import cycle).
default_store: Callable[[], Store] | None = None
_INPUT_KEYS = {"role", "content", "interrupted", *OPTIONAL_FIELDS}


def build_message(data: MessageInput, seq: int) -> Message:
    """Validate a message dict (role, content, optional fields) and stamp id/seq/time."""
    unknown = set(data) - _INPUT_KEYS
    if unknown:
        raise UsageError(
            f"unknown message field {sorted(unknown)[0]!r}: use role, content, "
            + ", ".join(OPTIONAL_FIELDS)
        )
    if "role" not in data:
        raise UsageError("a message needs a 'role' (system, user, assistant or tool)")
    content = data.get("content")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise UsageError(f"message content must be text, got {type(content).__name__}")
    role = data["role"]
    if not isinstance(role, str):
        raise UsageError(f"message role must be text, got {type(role).__name__}")
    interrupted = data.get("interrupted", False)
    if not isinstance(interrupted, bool):
        raise UsageError(f"message field 'interrupted' must be true or false, got {interrupted!r}")
    # Every optional field is checked here, with the types every reader accepts
    # (models.record_problem): a value written that readers then refuse would make an
    # acknowledged message vanish and its seq come back.
    fields = {key: checked_field(key, data.get(key)) for key in _CHECKED}
    return Message(
        id=new_ulid(),
        seq=seq,
        role=normalize_role(role),
        content=content,
        created_at=now_iso(),
        interrupted=interrupted,
        **fields,
    )


_CHECKED: dict[str, tuple[type, str]] = {
    "model": (str, "text"),
    "usage": (dict, "a JSON object"),
    "tool_call_id": (str, "text"),
    "tool_calls": (list, "a JSON array"),
    "name": (str, "text"),
    "metadata": (dict, "a JSON object"),
}


def checked_field(key: str, value: Any) -> Any:
    """``value`` as a plain JSON value of the field's type (None stays None), or UsageError."""
    if value is None:
        return None
    kind, what = _CHECKED[key]
    if key in ("usage", "metadata") and isinstance(value, Mapping):
        value = dict(value)
    elif key == "tool_calls" and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, kind):
        raise UsageError(f"message field {key!r} must be {what}, got {type(value).__name__}")
    if kind is str:
        return str(value)
    return plain_json(value, f"message field {key!r}")


def plain_json(value: Any, what: str) -> Any:
    """``value`` through a JSON round trip (plain dicts, lists, str...), or UsageError."""
    import json

    try:
        return json.loads(json.dumps(value, ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise UsageError(f"{what} is not JSON ({exc})") from None


def _turn_options(
    model: str | None,
    system: str | None,
    temperature: float | None,
    max_tokens: int | None,
    extra: Mapping[str, Any],
) -> ChatOptions:
    """The options of one :meth:`Session.chat`/``stream``/``achat``/``astream``/``json``
    turn, checked (an unknown option is a UsageError before any call)."""
    from sessionctl.service import conversation

    return conversation.options(
        model=model, system=system, temperature=temperature, max_tokens=max_tokens, extra=extra
    )


class Session:
    """A named session in a :class:`~sessionctl.service.store.Store`.

    Getting a Session object touches nothing; the first write creates the
    transcript (like Zep, sessions need no explicit creation).
    """

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self.name = name

    def __repr__(self) -> str:
        return f"Session({self.name!r})"

    @property
    def _backend(self) -> SessionStore:
        return self._store.backend

    @property
    def exists(self) -> bool:
        """True when the session has a transcript."""
        return bool(self._backend.exists(self.name))

    # -- writing -----------------------------------------------------------
    def add_messages(
        self, messages: Sequence[MessageInput], *, user: str | None = None
    ) -> list[Message]:
        """Append ``messages`` in order, atomically; return them with ids and seqs.

        ``user``: the session belongs to that user (set when it is created or has no
        user); a session of another user is refused (UsageError) before anything is
        written.
        """
        from sessionctl.service.users import USER_KEY, check_user, owner

        items = list(messages)
        for item in items:  # validate everything (encodable too) before writing anything
            encode(build_message(item, 1).to_record())
        if user is not None:
            self.check_user(user)

        redact = self._store.redactor()
        from sessionctl.redact import redact_message  # imported by redactor() already

        def make(next_seq: int) -> list[Message]:
            built = [build_message(item, next_seq + i) for i, item in enumerate(items)]
            if redact is None:
                return built
            return [redact_message(redact, m) for m in built]

        create = self._store._new_header(self.name)
        if user is not None:  # a new session is created already belonging to the user
            create = create._replace(metadata={USER_KEY: check_user(user)})
        written = list(self._backend.append(self.name, make, create=create))
        if user is not None and owner(self.header.metadata) is None:
            self._backend.update_header(self.name, HeaderPatch({}, {USER_KEY: user}))
        return written

    def add_message(self, message: MessageInput, *, user: str | None = None) -> Message:
        """Append one message (``{"role": ..., "content": ...}`` plus optional fields)."""
        return self.add_messages([message], user=user)[0]

    def check_user(self, user: str) -> None:
        """Raise UsageError unless ``user`` is a valid user id and this session is new,
        has no user or is ``user``'s (nothing is written)."""
        from sessionctl.service.users import check_user, refuse_other

        check_user(user)
        try:
            metadata = self.header.metadata
        except SessionNotFound:
            return
        refuse_other(self.name, metadata, user)

    @property
    def user(self) -> str | None:
        """The user this session belongs to (header metadata ``user``), or None."""
        from sessionctl.service.users import owner

        held = owner(self.header.metadata)
        return held if isinstance(held, str) else None

    def store(
        self,
        prompt: str,
        response: str,
        *,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        user: str | None = None,
    ) -> tuple[Message, Message]:
        """Append a user prompt and the assistant's response as one write (``user``:
        as :meth:`add_messages`)."""
        answer: dict[str, Any] = {"role": "assistant", "content": response}
        if model is not None:
            answer["model"] = model
        if usage is not None:
            answer["usage"] = usage
        asked, assistant = self.add_messages(
            [{"role": "user", "content": prompt}, answer], user=user
        )
        return asked, assistant

    def drop(self, id: str | None = None) -> Message:
        """Remove message ``id`` (the last one when None) and return it."""
        # Without an id the common undo (O(1) in the file backend); with one, one pass.
        # Vectors of a removed message go with it (a search catches its index up first).
        return self._backend.drop(self.name, id)

    def clear(self) -> int:
        """Remove every message of this session only (settings stay); return how many."""
        return len(self._backend.clear(self.name))

    def delete(self, *, purge: bool = False) -> None:
        """Move the session to the trash (or remove it for good with ``purge``)."""
        self._store.delete(self.name, purge=purge)

    def update(
        self,
        *,
        model: str | None = None,
        system: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        unset: Iterable[str] = (),
    ) -> SessionInfo:
        """Set model/system and merge metadata (Zep semantics); creates the session if needed."""
        for key, value in (("model", model), ("system", system)):
            if value is not None and not isinstance(value, str):
                raise UsageError(f"{key} must be text, got {type(value).__name__}")
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                raise UsageError(f"metadata must be a JSON object, got {type(metadata).__name__}")
            metadata = plain_json(dict(metadata), "metadata")
            if metadata.get("user") is not None:  # the session's owner: a valid user id
                from sessionctl.service.users import check_user

                check_user(metadata["user"])
        unset = [unset] if isinstance(unset, str) else list(unset)  # one key, not its letters
        if not all(isinstance(key, str) for key in unset):
            raise UsageError("unset takes metadata keys (text)")
        redact = self._store.redactor()
        if system and redact is not None:
            system = redact.text(system).text  # a system prompt is written too
        fields: dict[str, Any] = {}
        if model is not None:
            fields["model"] = model
        if system is not None:
            fields["system"] = system or None
        patch = HeaderPatch(fields, metadata or None, tuple(unset))
        if not self.exists:
            # Created with the patch already in its header: one write, so a value the
            # store refuses (undecodable text) leaves no empty session behind.
            new = self._store._new_header(self.name)
            kept = {k: v for k, v in (metadata or {}).items() if k not in unset}
            new = new._replace(metadata=kept, **fields)
            self._backend.append(self.name, lambda _seq: [], create=new)
        # Applied again in case another process created the session first; a patch
        # that changes nothing takes no lock and writes nothing.
        self._backend.update_header(self.name, patch)  # never the messages
        return self.info()

    # -- reading -----------------------------------------------------------
    def info(self) -> SessionInfo:
        """Return this session's summary."""
        return self._backend.info(self.name)

    @property
    def header(self) -> SessionHeader:
        """Return the session-level state (model, system prompt, metadata, parent)."""
        return self._backend.header(self.name)

    def get_messages(self) -> list[Message]:
        """Return every message as :class:`Message` objects, in seq order."""
        return list(self._backend.messages(self.name))

    def iter_messages(self) -> Iterator[Message]:
        """Every message in seq order, read as they are consumed (constant memory)."""
        return iter(self._backend.iter_messages(self.name))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message (never capped), oldest first, as dicts."""
        return [m.to_dict() for m in self.get_messages()]

    def get_recent(
        self,
        top_k: int = 5,
        as_text: bool = False,
        raw: bool = False,
        role: str | Iterable[str] | None = None,
        since: When | None = None,
        until: When | None = None,
    ) -> list[dict[str, Any]] | list[str]:
        """Return the last ``top_k`` messages, oldest first, ordered by seq.

        ``since``/``until`` (inclusive): only messages created in that window; each
        is a duration ago (``"7d"``), an ISO timestamp or date, or a datetime/date.
        """
        found = self.recent_messages(top_k, role=role, since=since, until=until)
        if as_text:
            return [m.content for m in found]
        return [m.to_dict(raw=raw) for m in found]

    def recent_messages(
        self,
        top_k: int = 5,
        *,
        role: str | Iterable[str] | None = None,
        since: When | None = None,
        until: When | None = None,
    ) -> list[Message]:
        """Like :meth:`get_recent` but returns :class:`Message` objects."""
        from sessionctl.service.timefilter import time_window

        check_top_k(top_k)
        roles = roles_filter(role)
        window = time_window(since, until)
        if top_k == 0:
            if not self.exists:
                raise SessionNotFound(f"no session named {self.name!r} (see `sessionctl list`)")
            return []
        if window.open:
            return list(self._backend.tail(self.name, top_k, roles))
        # Times need not follow seq (imports keep theirs): every message is looked at,
        # one at a time, and the last top_k inside the window kept.
        kept: collections.deque[Message] = collections.deque(maxlen=top_k)
        for m in self._backend.iter_messages(self.name):
            if (roles is None or m.role in roles) and window.holds(m.created_at):
                kept.append(m)
        return list(kept)

    # -- memory ------------------------------------------------------------
    def get_relevant(
        self,
        prompt: str,
        top_k: int = 5,
        distance_threshold: float | None = None,
        fall_back: bool = False,
        as_text: bool = False,
        raw: bool = False,
        role: str | Iterable[str] | None = None,
        mode: str = "hybrid",
        since: When | None = None,
        until: When | None = None,
        meta: Mapping[str, Any] | None = None,
        model: str | None = None,
        user: str | None = None,
    ) -> list[dict[str, Any]] | list[str]:
        """Messages of this session matching ``prompt`` (see :meth:`Store.get_relevant`).

        Dicts carry ``distance`` (None for keyword-only and fall-back results),
        ``session`` and ``sources``. With ``user``: nothing unless the session is
        that user's.
        """
        return self._store.get_relevant(
            prompt,
            sessions=[self.name],
            user=user,
            top_k=top_k,
            distance_threshold=distance_threshold,
            fall_back=fall_back,
            as_text=as_text,
            raw=raw,
            role=role,
            mode=mode,
            since=since,
            until=until,
            meta=meta,
            model=model,
        )

    def relevant_messages(
        self,
        prompt: str,
        top_k: int = 5,
        *,
        distance_threshold: float | None = None,
        mode: str = "vector",
    ) -> list[Message]:
        """Like :meth:`get_relevant` but returns :class:`Message` objects, best first.

        Default mode "vector" (by meaning): what chat puts in its context.
        """
        from sessionctl.service.memory import search

        hits = search(
            self._store,
            prompt,
            sessions=[self.name],
            top_k=top_k,
            distance_threshold=distance_threshold,
            mode=mode,
        )
        return [h.message for h in hits]

    # -- copies --------------------------------------------------------------
    def fork(self, new_name: str, at: str | None = None) -> Session:
        """Copy this session (up to and including message ``at``) into ``new_name``."""
        return self._store.fork(self.name, new_name, at=at)

    # -- conversation ------------------------------------------------------
    def chat(
        self,
        prompt: str,
        *,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: Sequence[Callable[..., Any]] | None = None,
        max_tool_rounds: int | None = None,  # None: DEFAULT_MAX_TOOL_ROUNDS (8)
        **options: Any,
    ) -> Reply:
        """Send ``prompt`` with this session's context, record prompt and answer, and
        return the :class:`~sessionctl.service.conversation.Reply` (``text``, ``model``,
        ``usage``, ``messages``, ``tool_calls``). The same turn as ``sessionctl chat``:
        ``options`` are its other settings (``api_base``, ``context_recent``,
        ``context_relevant``, ``no_context``, ``timeout``, ``via``, ``context_window``,
        ``force``). A failed call raises ``ProviderError`` (or a subclass) and appends
        nothing.

        ``tools``: Python functions the model may call (schemas from their type hints
        and docstrings); each model answer with tool calls is run and recorded as one
        step (assistant ``tool_calls`` message and a ``tool`` message per call), then
        sent back, for at most ``max_tool_rounds`` rounds (default 8, then
        :class:`~sessionctl.errors.ToolRoundsExceeded`). A tool that raises sends
        ``"error: ExcType: message"`` back to the model."""
        from sessionctl.service import conversation

        opts = _turn_options(model, system, temperature, max_tokens, options)
        return conversation.chat(self, prompt, opts, tools, max_tool_rounds)

    def stream(
        self,
        prompt: str,
        *,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: Sequence[Callable[..., Any]] | None = None,
        max_tool_rounds: int | None = None,  # None: DEFAULT_MAX_TOOL_ROUNDS (8)
        **options: Any,
    ) -> Generator[StreamEvent, None, None]:
        """Like :meth:`chat`, as events: ``TextDelta(text)`` pieces, a ``ToolCall`` per
        tool run (after its step was recorded), then one ``Finished(reply)``; history is
        written when the stream completes. Closing it part-way keeps the prompt and the
        partial answer, marked interrupted (tool steps already recorded stay)."""
        from sessionctl.service import conversation

        opts = _turn_options(model, system, temperature, max_tokens, options)
        return conversation.stream(self, prompt, opts, tools, max_tool_rounds)

    async def achat(
        self,
        prompt: str,
        *,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: Sequence[Callable[..., Any]] | None = None,
        max_tool_rounds: int | None = None,  # None: DEFAULT_MAX_TOOL_ROUNDS (8)
        **options: Any,
    ) -> Reply:
        """:meth:`chat` for asyncio: the same arguments, recording and :class:`Reply`.
        The turn runs in a worker thread (tools too); cancelling the awaiting task
        part-way records the prompt and the partial answer, marked interrupted, as
        closing a :meth:`stream` does."""
        from sessionctl.service import conversation

        opts = _turn_options(model, system, temperature, max_tokens, options)
        return await conversation.achat(self._starter(prompt, opts, tools, max_tool_rounds))

    def astream(
        self,
        prompt: str,
        *,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        tools: Sequence[Callable[..., Any]] | None = None,
        max_tool_rounds: int | None = None,  # None: DEFAULT_MAX_TOOL_ROUNDS (8)
        **options: Any,
    ) -> AsyncGenerator[StreamEvent, None]:
        """:meth:`stream` for asyncio: an async generator of the same events, run in a
        worker thread one event at a time. ``aclose()``, breaking out of ``async for``
        or cancelling the consuming task part-way records the prompt and what had
        arrived, marked interrupted (waiting for the event in flight)."""
        from sessionctl.service import conversation

        opts = _turn_options(model, system, temperature, max_tokens, options)
        return conversation.astream(self._starter(prompt, opts, tools, max_tool_rounds))

    def json(
        self,
        prompt: str,
        schema: Any,
        *,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        **options: Any,
    ) -> Any:
        """Ask for structured output: ``schema`` is a pydantic model class or a JSON
        Schema dict; returns the validated answer (a model instance, or the parsed JSON
        value). The schema goes to the provider as OpenAI ``response_format``
        (``json_schema``); the transcript records the prompt and the raw JSON text.
        An answer that does not validate is sent back once with the validation error;
        a second invalid answer raises :class:`~sessionctl.errors.InvalidOutput` (a
        ``ProviderError``) and, like any failed call, appends nothing. ``options`` are
        :meth:`chat`'s."""
        from sessionctl.service import conversation

        opts = _turn_options(model, system, temperature, max_tokens, options)
        return conversation.ask_json(self, prompt, schema, opts)

    def _starter(
        self,
        prompt: str,
        opts: ChatOptions,
        tools: Sequence[Callable[..., Any]] | None,
        max_tool_rounds: int | None,
    ) -> Callable[[Callable[[ChatStream], None]], Generator[StreamEvent, None, None]]:
        """What :meth:`achat`/:meth:`astream` run in their worker thread: the turn as a
        stream of events, reporting its model stream to ``on_stream``."""
        from sessionctl.service import conversation

        def start(on_stream: Callable[[ChatStream], None]) -> Generator[StreamEvent, None, None]:
            return conversation.stream(self, prompt, opts, tools, max_tool_rounds, on_stream)

        return start

    def to_dict(self) -> dict[str, Any]:
        """Return the whole session as a JSON-ready dict (the ``export --format json`` shape)."""
        from sessionctl.service.transfer import session_to_dict

        return session_to_dict(self)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], store: Store | None = None, *, name: str | None = None
    ) -> Session:
        """Create a session from :meth:`to_dict` output (in ``store``, or the default one)."""
        if store is None:
            if default_store is None:  # pragma: no cover - sessionctl/__init__ imports it
                raise RuntimeError("import sessionctl.service.store first")
            store = default_store()
        return store.from_dict(data, name=name)
