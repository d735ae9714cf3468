"""The config command group: path, show, get, set, unset."""

import enum
import os
from pathlib import Path
from typing import Annotated, Any, cast

import typer
import typer.core
import typer.main

from sessionctl.cli.completers import complete_config_key
from sessionctl.cli.registry import build_command, commands
from sessionctl.cli.state import State

config_app = typer.Typer()


class ConfigGroup(typer.core.TyperGroup):
    """The ``config`` group; ``registry.LazyGroup`` builds it like any command (via ``cls``)."""

    def __init__(self, **attrs: Any) -> None:
        attrs.pop("params", None)  # the group callback takes only the context
        super().__init__(**attrs)
        for info in config_app.registered_commands:
            self.add_command(build_command(info))


# typer types `cls` as a TyperCommand; a group is what click needs here.
@commands.command(name="config", cls=cast(Any, ConfigGroup), no_args_is_help=True)
def config(ctx: typer.Context) -> None:
    """Show where settings come from, and edit config.toml.

    Precedence: flag > environment variable > config.toml > built-in default.

    Example:

        sessionctl config set model openai/gpt-4o-mini && sessionctl config show
    """


class PathKind(str, enum.Enum):
    """What ``config path`` prints."""

    config = "config"
    home = "home"
    share = "share"


def complete_config_value(ctx: typer.Context, incomplete: str) -> list[str]:
    """Complete the values of settings that have a fixed set of them (color)."""
    from sessionctl.config import COLOR_CHOICES

    if ctx.params.get("key") == "color":
        return [c for c in COLOR_CHOICES if c.startswith(incomplete)]
    return []


KeyArg = Annotated[
    str,
    typer.Argument(
        metavar="KEY", help="A setting (see `config show`).", autocompletion=complete_config_key
    ),
]


@config_app.command("path")
def path_(
    ctx: typer.Context,
    what: Annotated[
        PathKind,
        typer.Argument(help="config: config.toml; home: the data dir; share: completions, man."),
    ] = PathKind.config,
) -> None:
    """Print where sessionctl reads settings, keeps data, or installed its shell files.

    config.toml need not exist; `config set` creates it.

    Example:

        man "$(sessionctl config path share)/man/man1/sessionctl.1"
    """
    state: State = ctx.obj
    if what is PathKind.config:
        from sessionctl.config_file import config_path

        state.out.line(str(config_path()))
    elif what is PathKind.home:
        state.out.line(str(state.settings().home))
    else:
        state.out.line(str(Path(__file__).resolve().parent.parent / "share"))


@config_app.command("show")
def show(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print every setting's effective value and where it came from (flag, env, file, default).

    Example:

        sessionctl config show --json | jq -r '.settings.model.value'
    """
    from sessionctl.config_file import config_path, effective_settings

    state: State = ctx.obj
    root = ctx.find_root()
    from_flag = root.get_parameter_source("home") == _click().core.ParameterSource.COMMANDLINE
    _, rows = effective_settings(home_flag=state.home if from_flag else None)
    path = config_path()
    if json_:
        state.out.json(
            {
                "config_path": str(path),
                "config_exists": path.is_file(),
                "settings": {
                    r.key: {
                        "value": str(r.value) if isinstance(r.value, Path) else r.value,
                        "source": r.source,
                        "env_var": r.env_var,
                    }
                    for r in rows
                },
            }
        )
        return
    table = [[r.key, _shown(r.value), r.source, r.env_var or "-"] for r in rows]
    state.out.table(["setting", "value", "source", "env var"], table)
    state.out.info(f"config file: {path}" + ("" if path.is_file() else " (not created yet)"))


@config_app.command("get")
def get(
    ctx: typer.Context,
    key: Annotated[
        str,
        typer.Argument(
            metavar="KEY",
            help="A setting: home or one of `config show`'s.",
            autocompletion=complete_config_key,
        ),
    ],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print one setting's effective value on stdout and where it came from on stderr.

    The source is flag, env, file or default; an unset setting prints nothing.

    Example:

        sessionctl config get model
    """
    from sessionctl.config_file import effective_settings
    from sessionctl.errors import UsageError

    state: State = ctx.obj
    root = ctx.find_root()
    from_flag = root.get_parameter_source("home") == _click().core.ParameterSource.COMMANDLINE
    _, rows = effective_settings(home_flag=state.home if from_flag else None)
    found = {r.key: r for r in rows}
    row = found.get(key)
    if row is None:
        raise UsageError(f"unknown setting {key!r}: known settings are {', '.join(found)}")
    value = str(row.value) if isinstance(row.value, Path) else row.value
    if json_:
        state.out.json(
            {"key": row.key, "value": value, "source": row.source, "env_var": row.env_var}
        )
        return
    if value is not None:
        state.out.line(str(value))
    where = {"env": f"env ({row.env_var})", "file": "file (config.toml)"}.get(
        row.source, row.source
    )
    state.out.info(f"{key}: {'not set, ' if value is None else ''}from {where}")


@config_app.command("set")
def set_(
    ctx: typer.Context,
    key: KeyArg,
    value: Annotated[
        str,
        typer.Argument(
            help="The new value (checked before writing).", autocompletion=complete_config_value
        ),
    ],
) -> None:
    """Write one setting to config.toml (created 0600 if missing; comments are kept).

    Example:

        sessionctl config set api_base http://127.0.0.1:8080/v1
    """
    from sessionctl.config import ENV_VARS
    from sessionctl.config_file import config_path, set_setting, toml_value

    state: State = ctx.obj
    path = config_path()
    stored = set_setting(path, key, value)
    state.out.info(f"{key} = {toml_value(stored)} in {path}")
    var = ENV_VARS.get(key)
    if var and os.environ.get(var):
        state.out.warn(f"{var} is set in the environment and takes precedence over the file")


@config_app.command("unset")
def unset(ctx: typer.Context, key: KeyArg) -> None:
    """Remove one setting from config.toml (back to the built-in default).

    Example:

        sessionctl config unset system
    """
    from sessionctl.config_file import config_path, unset_setting

    state: State = ctx.obj
    path = config_path()
    if unset_setting(path, key):
        state.out.info(f"removed {key} from {path}")
    else:
        state.out.info(f"{key} was not set in {path}")


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    return " ".join(str(value).split()) or repr(value)


def _click() -> Any:
    # typer's own click (never imported directly: typer 0.26+ vendors its copy)
    return typer.main.click  # type: ignore[attr-defined]
