"""Shell-completion callbacks that read the store: message ids and config keys.

They run on every TAB, so they import only the store layer (no litellm, faiss,
onnxruntime or numpy) and return nothing rather than fail: a completion
callback must never print an error into the user's command line.
"""

from __future__ import annotations

from typing import Any

# how much of a message a completion menu shows next to its id
_PREVIEW_CHARS = 50


def complete_message_id(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    """Return ``(id, "seq role: text")`` for the messages of the session already given.

    That is ``-s NAME`` or the SESSION argument (``drop work <TAB>``). Newest
    first, so the message a user usually wants to ``drop`` leads the menu.
    """
    name = ctx.params.get("session") or ctx.params.get("name")
    if not name:
        return []
    try:
        from sessionctl.config import load_settings
        from sessionctl.service import Store

        home = ctx.find_root().params.get("home")
        store = Store(settings=load_settings(home=home), warn=_quiet)
        messages = store.existing(name).get_messages()
    except Exception:  # a TAB must never print a traceback into the prompt
        return []
    return [
        (m.id, f"{m.seq} {m.role}: {' '.join(m.content.split())[:_PREVIEW_CHARS]}")
        for m in reversed(messages)
        if m.id.startswith(incomplete)
    ]


def complete_session_or_id(ctx: Any, incomplete: str) -> list[Any]:
    """Complete ``drop``'s first argument: a session, or after ``-s NAME`` a message id."""
    if ctx.params.get("session"):
        return complete_message_id(ctx, incomplete)
    from sessionctl.cli.options import complete_session

    return list(complete_session(ctx, incomplete))


def complete_deleted_session(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    """Return ``(name, "deleted WHEN")`` for the sessions in the trash (what ``restore`` takes).

    A name deleted more than once is offered once: ``restore`` brings back its newest deletion.
    """
    try:
        from sessionctl.config import load_settings
        from sessionctl.service import Store

        home = ctx.find_root().params.get("home")
        store = Store(settings=load_settings(home=home), warn=_quiet)
        deleted = store.list_sessions(deleted=True).sessions
    except Exception:  # a TAB must never print a traceback into the prompt
        return []
    offered: dict[str, str] = {}
    for info in deleted:  # newest deletion first
        if info.name.startswith(incomplete) and info.name not in offered:
            offered[info.name] = f"deleted {info.deleted_at}"
    return sorted(offered.items())


def complete_config_key(ctx: Any, incomplete: str) -> list[str]:
    """Return the config.toml keys that start with ``incomplete``."""
    from sessionctl.config import CONFIG_KEYS

    return [key for key in CONFIG_KEYS if key.startswith(incomplete)]


def _quiet(message: str) -> None:
    """Swallow store warnings: completion output is parsed by the shell."""
