"""`config get KEY` and `models`: through the CLI, offline."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Cli

Sh = Callable[..., subprocess.CompletedProcess[str]]


# -- config get ------------------------------------------------------------------------


def test_config_get_prints_value_and_source(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    r = cli("config", "get", "model")
    assert (r.exit_code, r.stdout) == (0, "gpt-4o-mini\n")
    assert "from default" in r.stderr
    assert cli("config", "set", "model", "from-file").exit_code == 0
    r = cli("config", "get", "model")
    assert r.stdout == "from-file\n" and "from file (config.toml)" in r.stderr
    monkeypatch.setenv("SESSIONCTL_MODEL", "from-env")
    r = cli("config", "get", "model", "--json")
    assert json.loads(r.stdout) == {
        "key": "model",
        "value": "from-env",
        "source": "env",
        "env_var": "SESSIONCTL_MODEL",
    }


def test_config_get_home_from_flag_and_unset_value(cli: Cli, tmp_path: Path) -> None:
    r = cli("--home", str(tmp_path / "elsewhere"), "config", "get", "home")
    assert r.stdout == f"{tmp_path / 'elsewhere'}\n" and "from flag" in r.stderr
    r = cli("config", "get", "api_base")
    assert r.exit_code == 0 and r.stdout == "" and "not set" in r.stderr


def test_config_get_unknown_key_is_exit_2_with_the_keys(cli: Cli) -> None:
    r = cli("config", "get", "modle")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1
    assert "unknown setting 'modle'" in r.stderr
    assert "model, api_base" in r.stderr and "home" in r.stderr


# -- models ----------------------------------------------------------------------------


def test_models_lists_providers_and_the_default(cli: Cli) -> None:
    r = cli("models")
    assert r.exit_code == 0, r.stderr
    rows = dict(line.split() for line in r.stdout.splitlines()[1:])
    assert int(rows["openai"]) > 10 and "anthropic" in rows
    assert "default model: gpt-4o-mini (from default, " in r.stderr


def test_models_for_a_provider(cli: Cli) -> None:
    r = cli("models", "--provider", "anthropic")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["model", "mode", "context", "window"]
    assert any(line.startswith("claude-") for line in lines)
    r = cli("models", "-p", "antropic")
    assert r.exit_code == 2 and "did you mean anthropic?" in r.stderr


def test_models_json_and_configured_models(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("config", "set", "model", "claude-haiku-4-5").exit_code == 0
    monkeypatch.setenv("SESSIONCTL_MODEL", "openai/gpt-4o")
    data = json.loads(cli("models", "--json", "-p", "openai").stdout)
    assert data["default"] == {"model": "openai/gpt-4o", "source": "env"}
    assert data["configured"] == [
        {"model": "openai/gpt-4o", "source": "env", "in_use": True},
        {"model": "claude-haiku-4-5", "source": "file", "in_use": False},
        {"model": "gpt-4o-mini", "source": "default", "in_use": False},
    ]
    assert {m["provider"] for m in data["models"]} == {"openai"}
    gpt = next(m for m in data["models"] if m["model"] == "gpt-4o")
    assert gpt["mode"] == "chat" and gpt["context_window"] >= 100_000


def test_models_never_imports_litellm_or_reaches_the_network() -> None:
    """Offline: litellm's bundled table is read as a file; litellm itself never runs."""
    code = (
        "import sys, socket\n"
        "def no(*a, **k): raise SystemExit('network used')\n"
        "socket.socket.connect = no\n"
        "socket.create_connection = no\n"
        "from sessionctl.cli.app import run\n"
        "code = run(['models', '--json'])\n"
        "assert 'litellm' not in sys.modules, 'litellm imported'\n"
        "sys.exit(code)\n"
    )
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["models"]) > 1000
