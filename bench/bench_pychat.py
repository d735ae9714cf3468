"""Session.chat overhead in-process, against the bare openai client on the same server.

    python bench/bench_pychat.py [--calls N] [--history M] [--rounds R]

Starts the tests' fake OpenAI-compatible server (tests/llm_server.py) on 127.0.0.1
and, in one process, alternates R rounds of: N streamed calls with the official
``openai`` client (the baseline: request, stream, join the text), then N
``Session.chat`` turns on a session that already holds M messages (context
assembly, the same streamed call on the direct path, recording both messages).
Prints the median per-call time of each and their ratio, all measured in the same
run. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import llm_server  # noqa: E402
from llm_server import FakeLLMServer, Reply  # noqa: E402

# The fake server writes a reply's headers and body separately: with Nagle's algorithm the
# body waits for the client's delayed ACK (~40 ms), which would hide ms-level costs.
llm_server._Handler.disable_nagle_algorithm = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import openai
    from openai.types.chat import ChatCompletionMessageParam

    from sessionctl import Store

    with FakeLLMServer() as server, tempfile.TemporaryDirectory() as tmp:
        server.default = Reply(text="A short answer of a few words.", chunk_size=8)
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-bench", max_retries=0)
        store = Store(Path(tmp) / "home")
        session = store.session("bench")
        session.add_messages(
            [
                {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " * 8}
                for i in range(args.history)
            ]
        )

        def bare() -> None:
            history: list[ChatCompletionMessageParam] = [
                {"role": "user", "content": f"message {i} " * 8} for i in range(args.history)
            ]
            stream = client.chat.completions.create(
                model="test-model",
                messages=[*history, {"role": "user", "content": "question"}],
                stream=True,
            )
            "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        def ours() -> None:
            session.chat(
                "question", api_base=server.base_url, model="test-model", context_relevant=0
            )

        bare()
        ours()  # warm-up: imports, first connection
        times: dict[str, list[float]] = {"openai client": [], "Session.chat": []}
        for _ in range(args.rounds):
            for label, call in (("openai client", bare), ("Session.chat", ours)):
                for _ in range(args.calls):
                    start = time.perf_counter()
                    call()
                    times[label].append(time.perf_counter() - start)
        client.close()
        base = statistics.median(times["openai client"])
        print(f"{args.rounds} rounds x {args.calls} calls, history {args.history} messages")
        for label, values in times.items():
            median = statistics.median(values)
            print(f"{label:14s} median {median * 1000:7.2f} ms  ratio {median / base:5.2f}x")


if __name__ == "__main__":
    main()
