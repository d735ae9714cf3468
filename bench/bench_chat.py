"""One-shot chat overhead: fresh processes against an instant local OpenAI-compatible server.

    python bench/bench_chat.py [--runs N]

Starts the tests' fake server (tests/llm_server.py) on 127.0.0.1, then times each
command line in COMMANDS as a fresh subprocess (one warm-up run, then N timed runs)
and prints the median and minimum wall time and the ratio of the median to the
baseline (the first entry, a bare Typer app printing one line), all measured in the
same run. Figures go in notes and docs; nothing here asserts a time.

To add a command, append a (label, argv) pair in ``commands()``. The REPL rows
(``repl_commands()``) time process start to the first prompt on a pseudo-terminal.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from llm_server import FakeLLMServer, Reply  # noqa: E402

ANSWER = "The answer is forty-two."
PY = sys.executable
SESSIONCTL = [PY, "-m", "sessionctl"]

TYPER_APP = """
import typer

app = typer.Typer()


@app.command()
def hello(name: str = "world") -> None:
    print(f"hello {name}")


@app.command()
def other() -> None:
    print("other")


app()
"""

STDLIB_CALL = """
import http.client, json, sys
conn = http.client.HTTPConnection("127.0.0.1", {port}, timeout=10)
body = json.dumps({{"model": "test-model", "stream": True,
                   "messages": [{{"role": "user", "content": "hi"}}]}})
conn.request("POST", "/v1/chat/completions", body, {{"Content-Type": "application/json"}})
resp = conn.getresponse()
for line in resp:
    line = line.strip()
    if line.startswith(b"data: ") and line != b"data: [DONE]":
        for choice in json.loads(line[6:]).get("choices", []):
            sys.stdout.write(choice.get("delta", {{}}).get("content") or "")
print()
"""

LLM_CALL = """
import sys
from sessionctl.llm import ChatRequest, chat
req = ChatRequest("openai/test-model", [{{"role": "user", "content": "hi"}}],
                  api_base="{base}", api_key="sk-bench", via_litellm={via_litellm})
for delta in chat(req):
    sys.stdout.write(delta)
print()
"""


def commands(base_url: str, port: int, tmp: Path) -> list[tuple[str, list[str]]]:
    """The command lines to time; the first one is the baseline."""
    app = tmp / "bare_typer_app.py"
    app.write_text(TYPER_APP)
    return [
        ("bare Typer app (baseline)", [PY, str(app), "hello"]),
        ("python -c pass", [PY, "-c", "pass"]),
        ("stdlib http.client call", [PY, "-c", STDLIB_CALL.format(port=port)]),
        (
            "sessionctl.llm direct path",
            [PY, "-c", LLM_CALL.format(base=base_url, via_litellm=False)],
        ),
        (
            "sessionctl.llm litellm path",
            [PY, "-c", LLM_CALL.format(base=base_url, via_litellm=True)],
        ),
        ("sessionctl --version", [*SESSIONCTL, "--version"]),
        (
            "sessionctl chat one-shot (direct)",
            [*SESSIONCTL, "chat", "-s", "bench", "-m", "test-model", "--api-base", base_url, "hi"],
        ),
        (
            "sessionctl chat one-shot, new session",
            [*SESSIONCTL, "chat", "-m", "openai/test-model", "--api-base", base_url, "hi"],
        ),
        (
            "sessionctl chat one-shot --json",
            [
                *SESSIONCTL,
                "chat",
                "-s",
                "bench-json",
                "-m",
                "test-model",
                "--api-base",
                base_url,
                "--json",
                "hi",
            ],
        ),
        (
            "chat one-shot, 1,000-message session (fits: no model)",
            [
                *SESSIONCTL,
                "chat",
                "-s",
                "long",
                "-m",
                "test-model",
                "--api-base",
                base_url,
                "--context-window",
                "1000000",
                "hi",
            ],
        ),
        (
            "chat one-shot, 1,000-message session (8k window)",
            [
                *SESSIONCTL,
                "chat",
                "-s",
                "long",
                "-m",
                "test-model",
                "--api-base",
                base_url,
                "--context-window",
                "8192",
                "hi",
            ],
        ),
        (
            "chat one-shot, empty session (8k window)",
            [
                *SESSIONCTL,
                "chat",
                "-s",
                "short",
                "-m",
                "test-model",
                "--api-base",
                base_url,
                "--context-window",
                "8192",
                "hi",
            ],
        ),
    ]


def build_long(home: Path, count: int = 1000) -> None:
    """A 1,000-message session of 20-word chat turns (~27k tokens: more than 8k)."""
    sys.path.insert(0, str(REPO / "bench"))
    from common import WORDS  # bench/common.py

    from sessionctl import Store

    words = WORDS * 3
    Store(home).session("long").add_messages(
        [
            {"role": "user" if i % 2 == 0 else "assistant",
             "content": f"turn {i}: " + " ".join(words[i % 7 : i % 7 + 20])}
            for i in range(count)
        ]
    )  # fmt: skip


def repl_commands(base_url: str) -> list[tuple[str, list[str]]]:
    """REPLs whose time to a visible prompt is measured (the prompt is ``bench>``)."""
    return [
        (
            "REPL prompt visible (direct)",
            [*SESSIONCTL, "chat", "-s", "bench", "-m", "test-model", "--api-base", base_url],
        ),
        (
            "REPL prompt visible (litellm model)",
            [
                *SESSIONCTL,
                "chat",
                "-s",
                "bench",
                "-m",
                "hosted_vllm/test-model",
                "--api-base",
                base_url,
            ],
        ),
    ]


def time_to_prompt(argv: list[str], env: dict[str, str], prompt: bytes = b"bench>") -> float:
    """Seconds from fork to ``prompt`` showing on a pseudo-terminal; then Ctrl-D.

    Answers prompt-toolkit's cursor position request as a terminal would.
    """
    import pty
    import select
    import signal

    started = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # the child: a fresh process on the pty
        os.execve(argv[0], argv, env)
    seen = b""
    elapsed = float("nan")
    try:
        deadline = started + 30
        while prompt not in seen:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise RuntimeError(f"no prompt within 30 s; got {seen[-200:]!r}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child exited
                    raise RuntimeError(f"exited before the prompt; got {seen[-300:]!r}") from None
                if not chunk:
                    raise RuntimeError(f"exited before the prompt; got {seen[-300:]!r}")
                seen += chunk
                if b"\x1b[6n" in chunk:
                    os.write(fd, b"\x1b[1;1R")
        elapsed = time.perf_counter() - started
        os.write(fd, b"\x04")  # Ctrl-D: leave
        end = time.perf_counter() + 10
        while time.perf_counter() < end:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                pid = 0
                break
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    os.read(fd, 65536)
                except OSError:
                    pass
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    return elapsed


def time_command(argv: list[str], runs: int, env: dict[str, str]) -> tuple[list[float], str]:
    out = ""
    samples: list[float] = []
    for i in range(runs + 1):  # the first run warms caches and is not counted
        started = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            return [], f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
        out = proc.stdout
        if i:
            samples.append(elapsed)
    return samples, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command")
    args = parser.parse_args()

    with FakeLLMServer() as server, tempfile.TemporaryDirectory() as tmpdir:
        server.default = Reply(text=ANSWER, chunk_size=6)
        tmp = Path(tmpdir)
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["SESSIONCTL_HOME"] = str(tmp / "home")
        env["NO_COLOR"] = "1"
        env.pop("OPENAI_API_KEY", None)

        build_long(tmp / "home")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.runs} runs each")
        print(f"{'command':38} {'median':>9} {'min':>9} {'ratio':>7}")
        baseline: float | None = None
        for label, argv in commands(server.base_url, server.port, tmp):
            samples, out = time_command(argv, args.runs, env)
            if not samples:
                print(f"{label:38} failed: {out}")
                continue
            median = statistics.median(samples)
            baseline = baseline or median
            note = (
                ""
                if ANSWER in out or any(k in label for k in ("python -c", "Typer", "--version"))
                else "  (?)"
            )
            print(
                f"{label:38} {median * 1000:7.0f}ms {min(samples) * 1000:7.0f}ms "
                f"{median / baseline:6.2f}x{note}"
            )
        repl_env = {**env, "TERM": "xterm", "COLUMNS": "100", "LINES": "30"}
        for label, argv in repl_commands(server.base_url):
            try:
                times = [time_to_prompt(argv, repl_env) for _ in range(args.runs + 1)][1:]
            except RuntimeError as exc:
                print(f"{label:38} failed: {exc}")
                continue
            median = statistics.median(times)
            ratio = f"{median / baseline:6.2f}x" if baseline else ""
            print(f"{label:38} {median * 1000:7.0f}ms {min(times) * 1000:7.0f}ms {ratio}")


if __name__ == "__main__":
    main()
