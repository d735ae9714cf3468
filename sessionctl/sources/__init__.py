"""Readers of the on-disk formats of other chat tools, for ``import --from SOURCE``.

A face (the CLI) opens the user's source with :func:`read_source`; each reader
yields :class:`SourceSession` values one conversation at a time (a JSON-lines
file, an SQLite database, a directory and a JSON list of conversations such as
ChatGPT's ``conversations.json`` (:mod:`sessionctl.sources.stream`) are streamed;
a single JSON document of one conversation is parsed whole, within the size
limit). Nothing here writes anything or executes anything from the source:
the service checks each message and writes the sessions
(:mod:`sessionctl.service.bulk_import`). Mapping tables: docs/import-export.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from typing import Any, NamedTuple

from sessionctl.errors import NotFound, UsageError
from sessionctl.sources.stream import iter_array

SOURCES = ("openai", "sharegpt", "chatgpt", "claude-code", "llm", "sgpt", "gptme")
MAX_LINE = 16 * 2**20
MAX_DOCUMENT = 2**30
# ShareGPT's "from" values -> roles
SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant",
    "system": "system", "tool": "tool", "function_call": "assistant", "observation": "tool",
}  # fmt: skip


class Problem(NamedTuple):
    """A message that could not be mapped, and where it is."""

    where: str
    reason: str


class SourceSession(NamedTuple):
    """One conversation read from a source: messages are sessionctl message dicts
    (role, content, created_at, id, model, usage, tool_calls, tool_call_id, metadata)."""

    key: str  # the source's own id of the conversation (stable across imports)
    title: str | None
    created_at: str | None
    model: str | None
    system: str | None
    metadata: dict[str, Any]
    messages: list[dict[str, Any]]
    problems: list[Problem]
    where: str  # file (and place) it came from
    parent: str | None = None  # key of the conversation this one branches from
    parent_message: str | None = None  # id of the message it branches at


def stable_id(source: str, *parts: object) -> str:
    """A message id from a hash of the source and its own ids: the same on every import.

    The hash is of ``json.dumps([source, *parts], default=str)``; texts and whole
    numbers (what the readers pass) are spelled here as json.dumps spells them, at a
    third of its cost, anything else goes through it.
    """
    items = (source, *parts)
    try:  # all texts (most calls): one C call each
        text = "[" + ", ".join(map(_quote, items)) + "]"  # type: ignore[arg-type]
    except TypeError:
        if all(type(p) is str or type(p) is int for p in items):
            text = "[" + ", ".join(_quote(p) if type(p) is str else str(p) for p in items) + "]"
        else:
            text = json.dumps(list(items), default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{source.replace('-', '')}-{digest[:24]}"


def _fail(where: str, problem: str) -> UsageError:
    return UsageError(f"{where}: {problem}; nothing imported")


def _safe_path(path: Path) -> Path:
    if not path.exists() and not path.is_symlink():
        raise NotFound(f"no such file or directory: {path}")
    if path.is_symlink() and not path.exists():
        raise _fail(str(path), "a dangling symbolic link")
    return path


def _files(root: Path, pattern: str) -> Iterator[Path]:
    """Regular files under ``root`` matching ``pattern``; symbolic links are not followed
    (a link could lead outside the source), and reported as skipped by the caller."""
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob(pattern)):
        if path.is_symlink() or not path.is_file():
            continue
        yield path


def _loads(text: str | bytes, where: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise _fail(where, "JSON nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise _fail(where, f"not UTF-8 text (byte {exc.start + 1})") from None
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise _fail(
                where, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None
        raise _fail(where, f"not valid JSON ({exc})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _document(path: Path, limit: int = MAX_DOCUMENT) -> Any:
    size = path.stat().st_size
    if size > limit:
        raise _fail(str(path), f"larger than {limit} bytes")
    with path.open("rb") as stream:
        data = stream.read(limit + 1)
    return _loads(data.lstrip(b"\xef\xbb\xbf"), str(path))


def _array(path: Path) -> Iterator[Any]:
    """The conversations of a JSON list file, streamed (:func:`iter_array`)."""
    with path.open("rb") as stream:
        yield from iter_array(stream, str(path), what="conversation", max_element=MAX_DOCUMENT)


def _lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank JSON line, streamed."""
    with path.open("rb") as stream:
        number = 0
        while True:
            line = stream.readline(MAX_LINE + 1)
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE and not line.endswith(b"\n"):
                raise _fail(f"{path}: line {number}", f"longer than {MAX_LINE} bytes")
            if number == 1:
                line = line.lstrip(b"\xef\xbb\xbf")
            if line.strip():
                yield number, _loads(line, f"{path}: line {number}")


def _text(value: Any) -> str | None:
    """Text of an OpenAI/Anthropic content value (a string or a list of parts), or None."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        out = []
        for part in value:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                out.append(part["text"])
            else:
                return None
        return "".join(out)
    return None


def _time(value: Any) -> str | None:
    """An ISO 8601 UTC time from epoch seconds or an ISO string (else None)."""
    from datetime import datetime, timezone

    UTC = timezone.utc

    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            stamp = datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            return None
        return _ms(stamp)
    if isinstance(value, str) and value:
        try:
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return _ms(stamp.astimezone(UTC))
    return None


def _ms(stamp: Any) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` of a UTC datetime (isoformat: 3x faster than strftime,
    and the same text from the year 1000 on; strftime does not pad earlier years)."""
    if stamp.year >= 1000:
        return str(stamp.isoformat(timespec="milliseconds")[:-6]) + "Z"
    return str(stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]) + "Z"


# -- openai / sharegpt ------------------------------------------------------------------------


def _openai_messages(
    source: str, key: str, items: Any, where: str
) -> tuple[list[dict[str, Any]], list[Problem], str | None]:
    messages: list[dict[str, Any]] = []
    problems: list[Problem] = []
    system = None
    if not isinstance(items, list):
        return [], [Problem(where, "messages must be a list")], None
    for number, item in enumerate(items, start=1):
        place = f"{where}: message {number}"
        if not isinstance(item, Mapping):
            problems.append(Problem(place, "a message must be an object"))
            continue
        role = item.get("role")
        role = {"developer": "system", "function": "tool"}.get(role, role)  # type: ignore[arg-type]
        text = _text(item.get("content"))
        if role not in ("system", "user", "assistant", "tool") or text is None:
            problems.append(Problem(place, f"role {role!r} or content cannot be mapped"))
            continue
        message: dict[str, Any] = {
            "id": stable_id(source, key, number, role, text),
            "role": role,
            "content": text,
        }
        for field in ("tool_calls", "tool_call_id", "name"):
            if item.get(field) is not None:
                message[field] = item[field]
        messages.append(message)
    return messages, problems, system


def read_openai(path: Path) -> Iterator[SourceSession]:
    value: Any
    first = b""
    with path.open("rb") as stream:
        first = stream.read(1024).lstrip(b"\xef\xbb\xbf").lstrip()
    if first.startswith(b"["):
        value = _document(path)
        msgs, problems, _ = _openai_messages("openai", path.name, value, str(path))
        yield SourceSession(path.stem, path.stem, None, None, None, {}, msgs, problems, str(path))
        return
    for number, line in _lines(path):
        where = f"{path}: line {number}"
        if not isinstance(line, Mapping):
            raise _fail(where, "expected an object with a 'messages' list")
        key = f"{path.stem}-{number}"
        msgs, problems, _ = _openai_messages("openai", key, line.get("messages"), where)
        yield SourceSession(key, key, None, None, None, {}, msgs, problems, where)


def read_sharegpt(path: Path) -> Iterator[SourceSession]:
    with path.open("rb") as stream:
        first = stream.read(1024).lstrip(b"\xef\xbb\xbf").lstrip()
    items: Iterator[tuple[str, Any]]
    if first.startswith(b"["):
        items = ((f"{path}: conversation {i}", c) for i, c in enumerate(_array(path), start=1))
    else:
        items = ((f"{path}: line {n}", c) for n, c in _lines(path))
    for number, (where, conv) in enumerate(items, start=1):
        if not isinstance(conv, Mapping) or not isinstance(conv.get("conversations"), list):
            raise _fail(where, "expected an object with a 'conversations' list")
        key = str(conv.get("id") or f"{path.stem}-{number}")
        messages, problems = [], []
        system = conv.get("system") if isinstance(conv.get("system"), str) else None
        for turn, item in enumerate(conv["conversations"], start=1):
            place = f"{where}: turn {turn}"
            speaker = item.get("from") if isinstance(item, Mapping) else None
            text = item.get("value") if isinstance(item, Mapping) else None
            role = SHAREGPT_ROLES.get(speaker.lower()) if isinstance(speaker, str) else None
            if role is None or not isinstance(text, str):
                problems.append(Problem(place, f"'from' {speaker!r} or 'value' cannot be mapped"))
                continue
            messages.append(
                {"id": stable_id("sharegpt", key, turn, text), "role": role, "content": text}
            )
        yield SourceSession(key, key, None, None, system, {}, messages, problems, where)


# -- chatgpt (values parsed from JSON: dicts, checked as such, not as Mappings: 3x faster) --


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _chatgpt_message(node: Mapping[str, Any]) -> dict[str, Any] | Problem | None:
    msg = node.get("message")
    if not isinstance(msg, dict):
        return None  # the root and empty nodes hold no message
    author = _obj(msg.get("author"))
    role = author.get("role")
    content = _obj(msg.get("content"))
    parts = content.get("parts")
    if isinstance(parts, list):
        text = "\n".join(p if isinstance(p, str) else "" for p in parts)
    elif isinstance(content.get("text"), str):
        text = content["text"]
    else:
        text = ""
    if role == "system" and not text.strip():
        return None  # ChatGPT's hidden empty system node
    if role not in ("system", "user", "assistant", "tool"):
        return Problem("", f"author role {role!r} cannot be mapped")
    out: dict[str, Any] = {"role": role, "content": text}
    meta = _obj(msg.get("metadata"))
    if isinstance(meta.get("model_slug"), str):
        out["model"] = meta["model_slug"]
    if role == "tool" and isinstance(author.get("name"), str):
        out["name"] = author["name"]
    stamp = _time(msg.get("create_time"))
    if stamp:
        out["created_at"] = stamp
    out["metadata"] = {"source_id": str(msg.get("id") or node.get("id"))}
    return out


def read_chatgpt(path: Path, *, branches: bool = False) -> Iterator[SourceSession]:
    """ChatGPT's export: ``conversations.json``, one JSON list of conversations, streamed
    (one conversation in memory at a time, whatever the size of the file)."""
    if path.is_dir():
        path = path / "conversations.json"
        _safe_path(path)
    with path.open("rb") as stream:
        items = iter_array(
            stream, str(path), what="conversation", max_element=MAX_DOCUMENT,
            not_a_list="expected a list of conversations (conversations.json)",
        )  # fmt: skip
        for number, conv in enumerate(items, start=1):
            where = f"{path}: conversation {number}"
            if not isinstance(conv, dict) or not isinstance(conv.get("mapping"), dict):
                raise _fail(where, "expected an object with a 'mapping' tree")
            yield from _chatgpt_conversation(conv, where, branches)


def _chatgpt_path(mapping: Mapping[str, Any], leaf: str) -> list[str]:
    chain: list[str] = []
    seen: set[str] = set()
    node: Any = leaf
    while isinstance(node, str) and node in mapping and node not in seen:
        seen.add(node)
        chain.append(node)
        parent = mapping[node].get("parent") if isinstance(mapping[node], dict) else None
        node = parent
    chain.reverse()
    return chain


def _chatgpt_conversation(
    conv: Mapping[str, Any], where: str, branches: bool
) -> Iterator[SourceSession]:
    mapping: Mapping[str, Any] = conv["mapping"]
    key = str(conv.get("conversation_id") or conv.get("id") or where)
    title = conv.get("title") if isinstance(conv.get("title"), str) else None
    current = conv.get("current_node")
    if not isinstance(current, str) or current not in mapping:
        leaves = [k for k, v in mapping.items() if isinstance(v, dict) and not v.get("children")]
        current = leaves[-1] if leaves else None
    main = _chatgpt_path(mapping, current) if current else []
    created = _time(conv.get("create_time"))
    metadata: dict[str, Any] = {"title": title} if title else {}

    def build(chain: list[str], skey: str) -> tuple[list[dict[str, Any]], list[Problem]]:
        messages, problems = [], []
        for node_id in chain:
            node = mapping[node_id]
            got = _chatgpt_message(node) if isinstance(node, dict) else None
            if isinstance(got, Problem):
                problems.append(Problem(f"{where}: node {node_id}", got.reason))
            elif got is not None:
                got["id"] = stable_id("chatgpt", key, node_id)
                messages.append(got)
        return messages, problems

    messages, problems = build(main, key)
    model = next((m["model"] for m in reversed(messages) if m.get("model")), None)
    yield SourceSession(key, title, created, model, None, metadata, messages, problems, where)
    if not branches:
        return
    on_main = set(main)
    for node_id, node in mapping.items():
        if node_id in on_main or not isinstance(node, dict) or node.get("children"):
            continue
        chain = _chatgpt_path(mapping, node_id)
        fork_at = max((i for i, n in enumerate(chain) if n in on_main), default=-1)
        branch = chain[fork_at + 1 :]
        msgs, probs = build(branch, key)
        if not msgs:
            continue
        parent_msg = None
        for n in reversed(chain[: fork_at + 1]):
            if isinstance(mapping[n], dict) and isinstance(mapping[n].get("message"), dict):
                parent_msg = stable_id("chatgpt", key, n)
                break
        yield SourceSession(
            f"{key}.{node_id}", title, created, model, None, {**metadata, "branch": node_id},
            msgs, probs, f"{where}: node {node_id}", parent=key, parent_message=parent_msg,
        )  # fmt: skip


# -- claude code ------------------------------------------------------------------------------


def read_claude_code(root: Path) -> Iterator[SourceSession]:
    for path in _files(root, "*.jsonl"):
        messages: list[dict[str, Any]] = []
        problems: list[Problem] = []
        key = path.stem
        model = None
        created = None
        for number, rec in _lines(path):
            where = f"{path}: line {number}"
            if not isinstance(rec, Mapping):
                problems.append(Problem(where, "not an object"))
                continue
            kind = rec.get("type")
            if kind not in ("user", "assistant"):
                continue  # summaries, file snapshots, system events: not messages
            msg = rec.get("message")
            if not isinstance(msg, Mapping):
                problems.append(Problem(where, "no 'message' object"))
                continue
            key = str(rec.get("sessionId") or key)
            stamp = _time(rec.get("timestamp"))
            created = created or stamp
            uuid = str(rec.get("uuid") or number)
            content = msg.get("content")
            base: dict[str, Any] = {"created_at": stamp} if stamp else {}
            if isinstance(msg.get("model"), str):
                model = msg["model"]
                base["model"] = model
            if isinstance(msg.get("usage"), Mapping):
                base["usage"] = dict(msg["usage"])
            if isinstance(content, str):
                messages.append({**base, "id": stable_id("claude-code", key, uuid),
                                 "role": kind, "content": content})  # fmt: skip
                continue
            if not isinstance(content, list):
                problems.append(Problem(where, "content is neither text nor a list of blocks"))
                continue
            texts: list[str] = []
            calls: list[dict[str, Any]] = []
            for index, block in enumerate(content):
                btype = block.get("type") if isinstance(block, Mapping) else None
                if btype == "text" and isinstance(block.get("text"), str):
                    texts.append(block["text"])
                elif btype == "thinking":
                    continue  # hidden reasoning is not part of the conversation
                elif btype == "tool_use" and isinstance(block, Mapping):
                    calls.append({
                        "id": str(block.get("id")), "type": "function",
                        "function": {"name": str(block.get("name")),
                                     "arguments": json.dumps(block.get("input", {}))},
                    })  # fmt: skip
                elif btype == "tool_result" and isinstance(block, Mapping):
                    result = _text(block.get("content"))
                    messages.append({
                        **base, "id": stable_id("claude-code", key, uuid, index), "role": "tool",
                        "content": json.dumps(block.get("content")) if result is None else result,
                        "tool_call_id": str(block.get("tool_use_id")),
                    })  # fmt: skip
                else:
                    problems.append(Problem(f"{where}: block {index + 1}", f"block {btype!r}"))
            if texts or calls:
                out = {**base, "id": stable_id("claude-code", key, uuid), "role": kind,
                       "content": "\n".join(texts)}  # fmt: skip
                if calls:
                    out["tool_calls"] = calls
                messages.append(out)
        meta = {"project": path.parent.name}
        yield SourceSession(key, key, created, model, None, meta, messages, problems, str(path))


# -- llm (Simon Willison's) -------------------------------------------------------------------


def read_llm(path: Path) -> Iterator[SourceSession]:
    import sqlite3

    if path.is_dir():
        path = path / "logs.db"
        _safe_path(path)
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise _fail(str(path), f"cannot open the SQLite database ({exc})") from None
    try:
        try:
            cols = {r[1] for r in db.execute("PRAGMA table_info(responses)")}
        except sqlite3.DatabaseError as exc:
            raise _fail(str(path), f"not an llm logs.db ({exc})") from None
        if not {"prompt", "response", "conversation_id"} <= cols:
            raise _fail(str(path), "not an llm logs.db (no responses table)")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if {"threads", "messages", "parts", "turns"} <= tables and db.execute(
            "SELECT 1 FROM turns LIMIT 1"
        ).fetchone():
            yield from _llm_threads(db, path)  # llm 0.36+: logged as threads of messages
            return
        want = ["id", "model", "prompt", "system", "response", "conversation_id",
                "datetime_utc", "input_tokens", "output_tokens"]  # fmt: skip
        select = ", ".join(c if c in cols else "NULL" for c in want)
        titles = dict(db.execute("SELECT id, name FROM conversations").fetchall())
        rows = db.execute(
            f"SELECT {select} FROM responses ORDER BY conversation_id, datetime_utc, id"
        )
        current: str | None = None
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            if row[5] != current and batch:
                yield _llm_session(path, current, titles, batch)
                batch = []
            current = row[5]
            batch.append(row)
        if batch:
            yield _llm_session(path, current, titles, batch)
    except sqlite3.DatabaseError as exc:
        raise _fail(str(path), f"cannot read the SQLite database ({exc})") from None
    finally:
        db.close()


def _llm_threads(db: Any, path: Path) -> Iterator[SourceSession]:
    """llm 0.36's threads: a thread's tip message, each message chained to its parent by
    hash, its text in ``parts``; the turn ending at a message gives model, usage, time."""
    threads = db.execute(
        "SELECT id, name, tip_message_hash, forked_from, datetime_utc FROM threads"
    )
    for tid, tname, tip, forked, tstamp in threads.fetchall():
        chain: list[tuple[str, str]] = []
        seen: set[str] = set()
        node = tip
        while node and node not in seen and len(chain) < 10**6:
            seen.add(node)
            row = db.execute(
                "SELECT parent_hash, role FROM messages WHERE hash=?", (node,)
            ).fetchone()
            if row is None:
                break
            chain.append((node, row[1]))
            node = row[0]
        chain.reverse()
        messages: list[dict[str, Any]] = []
        problems: list[Problem] = []
        system = None
        model = None
        for index, (mhash, role) in enumerate(chain):
            where = f"{path}: thread {tid}: message {mhash}"
            parts = db.execute(
                "SELECT type, tool_name, text, payload FROM parts"
                " WHERE message_hash=? ORDER BY position",
                (mhash,),
            ).fetchall()
            texts = [str(t) for kind, _n, t, _p in parts if kind == "text" and t is not None]
            turn = db.execute(
                "SELECT model, input_tokens, output_tokens, datetime_utc FROM turns"
                " WHERE thread_id=? AND tip_message_hash=?",
                (tid, mhash),
            ).fetchone()
            if role == "system" and index == 0:
                system = "".join(texts)
                continue
            if role not in ("system", "user", "assistant", "tool"):
                problems.append(Problem(where, f"role {role!r} cannot be mapped"))
                continue
            out: dict[str, Any] = {
                "id": stable_id("llm", tid, mhash), "role": role, "content": "".join(texts),
                "metadata": {"source_id": mhash},
            }  # fmt: skip
            for kind, _n, _t, _p in parts:
                if kind != "text":
                    problems.append(Problem(where, f"part {kind!r} kept as text only"))
            if turn is not None:
                model = turn[0] or model
                if turn[0]:
                    out["model"] = str(turn[0])
                out["usage"] = {"prompt_tokens": turn[1], "completion_tokens": turn[2]}
                stamp = _time(turn[3])
                if stamp:
                    out["created_at"] = stamp
                    if messages and messages[-1]["role"] == "user":
                        messages[-1].setdefault("created_at", stamp)
            messages.append(out)
        meta: dict[str, Any] = {"title": tname} if tname else {}
        if forked:
            meta["forked_from"] = forked
        yield SourceSession(
            str(tid), tname, _time(tstamp), model, system, meta, messages, problems,
            f"{path}: thread {tid}",
        )  # fmt: skip


def _llm_session(
    path: Path, conv: str | None, titles: Mapping[str, str], rows: list[tuple[Any, ...]]
) -> SourceSession:
    key = str(conv or rows[0][0])
    messages: list[dict[str, Any]] = []
    system = None
    model = None
    for rid, rmodel, prompt, rsystem, response, _c, stamp, tin, tout in rows:
        when = _time(stamp)
        base = {"created_at": when} if when else {}
        if isinstance(rsystem, str) and rsystem:
            if system is None:
                system = rsystem
            elif rsystem != system:
                messages.append({**base, "id": stable_id("llm", rid, "system"),
                                 "role": "system", "content": rsystem})  # fmt: skip
        model = rmodel or model
        messages.append({**base, "id": stable_id("llm", rid, "prompt"), "role": "user",
                         "content": str(prompt or "")})  # fmt: skip
        out: dict[str, Any] = {**base, "id": stable_id("llm", rid, "response"),
                               "role": "assistant", "content": str(response or "")}  # fmt: skip
        if rmodel:
            out["model"] = str(rmodel)
        if tin is not None or tout is not None:
            out["usage"] = {"prompt_tokens": tin, "completion_tokens": tout}
        out["metadata"] = {"source_id": str(rid)}
        messages.append(out)
    title = titles.get(key)
    meta = {"title": title} if title else {}
    return SourceSession(
        key, title, _time(rows[0][6]), model, system, meta, messages, [], f"{path}: {key}"
    )


# -- shell_gpt ----------------------------------------------------------------------------------


def read_sgpt(root: Path) -> Iterator[SourceSession]:
    """shell_gpt's chat cache: one file per chat id, a JSON list of OpenAI messages."""
    for path in _files(root, "*"):
        if path.name.startswith("."):
            continue
        doc = _document(path)
        msgs, problems, _ = _openai_messages("sgpt", path.name, doc, str(path))
        system = None
        if msgs and msgs[0]["role"] == "system":
            system = msgs.pop(0)["content"]
        stamp = _time(os.stat(path).st_mtime)
        yield SourceSession(
            path.name, path.name, stamp, None, system, {}, msgs, problems, str(path)
        )


# -- gptme ----------------------------------------------------------------------------------------


def read_gptme(root: Path) -> Iterator[SourceSession]:
    """gptme's logs dir: <conversation>/conversation.jsonl, one {role, content, timestamp}."""
    for path in _files(root, "conversation.jsonl"):
        key = path.parent.name if path.parent != root or root.is_dir() else path.stem
        messages, problems = [], []
        for number, rec in _lines(path):
            where = f"{path}: line {number}"
            role = rec.get("role") if isinstance(rec, Mapping) else None
            text = rec.get("content") if isinstance(rec, Mapping) else None
            if role not in ("system", "user", "assistant", "tool") or not isinstance(text, str):
                problems.append(Problem(where, f"role {role!r} or content cannot be mapped"))
                continue
            out = {"id": stable_id("gptme", key, number), "role": role, "content": text}
            stamp = _time(rec.get("timestamp"))
            if stamp:
                out["created_at"] = stamp
            messages.append(out)
        created = messages[0].get("created_at") if messages else None
        yield SourceSession(key, key, created, None, None, {}, messages, problems, str(path))


def read_source(kind: str, path: str, *, branches: bool = False) -> Iterator[SourceSession]:
    """Yield the conversations of ``path`` read as ``kind`` (one of :data:`SOURCES`)."""
    if kind not in SOURCES:
        raise UsageError(f"unknown source {kind!r}: use {', '.join(SOURCES)} or sessionctl")
    root = _safe_path(Path(path).expanduser())
    try:
        if kind == "chatgpt":
            yield from read_chatgpt(root, branches=branches)
        elif kind == "llm":
            yield from read_llm(root)
        else:
            readers = {
                "openai": read_openai,
                "sharegpt": read_sharegpt,
                "claude-code": read_claude_code,
                "sgpt": read_sgpt,
                "gptme": read_gptme,
            }
            if kind in ("openai", "sharegpt") and root.is_dir():
                raise UsageError(f"{root} is a directory; give the {kind} JSON or JSONL file")
            yield from readers[kind](root)
    except PermissionError as exc:
        raise UsageError(f"{exc.filename}: permission denied; nothing imported") from None
    except IsADirectoryError as exc:
        raise UsageError(f"{exc.filename} is a directory; nothing imported") from None
