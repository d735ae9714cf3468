"""Small edges found late: closed streams, NaN options, from_dict with a bare list."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO, Cli

from sessionctl import Store


def test_runs_with_stdout_and_stderr_closed(home: Path) -> None:
    code = "import sys; sys.argv = ['sessionctl', 'add', '-s', 'w', '--role', 'user', 'hi']; "
    code += "from sessionctl.cli.app import main; main()"
    proc = subprocess.run(
        f'{sys.executable} -c "{code}" >&- 2>&-', shell=True, cwd=REPO, timeout=60
    )
    assert proc.returncode == 0
    assert [m["content"] for m in Store(home).session("w").messages] == ["hi"]


def test_temperature_nan_is_a_usage_error(cli: Cli) -> None:
    result = cli(
        "chat", "-s", "w", "--temperature", "nan", "--api-base", "http://127.0.0.1:9/v1", "hi"
    )
    assert result.exit_code == 2 and "temperature" in result.stderr
    assert result.stderr.count("\n") == 1


def test_from_dict_takes_an_openai_messages_list(home: Path) -> None:
    store = Store(home)
    session = store.from_dict(
        [{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"}], name="oa"
    )
    assert [(m["role"], m["content"]) for m in session.messages] == [
        ("system", "be terse"),
        ("user", "hi"),
    ]
