"""Where commands register, and the group that builds only the command invoked.

Typer turns every registered command into a click command on every call,
introspecting its signature: ~1 ms a command, which for a CLI run in loops is
most of its start-up. :class:`LazyGroup` builds a command's click object only
when that command is looked up (help and completion still see them all).

The command modules do without ``from __future__ import annotations``: typer
would ``eval`` each string annotation of the invoked command (compiling it
first) on every call, 1.2 ms of the 1.9 ms it takes to build ``list``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

# a help paragraph that starts a command's example ("Example:", "Example (crontab):")
EXAMPLE_HEAD = re.compile(r"^Examples?\b.*:$")

# Command modules decorate their functions with ``@commands.command()``.
commands = typer.Typer()

# Which module defines each command, in the order help lists them. Only the
# module of the command being run is imported.
COMMAND_MODULES: dict[str, str] = {
    "chat": "sessionctl.cli.cmd_chat",
    "recent": "sessionctl.cli.cmd_messages",
    "add": "sessionctl.cli.cmd_messages",
    "store": "sessionctl.cli.cmd_messages",
    "drop": "sessionctl.cli.cmd_messages",
    "relevant": "sessionctl.cli.cmd_memory",
    "reindex": "sessionctl.cli.cmd_memory",
    "list": "sessionctl.cli.cmd_sessions",
    "show": "sessionctl.cli.cmd_sessions",
    "export": "sessionctl.cli.cmd_sessions",
    "import": "sessionctl.cli.cmd_sessions",
    "fork": "sessionctl.cli.cmd_sessions",
    "rename": "sessionctl.cli.cmd_sessions",
    "meta": "sessionctl.cli.cmd_sessions",
    "clear": "sessionctl.cli.cmd_sessions",
    "delete": "sessionctl.cli.cmd_sessions",
    "restore": "sessionctl.cli.cmd_sessions",
    "prune": "sessionctl.cli.cmd_sessions",
    "config": "sessionctl.cli.cmd_config",
    "scrub": "sessionctl.cli.cmd_scrub",
    "stats": "sessionctl.cli.cmd_stats",
    "compact": "sessionctl.cli.cmd_compact",
    "models": "sessionctl.cli.cmd_models",
    "migrate": "sessionctl.cli.cmd_migrate",
    "mcp": "sessionctl.cli.cmd_mcp",
}


def load_all() -> None:
    """Import every command module (for help, docs and completion generation)."""
    for module in dict.fromkeys(COMMAND_MODULES.values()):
        importlib.import_module(module)


def command_name(info: Any) -> str:
    """Return the CLI name of a registered command."""
    return str(info.name or typer.main.get_command_name(info.callback.__name__))


class LazyGroup(TyperGroup):
    """A TyperGroup whose subcommands are converted on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMAND_MODULES)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(COMMAND_MODULES[cmd_name])
            for info in commands.registered_commands:
                if command_name(info) == cmd_name:
                    self.commands[cmd_name] = build_command(info)
                    break
        return self.commands.get(cmd_name)


def build_command(info: Any) -> Any:
    """Return the click command of a registered Typer command, as help should show it."""
    cmd = typer.main.get_command_from_info(
        info, pretty_exceptions_short=True, rich_markup_mode=typer.core.DEFAULT_MARKUP_MODE
    )
    cmd.help = keep_example_indent(cmd.help or "")
    params: list[Any] = cmd.params
    for param in params:
        if is_checked_argument(param):
            # Typer brackets every optional argument; this one is required, only
            # not by click (the command shifts arguments when -s is given).
            param.make_metavar = _shown_as(str(param.metavar))
    return cmd


def keep_example_indent(text: str) -> str:
    """Return a command's help so that its example keeps its indentation in ``--help``.

    Typer dedents everything after the first paragraph as one block, ignoring
    that block's first line: when the example's heading comes right after the
    summary, the example's own indentation is taken away, and such commands
    showed their example flush left while commands with a description
    showed it indented. An empty line before the heading makes the block
    start with a blank line, so the dedent keeps the example indented.
    """
    head, sep, rest = text.partition("\n\n")
    first = rest.lstrip("\n").split("\n", 1)[0].strip()
    if sep and EXAMPLE_HEAD.match(first):
        return f"{head}\n\n\n{rest.lstrip(chr(10))}"
    return text


def _shown_as(metavar: str) -> Callable[..., str]:
    def make_metavar(*_args: Any, **_kwargs: Any) -> str:
        return metavar

    return make_metavar


def is_checked_argument(param: Any) -> bool:
    """True for an argument click treats as optional that the command itself requires.

    Such an argument is declared with a metavar without brackets (``NEW``,
    ``PROMPT``): ``fork -s work NEW`` and ``fork work NEW`` give NEW in different
    places, so click cannot require it and the command checks it after
    sorting its arguments out.
    """
    metavar = getattr(param, "metavar", None)
    return (
        param.param_type_name == "argument"
        and not param.required
        and bool(metavar)
        and not str(metavar).startswith("[")
    )
