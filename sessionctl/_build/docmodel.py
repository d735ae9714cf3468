"""The command tree as plain data, read from the Typer app, for the man page and completions.

Everything generated from the app (``completions/``, ``man/sessionctl.1``)
goes through :func:`command_tree`, so a new command, option or env var shows
up in all of them at once.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, NamedTuple

import typer
import typer.main
import typer.utils

from sessionctl.cli.registry import EXAMPLE_HEAD, is_checked_argument

PROG = "sessionctl"


class ParamDoc(NamedTuple):
    """One option or argument."""

    name: str
    opts: tuple[str, ...]  # "-s", "--session" (options); empty for arguments
    metavar: str  # what the value looks like: NAME, N, PATH, [ID] ...; "" for flags
    help: str
    envvar: str | None
    default: str | None  # shown default, if any
    required: bool
    repeatable: bool
    completion: str  # "dynamic" (ask sessionctl), "files", "dirs" or "none"
    is_argument: bool

    @property
    def takes_value(self) -> bool:
        """True for options followed by a value (and for every argument)."""
        return bool(self.metavar)


class CommandDoc(NamedTuple):
    """One command (or group) and what its help says."""

    path: tuple[str, ...]  # () for sessionctl itself, ("config", "set") for a subcommand
    summary: str
    description: list[str]  # paragraphs after the summary, before the example
    example_title: str
    example: list[str]  # the example's lines, dedented
    options: list[ParamDoc]
    arguments: list[ParamDoc]
    subcommands: list[CommandDoc]

    @property
    def name(self) -> str:
        """The full command as typed, like ``sessionctl config set``."""
        return " ".join((PROG, *self.path))

    def walk(self) -> list[CommandDoc]:
        """Return this command and every subcommand below it, depth first, in help order."""
        found = [self]
        for sub in self.subcommands:
            found.extend(sub.walk())
        return found


def command_tree() -> CommandDoc:
    """Return the whole CLI, read from the Typer app with every command module imported."""
    from sessionctl.cli import registry
    from sessionctl.cli.app import app

    registry.load_all()
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name=PROG, **group.context_settings)
    return _command(group, ctx, ())


def _command(cmd: Any, ctx: Any, path: tuple[str, ...]) -> CommandDoc:
    summary, description, example_title, example = split_help(cmd.help or "")
    arg_help = _argument_help(cmd)
    options: list[ParamDoc] = []
    arguments: list[ParamDoc] = []
    for param in cmd.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        doc = _param(param, arg_help)
        (arguments if doc.is_argument else options).append(doc)
    subcommands = []
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sub_ctx = sub.context_class(sub, info_name=name, parent=ctx, **sub.context_settings)
            subcommands.append(_command(sub, sub_ctx, (*path, name)))
    return CommandDoc(
        path, summary, description, example_title, example, options, arguments, subcommands
    )


def split_help(text: str) -> tuple[str, list[str], str, list[str]]:
    """Split a command docstring into summary, description paragraphs and its example.

    The summary is the first paragraph; the example is the indented block after
    a paragraph such as ``Example:`` (its title is kept, without the colon).
    """
    paragraphs = [p for p in re.split(r"\n\s*\n", inspect.cleandoc(text)) if p.strip()]
    if not paragraphs:
        return "", [], "", []
    summary = " ".join(paragraphs[0].split())
    description: list[str] = []
    title = ""
    example: list[str] = []
    for i, para in enumerate(paragraphs[1:], start=1):
        if EXAMPLE_HEAD.match(para.strip()):
            title = para.strip()[:-1]
            block = "\n\n".join(paragraphs[i + 1 :])
            example = inspect.cleandoc(block).splitlines() if block.strip() else []
            break
        description.append(" ".join(para.split()))
    return summary, description, title, example


def _argument_help(cmd: Any) -> dict[str, str]:
    # Typer keeps argument help on its ArgumentInfo; with click >= 8.2 the click
    # Argument loses it (click's __init__ overwrites it), so read it from the source.
    callback = getattr(cmd, "callback", None)
    if callback is None:
        return {}
    found = {}
    for name, meta in typer.utils.get_params_from_function(inspect.unwrap(callback)).items():
        help_text = getattr(meta.default, "help", None)
        if help_text:
            found[name] = " ".join(help_text.split())
    return found


def _param(param: Any, arg_help: dict[str, str]) -> ParamDoc:
    is_argument = param.param_type_name == "argument"
    is_flag = bool(getattr(param, "is_flag", False))
    opts = () if is_argument else tuple(sorted(param.opts, key=len))
    help_text = (
        arg_help.get(param.name, "") if is_argument else " ".join((param.help or "").split())
    )
    envvar = param.envvar if isinstance(param.envvar, str) else None
    default = None
    show = getattr(param, "show_default", False)
    if (
        not is_argument
        and not is_flag
        and show
        and param.default is not None
        and not callable(param.default)
        and not param.multiple
    ):
        default = str(param.default.value if hasattr(param.default, "value") else param.default)
    return ParamDoc(
        name=param.name,
        opts=opts,
        metavar="" if is_flag else _metavar(param, is_argument),
        help=help_text,
        envvar=envvar,
        default=default,
        required=bool(param.required) or is_checked_argument(param),
        repeatable=bool(param.multiple) or (is_argument and param.nargs == -1),
        completion=_completion(param),
        is_argument=is_argument,
    )


def _metavar(param: Any, is_argument: bool) -> str:
    if param.metavar:
        return str(param.metavar).rstrip(".").strip("[]")
    kind = type(param.type).__name__
    if kind.endswith("Choice"):
        return "{" + "|".join(str(c) for c in param.type.choices) + "}"
    if kind.endswith("Path"):
        only_dirs = param.type.dir_okay and not param.type.file_okay
        return "DIR" if only_dirs else "PATH"
    if kind in ("IntParamType", "IntRange"):
        return "N"
    if kind in ("FloatParamType", "FloatRange"):
        return "NUMBER"
    return str(param.name).strip("_").upper()


def _completion(param: Any) -> str:
    if getattr(param, "_custom_shell_complete", None) is not None:
        return "dynamic"
    kind = type(param.type).__name__
    if kind.endswith("Choice"):
        return "dynamic"
    if kind.endswith("Path"):
        return "dirs" if param.type.dir_okay and not param.type.file_okay else "files"
    if param.metavar and "FILE" in str(param.metavar):
        return "files"
    return "none"
