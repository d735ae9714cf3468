"""completions/ and man/sessionctl.1 are generated from the app and must not drift."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from sessionctl._build import gen_docs
from sessionctl._build.docmodel import command_tree
from sessionctl.config import ENV_VARS
from sessionctl.errors import ExitCode

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

MAN = REPO / "man" / "sessionctl.1"


def test_committed_files_are_what_the_app_generates(tmp_path: Path) -> None:
    files = gen_docs.generate()
    assert gen_docs.write(tmp_path, files) == list(files)  # into an empty dir: all new
    stale = [
        str(rel) for rel in files if (REPO / rel).read_bytes() != (tmp_path / rel).read_bytes()
    ]
    assert not stale, f"out of date: {stale}; run `python -m sessionctl._build.gen_docs`"


def test_check_mode_exits_1_on_drift_and_writes_nothing(tmp_path: Path) -> None:
    gen_docs.main(["--out", str(tmp_path)])
    assert gen_docs.main(["--out", str(tmp_path), "--check"]) == 0
    bash = tmp_path / "completions" / "sessionctl.bash"
    bash.write_text(bash.read_text() + "# edited by hand\n")
    assert gen_docs.main(["--out", str(tmp_path), "--check"]) == 1
    assert bash.read_text().endswith("# edited by hand\n")
    assert gen_docs.main(["--out", str(tmp_path)]) == 0
    assert gen_docs.main(["--out", str(tmp_path), "--check"]) == 0


def test_package_data_copies_are_installed_by_the_wheel() -> None:
    files = gen_docs.generate()
    shared = sorted(rel.name for rel in files if rel.parts[:2] == ("sessionctl", "share"))
    assert shared == [
        "_sessionctl",
        "sessionctl.1",
        "sessionctl.bash",
        "sessionctl.fish",
        "top.txt",
    ]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "share/**/*" in pyproject["tool"]["setuptools"]["package-data"]["sessionctl"]


def test_man_page_covers_every_command_option_code_and_variable() -> None:
    text = MAN.read_text()
    plain = text.replace("\\-", "-").replace("\\fB", "").replace("\\fI", "").replace("\\fR", "")
    tree = command_tree()
    for cmd in tree.walk()[1:]:
        assert f'.SS "{cmd.name}' in plain, cmd.name
        for param in cmd.options:
            for opt in param.opts:
                assert opt in plain, (cmd.name, opt)
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", '"EXIT STATUS"',
                    "ENVIRONMENT", "FILES", "EXAMPLES"):  # fmt: skip
        assert f"\n.SH {section}\n" in text, section
    status = plain.split('.SH "EXIT STATUS"')[1].split(".SH")[0]
    assert re.findall(r"^\.B (\d+)$", status, re.M) == [str(int(c)) for c in ExitCode]
    env = plain.split(".SH ENVIRONMENT")[1].split(".SH")[0]
    for var in [*ENV_VARS.values(), "SESSIONCTL_CONFIG", "SESSIONCTL_SESSION", "NO_COLOR",
                "SESSIONCTL_DEBUG"]:  # fmt: skip
        assert f".B {var}\n" in env, var
    examples = plain.split(".SH EXAMPLES")[1]
    assert "sessionctl chat -s work" in examples
    assert "| sessionctl chat" in examples
    # cron's PATH is short: every crontab line gives the full path, as README does
    assert "0 3 * * * $HOME/.local/bin/sessionctl prune --older-than 30d --purge" in examples
    assert "* * * sessionctl" not in plain
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "0 3 * * * $HOME/.local/bin/sessionctl prune --older-than 30d --purge" in readme


def test_man_page_renders_without_warnings_in_groff() -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed (.ci/run installs groff-base)")
    done = subprocess.run(
        [groff, "-ww", "-man", "-Tutf8", str(MAN)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stderr == ""
    assert "sessionctl config set KEY VALUE" in re.sub(".\x08", "", done.stdout)  # overstrike


def test_man_page_is_clean_for_mandoc_lint() -> None:
    mandoc = shutil.which("mandoc")
    if mandoc is None:
        pytest.skip("mandoc is not installed (.ci/run installs it)")
    done = subprocess.run(
        [mandoc, "-T", "lint", str(MAN)], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
