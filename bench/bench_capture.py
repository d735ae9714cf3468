"""capture() overhead per call: a captured openai client against a bare one, same server.

    python bench/bench_capture.py [--calls N] [--rounds R] [--stream]

Starts the tests' fake OpenAI-compatible server (tests/llm_server.py) on 127.0.0.1
and, in one process, alternates R rounds of: a conversation of N calls with a bare
``openai.OpenAI`` client, then the same conversation with a captured one (a new
session each round). As apps do, each call resends the whole history, so capture
also has to find what the session already holds. Prints the median per-call time
of each and the difference (the overhead), all measured in the same run. Nothing
here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from llm_server import FakeLLMServer, Reply  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()

    import openai

    from sessionctl import Store, capture

    with FakeLLMServer() as server, tempfile.TemporaryDirectory() as tmp:
        server.default = Reply(text="A short answer of a few words.", chunk_size=8)
        bare = openai.OpenAI(base_url=server.base_url, api_key="sk-bench", max_retries=0)
        captured = openai.OpenAI(base_url=server.base_url, api_key="sk-bench", max_retries=0)
        handle = capture(captured, store=Store(Path(tmp) / "home"))

        def conversation(client: Any, times: list[float]) -> None:
            history: list[dict[str, str]] = []
            for i in range(args.calls):
                history.append({"role": "user", "content": f"question {i} " * 8})
                start = time.perf_counter()
                if args.stream:
                    stream = client.chat.completions.create(
                        model="m", messages=history, stream=True
                    )
                    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
                else:
                    resp = client.chat.completions.create(model="m", messages=history)
                    text = resp.choices[0].message.content
                times.append(time.perf_counter() - start)
                history.append({"role": "assistant", "content": text})

        conversation(bare, [])
        conversation(captured, [])  # warm-up: imports, first connection, price table
        times: dict[str, list[float]] = {"bare client": [], "captured": []}
        for _ in range(args.rounds):
            conversation(bare, times["bare client"])
            handle.reset_session()
            conversation(captured, times["captured"])
        bare.close()
        captured.close()
        base = statistics.median(times["bare client"])
        mode = "streamed" if args.stream else "non-streamed"
        print(f"{args.rounds} rounds x {args.calls} {mode} calls, history resent each call")
        for label, values in times.items():
            median = statistics.median(values)
            print(f"{label:12s} median {median * 1000:7.2f} ms  (+{(median - base) * 1000:.2f} ms)")


if __name__ == "__main__":
    main()
