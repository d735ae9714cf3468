"""Security: private files whatever the umask, no secret ever written or shown, no symlink
followed out of the data dir, imports that only parse, tracebacks without locals, nothing
written outside the data dir (not even by the embedding runtime)."""

from __future__ import annotations

import ast
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, Cli
from llm_server import FakeLLMServer, Reply, llm_server, refused_port

from sessionctl.cli.render import visible_controls

__all__ = ["llm_server"]  # the fixture, re-exported for pytest

SENTINEL = "sk-SENTINEL-9f3e2d1c0b8a7f6e5d4c3b2a19"
SECRET_PARTS = (SENTINEL, SENTINEL[:8], SENTINEL[-6:], "SENTINEL-9f3e")


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SESSIONCTL_HOME": str(home), "PYTHONPATH": str(REPO), **extra}


def _run(code: str, home: Path, *, umask: int | None = None, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=_env(home, **env),
        cwd=REPO,
        timeout=120,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- modes -------------------------------------------------------------------------------------

EVERY_FILE_KIND = """
    import io, json, os
    from pathlib import Path
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput
    from sessionctl import Store
    from sessionctl.cli.app import run
    from sessionctl.cli.render import Output
    from sessionctl.cli.repl import Repl
    from sessionctl.cli.state import State
    from sessionctl.service.chat import ChatOptions

    home = Path(os.environ["SESSIONCTL_HOME"])
    store = Store(home)
    work = store.session("work")
    work.store("what is the deploy day?", "friday")            # transcript + lock
    with open(home / "sessions" / "work.jsonl", "ab") as f:  # a torn tail ...
        f.write(b'{"type":"message","id":"X","se')
    work.add_message({"role": "user", "content": "after"})   # ... set aside: rejects
    store.get_relevant("deploy", sessions=["work"])          # faiss + manifest
    work.fork("copy")                                        # a fork (index copied)
    store.session("gone").add_message({"role": "user", "content": "x"})
    store.delete("gone")                                     # trash/ULID/...
    store.session("back").add_message({"role": "user", "content": "x"})
    store.delete("back")
    store.restore("back")
    work.update(metadata={"k": "v"})                         # a rewrite
    with create_pipe_input() as pipe:                        # the REPL's history file
        repl = Repl(State(out=Output(stdout=io.StringIO(), stderr=io.StringIO())),
                    store.session("work"), ChatOptions(), pt_input=pipe, pt_output=DummyOutput())
    assert run(["config", "set", "model", "test-model"]) == 0  # config.toml
"""


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077, 0o277], ids=oct)
def test_every_file_is_private_whatever_the_umask(home: Path, tmp_path: Path, umask: int) -> None:
    config = tmp_path / "config.toml"
    _run(EVERY_FILE_KIND, home, umask=umask, SESSIONCTL_CONFIG=str(config))
    kinds = set()
    for path in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert not path.is_symlink(), path
        if path.is_dir():
            assert mode == 0o700, (oct(mode), path)
        else:
            assert mode == 0o600, (oct(mode), path)
        name = path.name
        kinds.add(name.split(".", 1)[1] if "." in name.lstrip(".") else name)
    assert {"jsonl", "lock", "rejects", "faiss", "index.json", "store.lock", "history"} <= kinds
    assert list((home / "trash").iterdir())  # trash dirs were checked too
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


# -- secrets -----------------------------------------------------------------------------------


def _assert_no_secret(where: str, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    for part in SECRET_PARTS:
        assert part.encode() not in data, f"{part!r} found in {where}"


def _assert_tree_clean(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            _assert_no_secret(str(path), path.read_bytes())


SECRET_FAULTS = {
    "ok": Reply(text="fine"),
    "401 echoing the key": Reply(status=401, echo_auth=True),
    "403 echoing the key": Reply(status=403, echo_auth=True),
    "500": Reply(status=500, headers={"Retry-After": "0"}, echo_auth=True),
    "stall": Reply(text="partial answer that stalls", chunk_size=4, stall_after=2),
    "error mid-stream with the key": Reply(
        text="abc def", chunk_size=3, error_mid_stream={"message": f"bad key {SENTINEL}"}
    ),
    "error body with the key": Reply(
        status=400, error={"error": {"message": f"key={SENTINEL} Authorization: Bearer {SENTINEL}"}}
    ),
}


@pytest.mark.parametrize("debug", ["", "1"], ids=["plain", "debug"])
def test_the_api_key_never_lands_anywhere(
    cli: Cli,
    llm_server: FakeLLMServer,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    debug: str,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    monkeypatch.setenv("SESSIONCTL_TIMEOUT", "1")
    monkeypatch.setenv("SESSIONCTL_DEBUG", debug)
    base = ["--api-base", llm_server.base_url, "-m", "test-model"]
    for name, reply in SECRET_FAULTS.items():
        llm_server.default = reply
        for extra in ([], ["--no-stream"], ["--json"]):
            result = cli("chat", "-s", "s", *base, *extra, f"question {name}")
            assert result.exit_code in (0, 4), (name, result.stderr)
            _assert_no_secret(f"{name} stdout", result.stdout)
            _assert_no_secret(f"{name} stderr", result.stderr)
            if debug and result.exit_code == 4:
                assert "Traceback" in result.stderr  # the debug traceback is there, scrubbed
    assert llm_server.requests[-1].headers["Authorization"] == f"Bearer {SENTINEL}"
    refused = cli("chat", "-s", "s", "--api-base", f"http://127.0.0.1:{refused_port()}/v1",
                  "-m", "test-model", "x")  # fmt: skip
    assert refused.exit_code == 4
    _assert_no_secret("refused", refused.stderr)
    shown = cli("chat", "-s", "s", *base, "--show-context", "what is sent?")
    _assert_no_secret("--show-context", shown.stdout)
    for args in (("show", "s", "--json"), ("export", "s"), ("list", "--json")):
        _assert_no_secret(" ".join(args), cli(*args).stdout)
    _assert_tree_clean(tmp_path)  # the data dir, the config, the user's home: nothing


def test_the_api_key_never_lands_anywhere_in_a_real_process(
    llm_server: FakeLLMServer, home: Path, tmp_path: Path
) -> None:
    llm_server.default = Reply(status=401, echo_auth=True)
    env = _env(home, OPENAI_API_KEY=SENTINEL, SESSIONCTL_DEBUG="1", SESSIONCTL_TIMEOUT="1")
    for args in (
        ["chat", "-s", "p", "--api-base", llm_server.base_url, "-m", "test-model", "hi"],
        ["chat", "-s", "p", "--api-base", llm_server.base_url, "-m", "test-model", "--json", "x"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "sessionctl", *args],
            capture_output=True,
            env=env,
            cwd=REPO,
            timeout=60,
        )
        assert result.returncode == 4, result.stderr
        _assert_no_secret("stderr", result.stderr)
        _assert_no_secret("stdout", result.stdout)
    _assert_tree_clean(tmp_path)


# -- symlinks ----------------------------------------------------------------------------------


def _victim(tmp_path: Path, name: str = "victim") -> tuple[Path, bytes]:
    path = tmp_path / name
    data = b"precious data outside the data dir\n"
    path.write_bytes(data)
    path.chmod(0o644)
    return path, data


@pytest.mark.parametrize(
    "file", ["s.jsonl", "s.lock", "s.rejects", "s.faiss", "s.index.json", "../.store.lock"]
)
def test_symlinks_inside_the_data_dir_are_never_followed(
    cli: Cli, home: Path, tmp_path: Path, file: str
) -> None:
    from sessionctl import Store

    store = Store(home)
    store.session("s").add_messages([{"role": "user", "content": f"m{i}"} for i in range(3)])
    assert cli("relevant", "m1", "-s", "s").exit_code == 0
    victim, data = _victim(tmp_path)
    link = home / file.removeprefix("../") if file.startswith("../") else home / "sessions" / file
    link.unlink(missing_ok=True)
    link.symlink_to(victim)
    if file == "s.rejects":  # a torn tail makes the next writer set a line aside
        with open(home / "sessions" / "s.jsonl", "ab") as f:
            f.write(b'{"torn')
    for args in (
        ("add", "-s", "s", "--role", "user", "x"),
        ("drop", "-s", "s"),
        ("meta", "s", "k=v"),
        ("relevant", "m1", "-s", "s"),
        ("reindex", "s"),
        ("fork", "s", "t"),
        ("rename", "s", "r"),
        ("delete", "r"),
        ("delete", "s"),
    ):
        result = cli(*args)
        assert result.exit_code in (0, 1, 3), (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.exit_code == 0 or len(result.stderr.splitlines()) == 1, result.stderr
    assert victim.read_bytes() == data
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_a_symlinked_sessions_dir_is_refused(cli: Cli, home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    home.mkdir()
    (home / "sessions").symlink_to(elsewhere)
    result = cli("add", "-s", "a", "--role", "user", "x")
    assert result.exit_code == 1 and "symbolic link" in result.stderr
    assert os.listdir(elsewhere) == []
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755  # not even chmod-ed


def test_a_symlinked_home_is_the_users_choice(cli: Cli, home: Path, tmp_path: Path) -> None:
    real = tmp_path / "real-home"
    real.mkdir()
    home.symlink_to(real)
    assert cli("add", "-s", "a", "--role", "user", "x").exit_code == 0
    assert (real / "sessions" / "a.jsonl").is_file()


def test_trash_entries_that_are_links_are_ignored(cli: Cli, home: Path, tmp_path: Path) -> None:
    from sessionctl import Store

    Store(home).session("a").add_message({"role": "user", "content": "x"})
    outside = tmp_path / "fake-trash"
    outside.mkdir()
    (outside / "evil.jsonl").write_bytes((home / "sessions" / "a.jsonl").read_bytes())
    (home / "trash" / "01ZZZZZZZZZZZZZZZZZZZZZZZZ").symlink_to(outside)
    listed = cli("list", "--deleted", "--json")
    assert json.loads(listed.stdout)["sessions"] == []
    assert cli("restore", "evil").exit_code == 3
    assert (outside / "evil.jsonl").exists()


def test_the_history_file_is_not_followed_out_of_the_data_dir(home: Path, tmp_path: Path) -> None:
    victim, data = _victim(tmp_path)
    home.mkdir(mode=0o700)
    (home / "history").symlink_to(victim)
    code = """
        import io
        from prompt_toolkit.input import create_pipe_input
        from prompt_toolkit.output import DummyOutput
        from sessionctl import Store
        from sessionctl.cli.render import Output
        from sessionctl.cli.repl import Repl
        from sessionctl.cli.state import State
        from sessionctl.service.chat import ChatOptions
        try:
            with create_pipe_input() as pipe:
                state = State(out=Output(stdout=io.StringIO(), stderr=io.StringIO()))
                repl = Repl(state, Store().session("w"), ChatOptions(), pt_input=pipe,
                            pt_output=DummyOutput())
                repl._prompt.history.append_string("typed text")
        except Exception as exc:
            print("refused:", exc)
    """
    _run(code, home)
    assert victim.read_bytes() == data
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


# -- import only parses --------------------------------------------------------------------------

PAYLOADS = [
    "cos\nsystem\n(S'touch {canary}'\ntR.",  # a protocol-0 pickle
    "__import__('os').system('touch {canary}')",
    "!!python/object/apply:os.system ['touch {canary}']",
    "$(touch {canary}) `touch {canary}`",
    "{{{{ ''.__class__.__mro__[1].__subclasses__() }}}}",
]


def test_import_never_executes_anything(cli: Cli, home: Path, tmp_path: Path) -> None:
    import pickle

    canary = tmp_path / "pwned"
    texts = [p.format(canary=canary) for p in PAYLOADS]
    messages = [{"role": "user", "content": t, "metadata": {"__reduce__": t, "py/object": t}}
                for t in texts]  # fmt: skip
    data = {"name": "evil", "metadata": {"!!python/object": texts[0]}, "messages": messages}
    source = tmp_path / "evil.json"
    source.write_text(json.dumps(data))
    assert cli("import", str(source)).exit_code == 0
    for args in (("show", "evil", "--json"), ("export", "evil"), ("recent", "-s", "evil"),
                 ("relevant", "touch", "-s", "evil"), ("meta", "evil")):  # fmt: skip
        assert cli(*args).exit_code == 0, args
    shown = json.loads(cli("show", "evil", "--json").stdout)
    assert [m["content"] for m in shown["messages"]] == texts  # just text
    # a real pickle is refused as data, never loaded
    bomb = tmp_path / "bomb.pkl"
    bomb.write_bytes(pickle.dumps({"messages": texts}))
    result = cli("import", str(bomb), "--as", "bomb")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert not canary.exists()


def test_no_code_loading_module_is_used_anywhere() -> None:
    """No pickle, marshal, shelve, yaml or dill; no eval or exec (DESIGN §4)."""
    banned_modules = {"pickle", "cPickle", "marshal", "shelve", "yaml", "dill", "cloudpickle"}
    for path in sorted((REPO / "sessionctl").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec"), f"{path}:{node.lineno}"
                continue
            else:
                continue
            assert not names & banned_modules, f"{path}:{node.lineno} imports {names}"


# -- tracebacks ------------------------------------------------------------------------------------

FORCED_ERROR = """
    import sys
    from sessionctl.backend.files.local import LocalBackend
    from sessionctl.cli.app import main

    def broken(self, name, make, *, create):
        secret_local = "LOCAL-VALUE-7d1f"  # a local in the failing frame
        raise RuntimeError("forced internal error")

    LocalBackend.append = broken
    main(["add", "-s", "w", "--role", "user", "PROMPT-TEXT-4b2e9a"])
"""


@pytest.mark.parametrize("debug", ["", "1"], ids=["plain", "debug"])
def test_tracebacks_never_show_locals(home: Path, debug: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORCED_ERROR)],
        capture_output=True,
        text=True,
        env=_env(home, SESSIONCTL_DEBUG=debug, COLUMNS="200"),
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 1
    err = result.stderr
    assert "forced internal error" in err
    for value in ("PROMPT-TEXT-4b2e9a", "LOCAL-VALUE-7d1f"):
        assert value not in err and value not in result.stdout
    if debug:
        assert "Traceback" in err or "────" in err  # plain or rich, but a traceback
    else:
        assert err.count("\n") == 1 and "internal error" in err and "Traceback" not in err


def test_debug_traceback_of_a_provider_error_has_no_locals(
    llm_server: FakeLLMServer, home: Path
) -> None:
    llm_server.default = Reply(status=401, echo_auth=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sessionctl",
            "chat",
            "-s",
            "t",
            "--api-base",
            llm_server.base_url,
            "-m",
            "test-model",
            "PROMPT-TEXT-4b2e9a",
        ],
        capture_output=True,
        text=True,
        env=_env(home, SESSIONCTL_DEBUG="1", OPENAI_API_KEY=SENTINEL),
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 4 and "Traceback" in result.stderr
    assert "PROMPT-TEXT-4b2e9a" not in result.stderr
    _assert_no_secret("debug traceback", result.stderr)


# -- nothing written outside the data dir ------------------------------------------------


def test_search_writes_nothing_outside_the_data_dir(home: Path, tmp_path: Path) -> None:
    """The embedding runtime (onnxruntime) must not drop telemetry files in $HOME."""
    user = tmp_path / "user-home"
    user.mkdir()
    code = """
        from sessionctl import Store
        store = Store()
        store.session("w").add_message({"role": "user", "content": "the deploy is on friday"})
        assert store.get_relevant("when is the deploy?")
        store.reindex()
    """
    _run(code, home, HOME=str(user), XDG_CACHE_HOME="", XDG_DATA_HOME="", XDG_CONFIG_HOME="")
    assert sorted(p.relative_to(user) for p in user.rglob("*")) == []


# -- terminal escapes in session text ------------------------------------------------------

# A window title, a screen clear, an OSC 8 link with a spoofed target, an 8-bit CSI, a
# carriage return that would overwrite the line, a bell, DEL.
HOSTILE = (
    "title \x1b]0;pwned\x07 clear \x1b[2J link \x1b]8;;https://evil.example/\x1b\\here"
    "\x1b]8;;\x1b\\ csi \x9b31m cr \roverwrite del \x7f tab\tok"
)
HOSTILE_SHOWN = (
    "title \\x1b]0;pwned\\x07 clear \\x1b[2J link \\x1b]8;;https://evil.example/\\x1b\\here"
    "\\x1b]8;;\\x1b\\ csi \\x9b31m cr \\x0doverwrite del \\x7f tab\tok"
)
SGR = re.compile(r"\x1b\[[0-9;]*m")  # rich's own styles


def _obeyable(screen: str) -> list[str]:
    """Control characters a terminal would act on, besides rich's SGR styles and line ends."""
    rest = SGR.sub("", screen).replace("\r\n", "\n")  # the pty turns \n into \r\n
    return sorted({f"{ord(c):#04x}" for c in rest if c not in "\n\t" and visible_controls(c) != c})


def _in_pty(home: Path, *args: str, **env: str) -> str:
    """Run sessionctl with stdout on a pseudo-terminal; return what the terminal got."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessionctl", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
        env=_env(home, **env),
        cwd=REPO,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child has closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return b"".join(chunks).decode()


def test_session_text_cannot_drive_the_terminal(cli: Cli, home: Path) -> None:
    assert cli("add", "-s", "w", "--role", "user", HOSTILE).exit_code == 0
    for args in (["recent", "-s", "w"], ["recent", "-s", "w", "--text"], ["show", "w"]):
        screen = _in_pty(home, *args, COLUMNS="300")  # wide: no wrapping
        assert _obeyable(screen) == [], (args, screen)
        shown = HOSTILE_SHOWN if "--text" in args else HOSTILE_SHOWN.expandtabs(8)  # rich's
        assert shown in screen.replace("\r\n", "\n"), (args, screen)
    # JSON on a terminal: C0 escaped by JSON already, DEL and C1 too; the value is the same
    screen = _in_pty(home, "recent", "-s", "w", "--json")
    assert _obeyable(screen) == [], screen
    assert json.loads(screen)[0]["content"] == HOSTILE


def test_piped_session_text_stays_byte_exact(home: Path) -> None:
    from sessionctl import Store

    Store(home=home).session("w").add_message({"role": "user", "content": HOSTILE})

    def piped(*args: str) -> bytes:
        proc = subprocess.run(
            [sys.executable, "-m", "sessionctl", *args],
            capture_output=True,
            env=_env(home),
            cwd=REPO,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    exact = HOSTILE.encode()
    assert piped("recent", "-s", "w") == b"user: " + exact + b"\n"
    assert piped("recent", "-s", "w", "--text") == exact + b"\n"
    assert piped("show", "w") == b"user: " + exact + b"\n"
    raw = piped("recent", "-s", "w", "--json")
    assert "\x9b".encode() in raw and json.loads(raw)[0]["content"] == HOSTILE


def test_relevant_on_a_terminal_shows_controls(
    cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("add", "-s", "w", "--role", "user", "deploy " + HOSTILE).exit_code == 0
    monkeypatch.setenv("SESSIONCTL_COLOR", "always")  # rendered as for a terminal
    for args in (["-d", "2"], ["-d", "2", "--text"]):
        result = cli("relevant", "deploy", *args)
        assert result.exit_code == 0, result.stderr
        assert _obeyable(result.stdout) == [], (args, result.stdout)
        assert "\\x1b]0;pwned\\x07" in result.stdout
    monkeypatch.setenv("SESSIONCTL_COLOR", "auto")  # piped: exact
    assert cli("relevant", "deploy", "-d", "2", "--text").stdout == "deploy " + HOSTILE + "\n"


def test_visible_controls_covers_c0_del_and_c1() -> None:
    every = "".join(map(chr, range(0xA1)))
    shown = visible_controls(every)
    assert [c for c in shown if visible_controls(c) != c] == []
    assert "\t" in shown and "\n" in shown and "\\x1b" in shown and "\\x9b" in shown
    assert visible_controls("plain é ☕ text\n") == "plain é ☕ text\n"


# -- modes and ownership of what sessionctl did not create ---------------------------------------


@pytest.mark.parametrize("mode", [0o755, 0o1777, 0o750], ids=oct)
def test_an_existing_home_keeps_its_mode_and_is_warned_about_once(home: Path, mode: int) -> None:
    from sessionctl import Store

    home.mkdir()
    home.chmod(mode)
    warnings: list[str] = []
    store = Store(home, warn=warnings.append)
    for text in ("one", "two"):
        store.session("a").add_message({"role": "user", "content": text})
    store.delete("a")
    assert stat.S_IMODE(home.stat().st_mode) == mode  # a 1777 dir keeps its sticky bit
    for own in ("sessions", "trash"):
        assert stat.S_IMODE((home / own).stat().st_mode) == 0o700
    assert len(warnings) == 1 and "open to other users" in warnings[0], warnings


def test_a_private_home_and_a_symlinked_homes_target_are_not_touched(
    home: Path, tmp_path: Path
) -> None:
    from sessionctl import Store

    real = tmp_path / "real"
    real.mkdir(mode=0o711)
    real.chmod(0o711)
    home.symlink_to(real)
    warnings: list[str] = []
    Store(home, warn=warnings.append).session("a").add_message({"role": "user", "content": "x"})
    assert stat.S_IMODE(real.stat().st_mode) == 0o711 and len(warnings) == 1
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    warnings.clear()
    Store(private, warn=warnings.append).session("a").add_message({"role": "user", "content": "x"})
    assert warnings == []


def test_sessionctls_own_directories_are_kept_private(home: Path) -> None:
    from sessionctl import Store

    (home / "sessions").mkdir(parents=True, mode=0o755)
    (home / "sessions").chmod(0o755)
    Store(home).session("a").add_message({"role": "user", "content": "x"})
    assert stat.S_IMODE((home / "sessions").stat().st_mode) == 0o700


def test_sessions_swapped_for_a_link_is_refused_by_a_long_lived_store(
    home: Path, tmp_path: Path
) -> None:
    from sessionctl import Store
    from sessionctl.errors import StoreError

    store = Store(home)
    store.session("a").add_message({"role": "user", "content": "first"})
    elsewhere = tmp_path / "elsewhere"
    (home / "sessions").rename(elsewhere)
    target = tmp_path / "target"
    target.mkdir()
    (home / "sessions").symlink_to(target)
    write: Callable[[], object]
    for write in (
        lambda: store.session("a").add_message({"role": "user", "content": "second"}),
        lambda: store.session("new").add_message({"role": "user", "content": "x"}),
    ):
        with pytest.raises(StoreError, match="symbolic link"):
            write()
    assert os.listdir(target) == []
    assert b"second" not in (elsewhere / "a.jsonl").read_bytes()


def test_a_transcript_made_readable_by_others_is_private_again_after_a_write(
    home: Path,
) -> None:
    from sessionctl import Store

    session = Store(home).session("a")
    session.add_messages([{"role": "user", "content": f"m{i}"} for i in range(3)])
    path = home / "sessions" / "a.jsonl"
    write: Callable[[], object]
    for write in (
        lambda: session.add_message({"role": "user", "content": "x"}),
        lambda: session.drop(),
    ):
        path.chmod(0o644)
        write()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_another_users_transcript_is_never_written(cli: Cli, home: Path) -> None:
    from sessionctl import Store

    Store(home).session("a").add_messages([{"role": "user", "content": "m"}] * 2)
    path = home / "sessions" / "a.jsonl"
    os.chown(path, 65534, 65534)
    before = path.read_bytes()
    for args in (
        ("add", "-s", "a", "--role", "user", "x"),
        ("drop", "-s", "a"),
        ("meta", "a", "k=v"),
    ):
        result = cli(*args)
        assert result.exit_code == 1, (args, result.stderr)
        assert "belongs to uid 65534" in result.stderr and len(result.stderr.splitlines()) == 1
    assert path.read_bytes() == before and path.stat().st_uid == 65534


# -- temp files of any name; lock files of sessions that do not exist -------------------------


def _holding_flock(path: Path) -> subprocess.Popen[str]:
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def _orphan(path: Path) -> Path:
    path.write_bytes(b"half of a large import")
    old = time.time() - 3600
    os.utime(path, (old, old))
    return path


def test_orphaned_temp_files_of_any_name_go_with_the_next_write(home: Path) -> None:
    from sessionctl import Store

    store = Store(home)
    for name in ("a", "busy", "gone"):
        store.session(name).add_message({"role": "user", "content": name})
    sessions = home / "sessions"
    orphans = [
        _orphan(sessions / ".gone.jsonl~.tmp"),  # an import killed: its lock is free
        _orphan(sessions / ".never.jsonl~.tmp"),  # a create killed before its first line
        _orphan(home / ".activity.log~0123456789ab.tmp"),  # a compaction killed
    ]
    busy = _orphan(sessions / ".busy.jsonl~.tmp")  # its writer is alive: holds busy.lock
    held_unique = _orphan(home / ".activity.log~ba9876543210.tmp")  # flocked by a live writer
    fresh = home / ".activity.log~ffffffffffff.tmp"  # just created: maybe not flocked yet
    fresh.write_bytes(b"")
    holders = [_holding_flock(sessions / "busy.lock"), _holding_flock(held_unique)]
    try:
        Store(home).session("a").add_message({"role": "user", "content": "next write"})
    finally:
        for proc in holders:
            proc.kill()
            proc.communicate()
    assert [p for p in orphans if p.exists()] == []
    assert busy.exists() and held_unique.exists() and fresh.exists()
    assert not (sessions / "never.lock").exists()  # cleaning left no lock file behind
    Store(home).session("a").add_message({"role": "user", "content": "writers gone"})
    assert not busy.exists() and not held_unique.exists()


def test_failed_commands_leave_no_lock_file_for_a_session_that_does_not_exist(
    cli: Cli, home: Path
) -> None:
    for name in ("a", "b"):
        assert cli("add", "-s", name, "--role", "user", "x").exit_code == 0
    for args in (
        ("delete", "nosuch"),
        ("drop", "-s", "nosuch"),
        ("fork", "a", "b"),
        ("fork", "a", "B"),
        ("fork", "nosuch", "c"),
        ("rename", "nosuch", "d"),
    ):
        assert cli(*args).exit_code != 0, args
    sessions = home / "sessions"
    assert sorted(p.name for p in sessions.glob("*.lock")) == ["a.lock", "b.lock"]
    assert cli("delete", "b").exit_code == 0
    assert sorted(p.name for p in sessions.glob("*.lock")) == ["a.lock"]
