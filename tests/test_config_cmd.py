"""`sessionctl config` and the precedence flag > env > config file > default."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from conftest import Cli

from sessionctl.config import CONFIG_KEYS, DEFAULT_MODEL, load_settings
from sessionctl.config_file import set_setting, toml_value, unset_setting


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The config file the autouse fixture points SESSIONCTL_CONFIG at."""
    return tmp_path / "config.toml"


def show(cli: Cli, *root: str) -> dict[str, dict[str, object]]:
    result = cli(*root, "config", "show", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["settings"]  # type: ignore[no-any-return]


def test_path_prints_the_config_file_home_and_share(cli: Cli, config: Path, home: Path) -> None:
    assert cli("config", "path").stdout == f"{config}\n"
    assert cli("config", "path", "home").stdout == f"{home}\n"
    share = Path(cli("config", "path", "share").stdout.strip())
    assert (share / "man" / "man1" / "sessionctl.1").is_file()
    assert (share / "completions" / "_sessionctl").is_file()
    assert cli("config", "path", "nowhere").exit_code == 2


def test_set_creates_a_private_file_in_a_private_dir(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "new" / "dir" / "config.toml"
    monkeypatch.setenv("SESSIONCTL_CONFIG", str(target))
    result = cli("config", "set", "model", "openai/local")
    assert (result.exit_code, result.stdout) == (0, "")
    assert "model" in result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert 'model = "openai/local"' in target.read_text()
    assert load_settings().model == "openai/local"


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("modle", "x", "'modle'"),
        ("context_recent", "many", "'context_recent'"),
        ("context_relevant", "1.5", "'context_relevant'"),
        ("timeout", "0", "'timeout'"),
        ("color", "blue", "'color'"),
        ("model", "", "'model'"),
    ],
)
def test_set_refuses_unknown_keys_and_bad_values(
    cli: Cli, config: Path, key: str, value: str, named: str
) -> None:
    config.write_text('model = "kept"\n')
    result = cli("config", "set", key, value)
    assert result.exit_code == 2
    assert result.stderr.startswith("sessionctl: error: ") and named in result.stderr
    assert result.stderr.count("\n") == 1
    assert config.read_text() == 'model = "kept"\n'


def test_set_replaces_in_place_and_keeps_comments(cli: Cli, config: Path) -> None:
    config.write_text('# my settings\nmodel = "old"  # the usual\n\ncolor = "never"\n')
    assert cli("config", "set", "model", "new").exit_code == 0
    assert cli("config", "set", "context_recent", "12").exit_code == 0
    assert cli("config", "set", "timeout", "30").exit_code == 0
    assert config.read_text() == (
        '# my settings\nmodel = "new"\n\ncolor = "never"\ncontext_recent = 12\ntimeout = 30.0\n'
    )
    assert cli("config", "unset", "color").exit_code == 0
    assert "color" not in config.read_text()
    again = cli("config", "unset", "color")
    assert again.exit_code == 0 and "was not set" in again.stderr
    assert cli("config", "unset", "colour").exit_code == 2


def test_unset_repairs_a_file_with_an_unknown_key(cli: Cli, config: Path) -> None:
    config.write_text('modle = "typo"\n')
    broken = cli("config", "show")
    assert broken.exit_code == 2 and "'modle'" in broken.stderr
    assert cli("config", "unset", "modle").exit_code == 0
    assert cli("config", "show").exit_code == 0


def test_strings_round_trip_through_toml(config: Path) -> None:
    text = 'Be "terse".\nUse \\n literally,\ttabs, é, 😀 and \x01.'
    assert set_setting(config, "system", text) == text
    assert load_settings().system == text
    assert toml_value(1.5e-05) == "1.5e-05" and toml_value(True) == "true"


def test_keys_go_before_the_first_table(config: Path) -> None:
    config.write_text('model = "m"\n[extra]\nkey = 1\n')
    set_setting(config, "color", "never")
    assert config.read_text() == 'model = "m"\ncolor = "never"\n[extra]\nkey = 1\n'
    assert unset_setting(config, "model")
    assert config.read_text() == 'color = "never"\n[extra]\nkey = 1\n'


def test_a_symlinked_config_stays_a_symlink(config: Path, tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "sessionctl.toml"
    real.parent.mkdir()
    real.write_text("# mine\n")
    config.symlink_to(real)
    set_setting(config, "model", "m")
    assert config.is_symlink()
    assert real.read_text() == '# mine\nmodel = "m"\n'


def test_show_says_where_each_setting_comes_from(
    cli: Cli, config: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = show(cli)
    assert list(settings) == ["home", *CONFIG_KEYS]
    assert settings["model"] == {
        "value": DEFAULT_MODEL,
        "source": "default",
        "env_var": "SESSIONCTL_MODEL",
    }
    assert settings["home"]["source"] == "env"  # the test fixture sets SESSIONCTL_HOME
    config.write_text('model = "from-file"\ncontext_recent = 7\n')
    monkeypatch.setenv("SESSIONCTL_CONTEXT_RECENT", "9")
    settings = show(cli, "--home", str(tmp_path / "flag-home"))
    assert settings["model"]["value"] == "from-file" and settings["model"]["source"] == "file"
    assert settings["context_recent"] == {
        "value": 9,
        "source": "env",
        "env_var": "SESSIONCTL_CONTEXT_RECENT",
    }
    assert settings["home"]["value"] == str(tmp_path / "flag-home")
    assert settings["home"]["source"] == "flag"
    table = cli("config", "show")
    assert table.exit_code == 0
    assert any(
        line.split()[:3] == ["model", "from-file", "file"] for line in table.stdout.splitlines()
    )


def chat_context(cli: Cli, session: str, *flags: str) -> dict[str, object]:
    """What `chat` would send (nothing is sent, so no server is needed)."""
    result = cli("chat", "-s", session, "--show-context", *flags, "hello")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("key", "flag", "var", "default"),
    [
        ("model", "--model", "SESSIONCTL_MODEL", DEFAULT_MODEL),
        ("api_base", "--api-base", "SESSIONCTL_API_BASE", None),
    ],
)
def test_precedence_flag_env_file_default(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, key: str, flag: str, var: str, default: str | None
) -> None:
    value = "openai/{}" if key == "model" else "http://127.0.0.1:9/{}"
    assert chat_context(cli, "a")[key] == default
    assert cli("config", "set", key, value.format("file")).exit_code == 0
    assert chat_context(cli, "b")[key] == value.format("file")
    monkeypatch.setenv(var, value.format("env"))
    assert chat_context(cli, "c")[key] == value.format("env")
    assert show(cli)[key]["source"] == "env"
    assert chat_context(cli, "d", flag, value.format("flag"))[key] == value.format("flag")
