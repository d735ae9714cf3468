"""The memory an agent reaches through ``sessionctl mcp``: tools, their schemas, the scope.

Nothing here imports the MCP SDK: :class:`Memory` takes a tool name and its
arguments and returns a JSON-able result or raises :class:`ToolError` with one
line for the model to read. The scope (``--session-prefix``, ``--user``) is fixed
when the server starts; no argument widens it, and a session outside it reads as
one that does not exist.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from sessionctl.errors import SessionctlError, SessionNotFound
from sessionctl.names import is_valid_name

if TYPE_CHECKING:
    from sessionctl.config import Settings
    from sessionctl.models import Message
    from sessionctl.service import Store

log = logging.getLogger("sessionctl.mcp")

SNIPPET = 300  # characters of a message shown by search_history and recent
ROLES = ["user", "assistant", "system", "tool"]
WHEN = (
    "a duration ago (30m, 24h, 7d, 2w), a date (2026-11-30, a whole day as `until`)"
    " or an ISO timestamp (UTC without an offset)"
)
INSTRUCTIONS = (
    "Past conversations kept by sessionctl, verbatim. search_history finds messages by"
    " meaning and by exact words (names, error codes, ids); results are snippets with a"
    " session name and a seq: read_session gives the full text around them. recent gives"
    " the latest messages of a session, list_sessions the sessions (newest activity first)."
)


class ToolError(Exception):
    """A call the tool refuses or cannot answer: one line, sent back as a tool error."""


class Scope(NamedTuple):
    """What this server may see, pinned by its flags."""

    prefix: str = ""
    user: str | None = None

    def describe(self) -> str:
        parts = [f"--session-prefix {self.prefix!r}"] if self.prefix else []
        if self.user is not None:
            parts.append(f"--user {self.user!r}")
        return " and ".join(parts)


class Tool(NamedTuple):
    name: str
    description: str
    schema: dict[str, Any]
    writes: bool
    run: Callable[[Memory, dict[str, Any]], dict[str, Any]]


# -- schemas -------------------------------------------------------------------


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _integer(description: str, low: int, high: int, default: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "integer",
        "description": description,
        "minimum": low,
        "maximum": high,
    }
    if default is not None:
        spec["default"] = default
    return spec


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


_SESSION = "A session name, as search_history and list_sessions give it."
_ROLE = _string("Only messages of this role.", enum=ROLES)
_SINCE = _string(f"Only messages created at or after this time: {WHEN}.")
_UNTIL = _string(f"Only messages created at or before this time: {WHEN}.")

MESSAGE_SCHEMA = _object(
    {
        "role": _string("Who said it.", enum=ROLES),
        "content": _string("The text of the message."),
        "name": _string("The name of the tool or participant (optional)."),
        "tool_call_id": _string("For a tool message: the id of the call it answers."),
        "metadata": {"type": "object", "description": "Any JSON object kept with it."},
    },
    ("role", "content"),
)


# -- the memory ------------------------------------------------------------------


class Memory:
    """The tools over one store, within one scope; calls are made one at a time."""

    def __init__(
        self,
        settings: Settings,
        *,
        scope: Scope | None = None,
        allow_write: bool = False,
    ) -> None:
        from sessionctl.service import Store

        self.scope = scope or Scope()
        self.allow_write = allow_write
        self._warnings: list[str] = []
        self.store: Store = Store(settings=settings, warn=self._warn)
        self._tools = {tool.name: tool for tool in TOOLS if allow_write or not tool.writes}

    def close(self) -> None:
        self.store.close()

    def _warn(self, message: str) -> None:
        log.warning(message)
        self._warnings.append(message)

    def tools(self) -> list[Tool]:
        """The tools this server offers (the writing ones only with ``--allow-write``)."""
        return list(self._tools.values())

    def warm(self) -> None:
        """Load the embedding model now, so the first search does not wait for it."""
        from sessionctl.service.memory import embedder_for

        embedder_for(self.store).embed(["warm up"])

    def call(self, name: str, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        """Run tool ``name``: its JSON result, or ToolError with one line saying why not."""
        tool = self._tools.get(name)
        if tool is None:
            if any(t.name == name for t in TOOLS):
                raise ToolError(
                    f"{name} writes to the history; this server was started without --allow-write"
                )
            raise ToolError(f"unknown tool {name!r} (tools: {', '.join(self._tools)})")
        args = check_arguments(tool, arguments)
        self._warnings = []
        try:
            result = tool.run(self, args)
        except ToolError:
            raise
        except SessionctlError as exc:
            raise ToolError(_for_a_model(str(exc))) from None
        except OSError as exc:  # a full disk, a permission: the server lives on
            raise ToolError(f"{name} failed: {exc.strerror or exc}") from None
        except Exception as exc:  # a bug: tell the model, keep the trace on stderr
            log.error("%s failed:\n%s", name, traceback.format_exc())
            raise ToolError(f"{name} failed: {type(exc).__name__}: {exc}") from None
        if self._warnings:
            result["warnings"] = list(dict.fromkeys(self._warnings))
        return result

    # -- scope -------------------------------------------------------------------
    def _unknown(self, name: str) -> ToolError:
        return ToolError(f"no session named {name!r} (list_sessions shows the sessions here)")

    def _in_scope(self, name: str) -> bool:
        if not name.startswith(self.scope.prefix):
            return False
        if self.scope.user is None:
            return True
        try:
            owner = self.store.session(name).user
        except SessionNotFound:
            return True  # a new session: written, it will be this user's
        # Not a session without a user: writing would claim it, and so read it.
        return owner == self.scope.user

    def readable(self, name: str) -> str:
        """``name`` when it is an existing session in scope; else the error for 'unknown'."""
        if not is_valid_name(name) or not name.startswith(self.scope.prefix):
            raise self._unknown(name)
        session = self.store.session(name)
        try:
            owner = session.user
        except SessionNotFound:
            raise self._unknown(name) from None
        if self.scope.user is not None and owner != self.scope.user:
            raise self._unknown(name)
        return name

    def writable(self, name: str) -> str:
        """``name`` when a write may go there (it need not exist yet)."""
        if not is_valid_name(name):
            self.store.session(name)  # raises InvalidName, which says the rule
        if not name.startswith(self.scope.prefix):
            raise ToolError(
                f"session {name!r} is outside this server's scope: its name must start"
                f" with {self.scope.prefix!r}"
            )
        if not self._in_scope(name):
            raise ToolError(f"session {name!r} cannot be written from here; pick another name")
        return name

    def search_names(self) -> list[str] | None:
        """The sessions a search may look in, before the user restriction (None: all)."""
        return self.store.names(self.scope.prefix) if self.scope.prefix else None


# -- the tools -------------------------------------------------------------------


def _search_history(memory: Memory, args: dict[str, Any]) -> dict[str, Any]:
    from sessionctl.service.memory import search
    from sessionctl.service.timefilter import criteria

    query = args["query"]
    names = [memory.readable(args["session"])] if "session" in args else memory.search_names()
    where = criteria(args.get("since"), args.get("until"))
    if names == []:
        return {"results": [], "note": "no sessions in this server's scope yet"}
    hits = search(
        memory.store,
        query,
        sessions=names,
        top_k=args["k"],
        role=args.get("role"),
        mode=args["mode"],
        where=where,
        user=memory.scope.user,
    )
    results = []
    for hit in hits:
        item = _brief(hit.session, hit.message, query)
        if hit.distance is not None:
            item["distance"] = round(hit.distance, 3)
        item["found_by"] = [
            {"vector": "meaning", "text": "words"}[key]
            for key in ("vector", "text")
            if key in hit.sources
        ]
        results.append(item)
    out: dict[str, Any] = {"results": results}
    if not results:
        out["note"] = (
            "nothing matched; try other words, mode 'text' for exact terms, or a wider since/until"
        )
    return out


def _recent(memory: Memory, args: dict[str, Any]) -> dict[str, Any]:
    if "session" in args:
        name = memory.readable(args["session"])
    else:
        page = memory.store.list_sessions(
            limit=1, prefix=memory.scope.prefix, user=memory.scope.user
        )
        if not page.sessions:
            return {"session": None, "messages": [], "note": "no sessions here yet"}
        name = page.sessions[0].name
    found = memory.store.session(name).recent_messages(args["k"], role=args.get("role"))
    return {"session": name, "messages": [_brief(None, m, "") for m in found]}


def _list_sessions(memory: Memory, args: dict[str, Any]) -> dict[str, Any]:
    cursor = args.get("cursor")
    try:
        page = memory.store.list_sessions(
            limit=args["limit"],
            cursor=cursor,
            since=args.get("since"),
            until=args.get("until"),
            prefix=memory.scope.prefix,
            user=memory.scope.user,
        )
    except SessionctlError as exc:
        if cursor is not None and "cursor" in str(exc):
            raise ToolError("cursor is not one list_sessions gave; start without it") from None
        raise
    return {"sessions": [_info(info) for info in page.sessions], "next_cursor": page.next_cursor}


def _read_session(memory: Memory, args: dict[str, Any]) -> dict[str, Any]:
    name = memory.readable(args["session"])
    start, limit = args["start"], args["limit"]
    session = memory.store.session(name)
    info = session.info()
    picked: list[Message] = []
    for message in session.iter_messages():
        if message.seq < start:
            continue
        picked.append(message)
        if len(picked) > limit:
            break
    more = len(picked) > limit
    return {
        "session": _info(info),
        "messages": [_full(m) for m in picked[:limit]],
        "next_start": picked[limit].seq if more else None,
    }


def _add_messages(memory: Memory, args: dict[str, Any]) -> dict[str, Any]:
    name = memory.writable(args["session"])
    session = memory.store.session(name)
    added = session.add_messages(args["messages"], user=memory.scope.user)
    return {"session": name, "added": [{"seq": m.seq, "id": m.id} for m in added]}


def _fork(memory: Memory, args: dict[str, Any]) -> dict[str, Any]:
    source = memory.readable(args["session"])
    new = memory.writable(args["new"])
    if memory.store.session(new).exists:
        raise ToolError(f"session {new!r} already exists; pick a new name")
    at: str | None = None
    if "at" in args:
        for message in memory.store.session(source).iter_messages():
            if message.seq == args["at"]:
                at = message.id
                break
        else:
            raise ToolError(f"session {source!r} has no message with seq {args['at']}")
    forked = memory.store.fork(source, new, at=at)
    return {"session": _info(forked.info())}


def _brief(session: str | None, message: Message, query: str) -> dict[str, Any]:
    out: dict[str, Any] = {} if session is None else {"session": session}
    out.update(seq=message.seq, role=message.role, created_at=message.created_at)
    out["snippet"] = snippet(message.content, query)
    if len(message.content) > SNIPPET:
        out["chars"] = len(message.content)
    if message.tool_calls:
        out["tool_calls"] = [_call_name(call) for call in message.tool_calls]
    return out


def _call_name(call: Any) -> str:
    if isinstance(call, Mapping):
        function = call.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return str(function["name"])
        if isinstance(call.get("name"), str):
            return str(call["name"])
    return "?"


def _full(message: Message) -> dict[str, Any]:
    out = message.to_dict()
    del out["id"]
    return out


def _info(info: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": info.name,
        "messages": info.messages,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
    }
    for key in ("model", "parent"):
        if getattr(info, key):
            out[key] = getattr(info, key)
    if info.metadata:
        out["metadata"] = info.metadata
    return out


_WORD = re.compile(r"\w{3,}")


def snippet(text: str, query: str, width: int = SNIPPET) -> str:
    """``text`` on one line, cut to ``width`` around the first query word it holds."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    start = 0
    low = flat.lower()
    for word in sorted(_WORD.findall(query.lower()), key=len, reverse=True):
        at = low.find(word)
        if at >= 0:
            start = max(0, min(at - width // 3, len(flat) - width))
            break
    piece = flat[start : start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(flat) else "")


def _for_a_model(message: str) -> str:
    """A service error's text without the CLI hints a model cannot follow."""
    return message.replace(" (see `sessionctl list`)", "")


# -- arguments -------------------------------------------------------------------


def check_arguments(tool: Tool, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    """The arguments checked against the tool's schema, defaults filled in (None: absent)."""
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise ToolError(f"{tool.name}: arguments must be a JSON object")
    return _check_object(tool.name, tool.schema, arguments, "")


def _check_object(
    tool: str, schema: Mapping[str, Any], value: Mapping[str, Any], where: str
) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties", {})
    for key in value:
        if key not in props and schema.get("additionalProperties") is False:
            known = ", ".join(props) or "none"
            raise ToolError(f"{tool}: unknown argument {where}{key!r} (arguments: {known})")
    out: dict[str, Any] = {}
    for key, spec in props.items():
        given = value.get(key)
        if given is not None:
            out[key] = _check_value(tool, f"{where}{key}", spec, given)
        elif key in schema.get("required", ()):
            raise ToolError(f"{tool}: {where}{key} is required")
        elif "default" in spec:
            out[key] = spec["default"]
    return out


def _check_value(tool: str, where: str, spec: Mapping[str, Any], value: Any) -> Any:
    kind = spec.get("type")
    if kind == "string":
        if not isinstance(value, str):
            raise ToolError(f"{tool}: {where} must be text, got {_json_type(value)}")
        if len(value) < spec.get("minLength", 0):
            raise ToolError(f"{tool}: {where} must not be empty")
    elif kind == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ToolError(f"{tool}: {where} must be a whole number, got {_json_type(value)}")
        low, high = spec.get("minimum"), spec.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ToolError(f"{tool}: {where} must be from {low} to {high}, got {value}")
    elif kind == "array":
        if not isinstance(value, list):
            raise ToolError(f"{tool}: {where} must be a list, got {_json_type(value)}")
        low, high = spec.get("minItems", 0), spec.get("maxItems")
        if len(value) < low or (high is not None and len(value) > high):
            raise ToolError(f"{tool}: {where} takes {low} to {high} items, got {len(value)}")
        items = spec.get("items", {})
        value = [_check_value(tool, f"{where}[{i}]", items, v) for i, v in enumerate(value)]
    elif kind == "object":
        if not isinstance(value, Mapping):
            raise ToolError(f"{tool}: {where} must be a JSON object, got {_json_type(value)}")
        if "properties" in spec:
            value = _check_object(tool, spec, value, f"{where}.")
        else:
            value = dict(value)
    if "enum" in spec and value not in spec["enum"]:
        raise ToolError(f"{tool}: {where} must be one of {', '.join(spec['enum'])}, got {value!r}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "true/false"), (str, "text"), (int, "a number"), (float, "a number")):
        if isinstance(value, kind):
            return name
    return "a list" if isinstance(value, list) else "an object"


TOOLS: tuple[Tool, ...] = (
    Tool(
        "search_history",
        "Search past conversations for messages about something, by meaning and by exact"
        " words together (a name, an error code or an id is found as typed). Use it before"
        " answering when earlier sessions may hold the answer or a decision. Returns up to k"
        " snippets, best first, each with its session and seq; call read_session with them"
        " for the full text and what was said around it.",
        _object(
            {
                "query": _string(
                    "What to look for: a question, a description, or exact words.",
                    minLength=1,
                ),
                "k": _integer("How many results at most.", 1, 50, 5),
                "mode": _string(
                    "hybrid: by meaning and words (best in general); vector: by meaning"
                    " only; text: exact words only (ranked by BM25).",
                    enum=["hybrid", "vector", "text"],
                    default="hybrid",
                ),
                "since": _SINCE,
                "until": _UNTIL,
                "session": _string("Search only this session (default: every session)."),
                "role": _ROLE,
            },
            ("query",),
        ),
        False,
        _search_history,
    ),
    Tool(
        "recent",
        "The latest messages of a session, oldest first, as snippets with their seq (for"
        " read_session). Without a session: the most recently active one.",
        _object(
            {
                "session": _string(_SESSION),
                "k": _integer("How many messages.", 1, 100, 10),
                "role": _ROLE,
            }
        ),
        False,
        _recent,
    ),
    Tool(
        "list_sessions",
        "The sessions, most recently active first: name, message count, times, model and"
        " metadata. Pass next_cursor back as cursor for the next page.",
        _object(
            {
                "limit": _integer("Sessions per page.", 1, 200, 20),
                "cursor": _string("The next_cursor of the previous page."),
                "since": _string(f"Only sessions active at or after this time: {WHEN}."),
                "until": _string(f"Only sessions active at or before this time: {WHEN}."),
            }
        ),
        False,
        _list_sessions,
    ),
    Tool(
        "read_session",
        "The full messages of a session from seq `start` on, a page at a time (next_start"
        " is where the next page begins; null at the end), with the session's details.",
        _object(
            {
                "session": _string(_SESSION),
                "start": _integer("The seq to start from.", 1, 2**53, 1),
                "limit": _integer("Messages per page.", 1, 200, 50),
            },
            ("session",),
        ),
        False,
        _read_session,
    ),
    Tool(
        "add_messages",
        "Append messages to a session (created when new), in order, all or none. Use it"
        " to remember something for later sessions: a decision, a fact, a summary.",
        _object(
            {
                "session": _string("The session to write to (a new name creates it)."),
                "messages": {
                    "type": "array",
                    "description": "The messages, oldest first.",
                    "items": MESSAGE_SCHEMA,
                    "minItems": 1,
                    "maxItems": 100,
                },
            },
            ("session", "messages"),
        ),
        True,
        _add_messages,
    ),
    Tool(
        "fork",
        "Copy a session, whole or up to and including message `at` (a seq), into a new"
        " session, to branch a conversation without changing the original.",
        _object(
            {
                "session": _string("The session to copy."),
                "new": _string("The new session's name."),
                "at": _integer("The last seq to copy (default: all).", 1, 2**53),
            },
            ("session", "new"),
        ),
        True,
        _fork,
    ),
)
