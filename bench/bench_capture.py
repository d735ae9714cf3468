"""capture() overhead per call: a captured client against a bare one, same server.

    python bench/bench_capture.py [--calls N] [--rounds R] [--stream]
                                  [--client openai|async|litellm]

Starts the tests' fake OpenAI-compatible server (tests/llm_server.py) on 127.0.0.1
and, in one process, alternates R rounds of: a conversation of N calls made bare,
then the same conversation captured (a new session each round). ``--client``:
``openai.OpenAI`` (default), ``openai.AsyncOpenAI`` (calls awaited in one
``asyncio.run``), or ``litellm.completion`` (bare: the function saved before
``capture(litellm)`` patched the module). As apps do, each call resends the whole
history, so capture also has to find what the session already holds. Prints the
median per-call time of each, the difference (the overhead) and the ratio, all
measured in the same run. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from llm_server import FakeLLMServer, Reply  # noqa: E402

Call = Callable[[list[dict[str, str]]], str]
ACall = Callable[[list[dict[str, str]]], Awaitable[str]]


def _text(result: Any, stream: bool) -> str:
    if not stream:
        return str(result.choices[0].message.content)
    return "".join(c.choices[0].delta.content or "" for c in result if c.choices)


async def _atext(result: Any, stream: bool) -> str:
    if not stream:
        return str(result.choices[0].message.content)
    return "".join([c.choices[0].delta.content or "" async for c in result if c.choices])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--client", choices=("openai", "async", "litellm"), default="openai")
    args = parser.parse_args()

    import openai

    from sessionctl import Store, capture

    with FakeLLMServer() as server, tempfile.TemporaryDirectory() as tmp:
        server.default = Reply(text="A short answer of a few words.", chunk_size=8)
        store = Store(Path(tmp) / "home")
        kw: dict[str, Any] = {"model": "m", "stream": args.stream}
        times: dict[str, list[float]] = {"bare": [], "captured": []}

        def conversation(call: Call, into: list[float]) -> None:
            history: list[dict[str, str]] = []
            for i in range(args.calls):
                history.append({"role": "user", "content": f"question {i} " * 8})
                start = time.perf_counter()
                text = call(history)
                into.append(time.perf_counter() - start)
                history.append({"role": "assistant", "content": text})

        async def aconversation(call: ACall, into: list[float]) -> None:
            history: list[dict[str, str]] = []
            for i in range(args.calls):
                history.append({"role": "user", "content": f"question {i} " * 8})
                start = time.perf_counter()
                text = await call(history)
                into.append(time.perf_counter() - start)
                history.append({"role": "assistant", "content": text})

        if args.client == "async":

            async def run() -> None:
                bare = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-b", max_retries=0)
                cap = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-b", max_retries=0)
                handle = capture(cap, store=store)

                def caller(client: Any) -> ACall:
                    async def call(history: list[dict[str, str]]) -> str:
                        result = await client.chat.completions.create(messages=history, **kw)
                        return await _atext(result, args.stream)

                    return call

                await aconversation(caller(bare), [])
                await aconversation(caller(cap), [])  # warm-up
                for _ in range(args.rounds):
                    await aconversation(caller(bare), times["bare"])
                    handle.reset_session()
                    await aconversation(caller(cap), times["captured"])
                await bare.close()
                await cap.close()

            asyncio.run(run())
        else:
            if args.client == "litellm":
                os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                warnings.simplefilter("ignore")  # litellm's own pydantic notes
                import litellm

                kw.update(model="openai/m", api_base=server.base_url, api_key="sk-b")
                kw.update(max_retries=0)
                bare_fn = litellm.completion
                handle = capture(litellm, store=store)
                cap_fn = litellm.completion
                closers: list[Callable[[], None]] = [handle.close]
            else:
                bare_c = openai.OpenAI(base_url=server.base_url, api_key="sk-b", max_retries=0)
                cap_c = openai.OpenAI(base_url=server.base_url, api_key="sk-b", max_retries=0)
                handle = capture(cap_c, store=store)
                bare_fn = bare_c.chat.completions.create
                cap_fn = cap_c.chat.completions.create
                closers = [bare_c.close, cap_c.close]

            def caller(fn: Callable[..., Any]) -> Call:
                return lambda history: _text(fn(messages=history, **kw), args.stream)

            conversation(caller(bare_fn), [])
            conversation(caller(cap_fn), [])  # warm-up: imports, first connection, price table
            for _ in range(args.rounds):
                conversation(caller(bare_fn), times["bare"])
                handle.reset_session()
                conversation(caller(cap_fn), times["captured"])
            for close in closers:
                close()
        base = statistics.median(times["bare"])
        mode = "streamed" if args.stream else "non-streamed"
        print(f"{args.client}: {args.rounds} rounds x {args.calls} {mode} calls, history resent")
        for label, values in times.items():
            median = statistics.median(values)
            print(
                f"{label:9s} median {median * 1000:7.2f} ms  (+{(median - base) * 1000:.2f} ms,"
                f" x{median / base:.2f})"
            )


if __name__ == "__main__":
    main()
