"""Generate the completion scripts and the man page from the app.

Usage (from the repository root)::

    python -m sessionctl._build.gen_docs            # write them
    python -m sessionctl._build.gen_docs --check    # exit 1 when the committed ones drifted

Writes ``completions/`` and ``man/sessionctl.1`` (what the repository shows),
and the same files under ``sessionctl/share/`` (what the wheel installs as
package data; ``sessionctl config path share`` prints where), plus
``sessionctl/share/help/top.txt``: the top-level ``--help`` pre-rendered for
every terminal width (:mod:`sessionctl._build.helptext`, served by
:mod:`sessionctl.cli.fasthelp`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

SHARE = Path("sessionctl") / "share"
# file name -> which shell's script
COMPLETION_FILES = {"sessionctl.bash": "bash", "_sessionctl": "zsh", "sessionctl.fish": "fish"}


def generate() -> dict[Path, str]:
    """Return every generated file's content by its path relative to the repository root."""
    from sessionctl._build.docmodel import command_tree
    from sessionctl._build.gen_completions import render_bash, render_fish, render_zsh
    from sessionctl._build.gen_man import render_man

    tree = command_tree()
    renderers = {"bash": render_bash, "zsh": render_zsh, "fish": render_fish}
    files: dict[Path, str] = {}
    for name, shell in COMPLETION_FILES.items():
        text = renderers[shell](tree)
        files[Path("completions") / name] = text
        files[SHARE / "completions" / name] = text
    man = render_man(tree)
    files[Path("man") / "sessionctl.1"] = man
    files[SHARE / "man" / "man1" / "sessionctl.1"] = man
    from sessionctl._build.helptext import build
    from sessionctl.cli.fasthelp import HELP_FILE

    # `sessionctl --help` as typer/rich print it, for every width (see fasthelp.py)
    files[SHARE / "help" / HELP_FILE.name] = build()
    return files


def write(out: Path, files: dict[Path, str]) -> list[Path]:
    """Write ``files`` under ``out``; return the paths whose content changed."""
    changed = []
    for rel, text in files.items():
        path = out / rel
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        changed.append(rel)
    return changed


def drifted(out: Path, files: dict[Path, str]) -> list[Path]:
    """Return the paths under ``out`` that are missing or differ from ``files``."""
    found = []
    for rel, text in files.items():
        path = out / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            found.append(rel)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m sessionctl._build.gen_docs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("."), help="repository root (default: .)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any file differs"
    )
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        stale = drifted(args.out, files)
        for rel in stale:
            sys.stderr.write(f"out of date: {rel}\n")
        if stale:
            sys.stderr.write("run: python -m sessionctl._build.gen_docs\n")
        return 1 if stale else 0
    for rel in write(args.out, files):
        sys.stderr.write(f"wrote {rel}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
