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
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

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
                    self.commands[cmd_name] = typer.main.get_command_from_info(
                        info,
                        pretty_exceptions_short=True,
                        rich_markup_mode=typer.core.DEFAULT_MARKUP_MODE,
                    )
                    break
        return self.commands.get(cmd_name)
