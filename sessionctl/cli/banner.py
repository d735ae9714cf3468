"""The REPL's first lines: the session, and what is missing before a first message can work."""

from __future__ import annotations

LOCAL_SERVER_EXAMPLE = "http://127.0.0.1:8080/v1"


def banner_lines(session: str, model: str, api_base: str | None) -> list[tuple[str, str]]:
    """Return ``(text, style)`` lines for the REPL's start.

    When ``model`` needs an API key, none is in the environment and no API base is
    set, a second line says so and how to use a local server instead.
    """
    from sessionctl.llm.models import missing_api_key

    lines = [(f"session {session} · /help for commands · Ctrl-D to exit", "dim")]
    var = missing_api_key(model, api_base)
    if var is not None:
        lines.append(
            (
                f"no API key for {model}: set {var} before starting, or use a local "
                f"OpenAI-compatible server with --api-base {LOCAL_SERVER_EXAMPLE} -m MODEL",
                "yellow",
            )
        )
    return lines
