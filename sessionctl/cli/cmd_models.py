"""The models command: the default and configured models, and litellm's model table."""

from typing import Annotated, Any

import typer

from sessionctl.cli.options import JsonOpt
from sessionctl.cli.registry import commands
from sessionctl.cli.state import State


@commands.command()
def models(
    ctx: typer.Context,
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider",
            "-p",
            help="List this provider's models (e.g. openai, anthropic, ollama).",
            show_default=False,
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """List the default and configured models, and the providers and models litellm knows.

    Without --provider, one line per provider with its number of models; with
    it, that provider's models with their context windows. The table is the
    one bundled with litellm, read offline (no network, litellm is not
    imported: about 30 ms). --json prints every model (or the provider's).
    Any litellm model name works with `chat -m`, listed here or not.

    Example:

        sessionctl models --provider anthropic
    """
    from sessionctl.config_file import effective_settings
    from sessionctl.errors import UsageError
    from sessionctl.llm.models import model_table

    state: State = ctx.obj
    settings, rows = effective_settings()
    sources = {r.key: r.source for r in rows}
    table = model_table()
    by_provider: dict[str, list[dict[str, Any]]] = {}
    for name, entry in table.items():
        owner = entry.get("litellm_provider")
        if not isinstance(owner, str) or not owner:
            continue
        window = entry.get("max_input_tokens") or entry.get("max_tokens")
        by_provider.setdefault(owner, []).append(
            {
                "model": name,
                "provider": owner,
                "mode": entry.get("mode") if isinstance(entry.get("mode"), str) else None,
                "context_window": window if isinstance(window, int) else None,
            }
        )
    if provider is not None:
        wanted = provider.strip().lower()
        if wanted not in by_provider:
            import difflib

            close = difflib.get_close_matches(wanted, list(by_provider), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise UsageError(
                f"unknown provider {provider!r}: {hint}`sessionctl models` lists the "
                f"{len(by_provider)} known ones"
            )
        chosen = {wanted: by_provider[wanted]}
    else:
        chosen = by_provider
    model_source = sources.get("model", "default")
    configured = _configured(settings.model, model_source)
    if json_:
        state.out.json(
            {
                "default": {"model": settings.model, "source": model_source},
                "configured": configured,
                "api_base": settings.api_base,
                "context_window": settings.context_window,
                "providers": {p: len(m) for p, m in sorted(by_provider.items())},
                "models": [m for p in sorted(chosen) for m in chosen[p]],
            }
        )
        return
    from sessionctl.llm.models import context_window

    window = settings.context_window or context_window(settings.model)
    state.out.info(
        f"default model: {settings.model} (from {model_source}"
        + (f", {window}-token window" if window else ", window unknown")
        + (f", at {settings.api_base})" if settings.api_base else ")")
    )
    for item in configured[1:]:
        where = {"env": "SESSIONCTL_MODEL", "file": "config.toml"}.get(item["source"], "built in")
        state.out.info(f"also configured: {item['model']} ({where}, overridden)")
    if not table:
        state.out.warn("litellm's model table was not found: is litellm installed?")
        return
    if provider is None:
        state.out.table(
            ["provider", "models"],
            [[p, str(len(m))] for p, m in sorted(by_provider.items())],
        )
        state.out.info("`sessionctl models --provider P` lists a provider's models")
        return
    state.out.table(
        ["model", "mode", "context window"],
        [
            [m["model"], m["mode"] or "-", str(m["context_window"] or "-")]
            for m in sorted(chosen[wanted], key=lambda m: m["model"])
        ],
    )


def _configured(effective: str, source: str) -> list[dict[str, Any]]:
    """The model in use first, then the others set in env, config.toml, built in."""
    import os

    from sessionctl.config import DEFAULT_MODEL, ENV_VARS, read_config_file
    from sessionctl.config_file import config_path

    found = [{"model": effective, "source": source, "in_use": True}]
    candidates = [
        ("env", os.environ.get(ENV_VARS["model"]) or None),
        ("file", read_config_file(config_path()).get("model")),
        ("default", DEFAULT_MODEL),
    ]
    for where, name in candidates:
        if name and where != source:
            found.append({"model": name, "source": where, "in_use": False})
    return found
