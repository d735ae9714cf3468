"""Build tools, not commands: generate what the wheel ships under ``sessionctl/share/``.

Run from the repository root::

    python -m sessionctl._build.gen_docs            # write completions, man page, --help
    python -m sessionctl._build.gen_docs --check    # exit 1 when the committed ones drifted

Nothing in the program imports this package (a test checks it), and it is left
out of the wheel: only its output is installed.
"""
