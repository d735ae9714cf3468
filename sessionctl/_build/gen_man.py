"""man/sessionctl.1: a roff man(7) page generated from the command tree.

Commands, options, arguments, env vars of options and examples come from the
app (:mod:`sessionctl._build.docmodel`); exit codes from :class:`ExitCode`; the
settings' variables from :data:`sessionctl.config.ENV_VARS`. A code or variable
without a description here stops generation, so the page cannot fall behind.
"""

from __future__ import annotations

import re
import textwrap

from sessionctl import __version__
from sessionctl._build.docmodel import PROG, CommandDoc, ParamDoc
from sessionctl.config import CONFIG_ENV, DEBUG_ENV, ENV_VARS
from sessionctl.errors import ExitCode

# The release date of __version__ (bump both together; see CHANGELOG.md).
RELEASE_DATE = "2026-11-21"

EXIT_STATUS: dict[ExitCode, str] = {
    ExitCode.OK: "Success.",
    ExitCode.RUNTIME: "Runtime error: I/O, data that could not be handled, a name already taken.",
    ExitCode.USAGE: (
        "Usage error: bad option, invalid name, bad number or duration, bad setting,"
        " an import file that is not valid."
    ),
    ExitCode.NOT_FOUND: "Not found: no such session or message.",
    ExitCode.PROVIDER: "Model provider error: authentication, network, rate limit, timeout.",
    ExitCode.INTERRUPTED: "Interrupted (Ctrl-C); what was already saved is kept. Not an "
    "error: the one line on stderr is sessionctl: interrupted, and what was kept.",
}

ENVIRONMENT: dict[str, str] = {
    ENV_VARS["home"]: "Data directory (as --home). A relative path is made absolute against "
    "the directory sessionctl starts in.",
    ENV_VARS["model"]: "Default model, a litellm model name such as gpt-4o-mini, "
    "openai/NAME (any OpenAI-compatible server) or anthropic/claude-3-5-haiku-latest.",
    ENV_VARS["api_base"]: "Base URL of an OpenAI-compatible server, such as "
    "http://127.0.0.1:8080/v1 (llama.cpp, vLLM, Ollama, LM Studio).",
    ENV_VARS["embedding_model"]: "Embedding model for the semantic index "
    "(default all-MiniLM-L6-v2, built in and offline).",
    ENV_VARS["system"]: "Default system prompt for new sessions.",
    ENV_VARS["store"]: "Keep sessions in this PostgreSQL database (as --store), a "
    "postgresql:// URL; unset: the files under the home. Its password is never printed.",
    ENV_VARS["namespace"]: "The PostgreSQL store's namespace (as --namespace; default: "
    "the OS user name).",
    ENV_VARS["pg_hnsw"]: "1: the PostgreSQL store searches vectors through an approximate "
    "HNSW index, built by the next search; 0: drops it; unset: exact search (see "
    "docs/postgres.md).",
    ENV_VARS["context_recent"]: "At most this many recent messages are sent with each prompt.",
    ENV_VARS["context_relevant"]: "At most this many relevant older messages are sent.",
    ENV_VARS["context_window"]: "The model's context window in tokens (default: what an "
    "api_base server reports, else litellm's model map, else 8192); a prompt that alone "
    "exceeds it is refused unless --force.",
    ENV_VARS["timeout"]: "Seconds to wait for the model provider.",
    ENV_VARS["via"]: "auto (the direct HTTP path when it serves the model, else litellm), "
    "litellm or direct: force the provider route.",
    ENV_VARS["color"]: "auto (colour on a terminal, unless NO_COLOR is set), always (colour "
    "and terminal rendering even on a pipe, for less -R; beats NO_COLOR) or never.",
    ENV_VARS["redact"]: "0 (or false) writes secrets as they are; default 1: keys, tokens, "
    "private keys and password assignments become [REDACTED:kind] before they are written "
    "(see docs/security.md). --no-redact does the same for one command.",
    CONFIG_ENV: "Path of the configuration file (instead of the platform's); a relative "
    "path is made absolute against the directory sessionctl starts in.",
    "SESSIONCTL_SESSION": "The session when none is named, for the commands that read a "
    "session or add to it ({commands}). Commands that remove or move something (clear, "
    "delete, drop, rename, restore, reindex) never read it: a variable exported for one job "
    "must not choose what they remove.",
    "NO_COLOR": "When set to any value, no colour (unless color is always).",
    DEBUG_ENV: "Set to 1 to print a traceback with errors.",
    "OPENAI_API_KEY, ANTHROPIC_API_KEY, ...": "API keys are read from the provider's own "
    "variables (as litellm documents them); sessionctl never writes a key to disk.",
}

DESCRIPTION = [
    "sessionctl is a command-line chat tool for large language models that keeps every "
    "conversation as a local session: a JSON-lines transcript you can read with jq, plus a "
    "semantic index of its messages. It is also a Python library (sessionctl.Store).",
    "Interactively, chat is a line editor with persistent history, multi-line input, "
    "slash commands and answers streamed as Markdown. In a pipe it prints one answer, "
    "plain text on stdout and nothing else, with a meaningful exit status.",
    "Every command prints data on stdout and notes and errors on stderr (an error is one "
    "line: sessionctl: error: ...); --json is offered wherever a command prints data.",
    "On a terminal, text from sessions and models has its control characters shown, not "
    "obeyed: every C0 control except tab and newline, DEL and every C1 control "
    "(U+0080-U+009F) is printed as \\xNN, so ESC is \\x1b and an escape sequence cannot set "
    "the window title, clear the screen or hide a link target. Piped output, --json and "
    "--raw are the exact text. A stdout whose encoding is not UTF-8 gets backslash "
    "escapes (\\xe9) for what it cannot hold, and --json there escapes every non-ASCII "
    "character (\\u00e9), so the JSON value stays exact.",
    "Settings come from, in order of precedence: command-line flags, environment "
    "variables, the configuration file, built-in defaults (see sessionctl config show).",
]

FILES: list[tuple[str, str]] = [
    (
        "~/.local/share/sessionctl/",
        "The data directory (the platform's user data directory; "
        "--home or SESSIONCTL_HOME chooses another). Directories are 0700, files 0600.",
    ),
    (
        "sessions/NAME.jsonl",
        "A session's transcript: JSON lines, a header and one record per "
        "message. The source of truth.",
    ),
    (
        "index/",
        "The store-wide semantic index (searches across sessions): a journal, "
        "append-only vector and row files; derived, rebuilt when missing or corrupt.",
    ),
    (
        "sessions/NAME.faiss, sessions/NAME.index.json",
        "A session's own semantic index and its manifest; "
        "derived, rebuilt when missing or stale (sessionctl reindex).",
    ),
    ("sessions/NAME.lock", "The session's write lock."),
    (
        "sessions/NAME.rejects",
        "Lines set aside because they could not be parsed, each with its line number "
        "and the reason; created the first time one is. Until then such a line is "
        "skipped and reported on stderr by line number; the next write sets it "
        "aside when it ends the transcript, the next rewrite (drop ID, clear, meta) "
        "when it is in the middle.",
    ),
    ("trash/ULID/", "Soft-deleted sessions (sessionctl restore brings them back)."),
    ("history", "The interactive chat's input history."),
    (
        "~/.config/sessionctl/config.toml",
        "Settings (the platform's user config directory, "
        "or SESSIONCTL_CONFIG): model, api_base, system, embedding_model, context_recent, "
        "context_relevant, context_window, timeout, via, color. Edit it with sessionctl "
        "config set.",
    ),
]

CONFIG_EXAMPLE = [
    'model = "openai/qwen2.5-7b-instruct"',
    'api_base = "http://127.0.0.1:8080/v1"',
    'system = "Answer briefly."',
    "context_recent = 20",
]

EXAMPLES: list[tuple[str, list[str]]] = [
    (
        "Chat interactively in the session work (/help lists the slash commands):",
        ["sessionctl chat -s work"],
    ),
    (
        "Ask once from a script; the answer alone goes to stdout:",
        ['git diff | sessionctl chat -s review "review this diff"'],
    ),
    (
        "The same as JSON, with the message ids and token usage:",
        ['sessionctl chat -s review --json "and the tests?" | jq -r .content'],
    ),
    (
        "Use a local OpenAI-compatible server:",
        [
            "export SESSIONCTL_API_BASE=http://127.0.0.1:8080/v1",
            'sessionctl chat -m openai/local "hello"',
        ],
    ),
    (
        "Find what was said about a topic in any session:",
        ['sessionctl relevant "deploy schedule" -k 3 --distance-threshold 0.6'],
    ),
    (
        "Try another direction without touching the original:",
        ["sessionctl fork work work-alt && sessionctl chat -s work-alt"],
    ),
    (
        "Clean up from cron every night (crontab -e; cron's PATH is short, so give "
        "the full path that command -v sessionctl prints):",
        ["0 3 * * * $HOME/.local/bin/sessionctl prune --older-than 30d --purge"],
    ),
]


def render_man(tree: CommandDoc) -> str:
    """Return the man page for the command tree ``tree`` (the root command)."""
    missing_codes = [c.name for c in ExitCode if c not in EXIT_STATUS]
    missing_vars = [v for v in ENV_VARS.values() if v not in ENVIRONMENT]
    if missing_codes or missing_vars:
        raise RuntimeError(
            f"gen_man: describe {missing_codes + missing_vars} (EXIT_STATUS, ENVIRONMENT)"
        )
    out: list[str] = [
        '.\\" Generated by `python -m sessionctl._build.gen_docs` from the app; do not edit.',
        f'.TH {PROG.upper()} 1 {RELEASE_DATE} "{PROG} {__version__}" "User Commands"',
        ".nh",  # no hyphenation: option and variable names must stay whole
        ".ad l",
        ".SH NAME",
        *_wrap(f"{PROG} \\- {_text(tree.summary[0].lower() + tree.summary[1:].rstrip('.'))}"),
        ".SH SYNOPSIS",
    ]
    first = True
    for cmd in tree.walk():
        if cmd.subcommands and cmd.path:
            continue  # a group: its subcommands have the lines
        if not first:
            out.append(".br")
        out.extend(_wrap(_synopsis(cmd)))
        first = False
    out.append(".SH DESCRIPTION")
    for i, para in enumerate(DESCRIPTION):
        if i:
            out.append(".PP")
        out.extend(_para(para))
    out.append(".SH OPTIONS")
    out.extend(_para("These come before the command, as in sessionctl --home DIR list."))
    out.extend(_params(tree.options, with_help=True))
    out.append(".SH COMMANDS")
    for cmd in tree.walk()[1:]:
        out.extend(_command(cmd))
    out.append('.SH "EXIT STATUS"')
    for code, text in EXIT_STATUS.items():
        out.extend([".TP", f".B {int(code)}", *_para(text)])
    out.append(".SH ENVIRONMENT")
    for var, text in ENVIRONMENT.items():
        if "{commands}" in text:
            text = text.format(commands=", ".join(_commands_reading(tree, var)))
        out.extend([".TP", f".B {_text(var)}", *_para(text)])
    out.append(".SH FILES")
    for path, text in FILES:
        out.extend([".TP", f".I {_text(path)}", *_para(text)])
    out.extend([".PP", "A config.toml:", *_example(CONFIG_EXAMPLE)])
    out.append(".SH EXAMPLES")
    for i, (text, lines) in enumerate(EXAMPLES):
        if i:
            out.append(".PP")
        out.extend(_para(text))
        out.extend(_example(lines))
    out.extend([".SH SEE ALSO", ".BR jq (1),", ".BR crontab (5)"])
    return "\n".join(out) + "\n"


def _commands_reading(tree: CommandDoc, var: str) -> list[str]:
    return [" ".join(c.path) for c in tree.walk() if any(p.envvar == var for p in c.options)]


def _synopsis(cmd: CommandDoc) -> str:
    parts = [f"\\fB{_text(cmd.name)}\\fR"]
    for p in cmd.options:
        if p.required:
            parts.append(f"\\fB{_text(p.opts[0])}\\fR \\fI{_text(p.metavar)}\\fR")
    if any(not p.required for p in cmd.options if p.opts != ("-h", "--help")):
        parts.append("[\\fIoptions\\fR]")
    if cmd.subcommands:
        parts.append("\\fIcommand\\fR [\\fIargs\\fR]")
    for p in cmd.arguments:
        parts.append(_arg_usage(p))
    return " ".join(parts)


def _arg_usage(p: ParamDoc) -> str:
    text = f"\\fI{_text(p.metavar)}\\fR" + ("\\&..." if p.repeatable else "")
    return text if p.required else f"[{text}]"


def _command(cmd: CommandDoc) -> list[str]:
    head = " ".join([cmd.name, *(_plain_arg(p) for p in cmd.arguments)])
    out = [f'.SS "{_text(head)}"', *_para(cmd.summary)]
    for para in cmd.description:
        out.extend([".PP", *_para(para)])
    out.extend(_params([*cmd.arguments, *cmd.options]))
    if cmd.subcommands:
        names = ", ".join(sub.path[-1] for sub in cmd.subcommands)
        out.extend([".PP", *_para(f"Subcommands: {names} (below).")])
    if cmd.example:
        out.extend([".PP", *_para(cmd.example_title + ":"), *_example(cmd.example)])
    return out


def _plain_arg(p: ParamDoc) -> str:
    text = p.metavar + ("..." if p.repeatable else "")
    return text if p.required else f"[{text}]"


def _params(params: list[ParamDoc], *, with_help: bool = False) -> list[str]:
    out = []
    for p in params:
        if p.opts == ("-h", "--help") and not with_help:
            continue  # every command has -h; OPTIONS says so once
        if p.is_argument:
            label = f"\\fI{_text(p.metavar)}\\fR"
        else:
            label = ", ".join(f"\\fB{_text(o)}\\fR" for o in p.opts)
            if p.metavar:
                label += f" \\fI{_text(p.metavar)}\\fR"
        notes = []
        if p.repeatable and not p.is_argument and "repeatable" not in p.help:
            notes.append("repeatable")
        if p.default is not None:
            notes.append(f"default: {p.default}")
        if p.envvar:
            notes.append(f"env: {p.envvar}")
        text = p.help or ""
        if notes:
            text = f"{text} [{'; '.join(notes)}]".strip()
        out.extend([".TP", label, *_para(text)])
    return out


def _example(lines: list[str]) -> list[str]:
    return [".PP", ".RS 4", ".nf", *(_text(line, code=True) for line in lines), ".fi", ".RE"]


def _para(text: str) -> list[str]:
    """Return ``text`` as roff text lines: one sentence a line, none over 80 bytes."""
    lines: list[str] = []
    for sentence in re.split(r"(?<=[.;:?!])\s+(?=[A-Z(])", " ".join(text.split())):
        lines.extend(_wrap(_text(sentence)))
    return lines


def _wrap(line: str) -> list[str]:
    wrapped = textwrap.wrap(line, width=79, break_long_words=False, break_on_hyphens=False)
    return [("\\&" + w if w.startswith((".", "'")) else w) for w in wrapped] or [""]


def _text(text: str, *, code: bool = False) -> str:
    """Escape ``text`` for a roff text line (or a macro argument without quotes)."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\e")
        elif ch == "-":
            out.append("\\-")
        elif ch == "'" and code:
            out.append("\\(aq")
        elif ch == "~":
            out.append("\\(ti" if code else "~")
        elif ord(ch) > 126:
            out.append(f"\\[u{ord(ch):04X}]")
        else:
            out.append(ch)
    escaped = "".join(out)
    if escaped.startswith((".", "'")):
        escaped = "\\&" + escaped
    return escaped
