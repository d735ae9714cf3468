"""A one-shot answer from a real llama-server: sessionctl (both routes) against curl.

    python bench/bench_local.py [--pairs N] [--max-tokens N]

Starts llama-server (tests/local_llama.py: $SESSIONCTL_LLAMA_DIR, default
/var/cache/sessionctl-ci/llama; build it with `bash .ci/llama-server.sh`) and then,
in pairs that alternate which goes first, times a fresh `curl -N` streaming the same
prompt with the same max tokens and a fresh `sessionctl chat` process: time to the
first byte of answer text on stdout and total wall time. Prints medians and the
ratios sessionctl / curl for the direct path and, with --litellm, the litellm route.
Temperature 0 and the same prompt keep the answers (and their lengths) the same.
Figures go in docs; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from local_llama import missing_reason, start_server, stop_server  # noqa: E402

PROMPT = "Write the numbers from one to twenty in words."


def timed(
    argv: list[str], env: dict[str, str], *, first_marker: bytes | None
) -> tuple[float, float]:
    """(seconds to the first answer byte on stdout, total seconds) of one process."""
    t0 = time.monotonic()
    first = None
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env) as p:
        assert isinstance(p.stdout, io.BufferedReader)  # a pipe with the default buffering
        seen = b""
        while chunk := p.stdout.read1(65536):
            seen += chunk
            if first is None and (first_marker is None or first_marker in seen):
                first = time.monotonic() - t0
        p.wait()
        total = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{argv[:4]}... exited {p.returncode}")
    return (first if first is not None else total), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--litellm", action="store_true", help="also time --via litellm")
    args = parser.parse_args()
    reason = missing_reason()
    if reason:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp))
        try:
            env = {
                **os.environ,
                "PYTHONPATH": str(REPO),
                "SESSIONCTL_HOME": str(Path(tmp) / "home"),
                "SESSIONCTL_CONFIG": str(Path(tmp) / "none.toml"),
            }
            body = json.dumps(
                {
                    "model": server.alias,
                    "messages": [{"role": "user", "content": PROMPT}],
                    "max_tokens": args.max_tokens,
                    "temperature": 0,
                    "stream": True,
                }
            )
            curl = [
                "curl", "-sN", f"{server.api_base}/chat/completions",
                "-H", "Content-Type: application/json", "-d", body,
            ]  # fmt: skip
            base = [
                sys.executable, "-m", "sessionctl", "chat", "--no-context", "-m", server.alias,
                "--api-base", server.api_base, "--max-tokens", str(args.max_tokens),
                "--temperature", "0",
            ]  # fmt: skip
            routes = {"direct": [*base, "--via", "direct", PROMPT]}
            if args.litellm:
                litellm = [*base, "--via", "litellm", PROMPT]
                litellm[litellm.index("--api-base") - 1] = f"openai/{server.alias}"
                routes["litellm"] = litellm
            results: dict[str, list[tuple[float, float]]] = {"curl": []}
            for name in routes:
                results[name] = []
            timed(curl, env, first_marker=b'"content":"')  # warm-up
            for argv in routes.values():
                timed(argv, env, first_marker=None)
            for i in range(args.pairs):
                for name, argv in routes.items():
                    order = [("curl", curl), (name, argv)]
                    if i % 2:
                        order.reverse()
                    for label, command in order:
                        marker = b'"content":"' if label == "curl" else None
                        results[label].append(timed(command, env, first_marker=marker))
        finally:
            stop_server(server)

    def med(label: str, k: int) -> float:
        return statistics.median(r[k] for r in results[label])

    print(f"llama-server, prompt {PROMPT!r}, max_tokens {args.max_tokens}, {args.pairs} pairs")
    print(f"{'':10} {'first byte':>11} {'total':>8} {'first/curl':>11} {'total/curl':>11}")
    for label in results:
        first, total = med(label, 0), med(label, 1)
        print(
            f"{label:10} {first:10.3f}s {total:7.3f}s "
            f"{first / med('curl', 0):10.2f}x {total / med('curl', 1):10.2f}x"
        )
    if "litellm" in results:
        print(f"litellm total / direct total: {med('litellm', 1) / med('direct', 1):.2f}x")


if __name__ == "__main__":
    main()
