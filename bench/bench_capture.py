"""capture() overhead per call: a captured client against a bare one, same server.

    python bench/bench_capture.py [--calls N] [--rounds R] [--stream] [--durable]
                                  [--client openai|async|litellm]

Starts the tests' fake OpenAI-compatible server (tests/llm_server.py) on 127.0.0.1
and, in one process, alternates R rounds of: a conversation of N calls made bare,
then the same conversation captured (a new session each round). ``--client``:
``openai.OpenAI`` (default), ``openai.AsyncOpenAI`` (calls awaited in one
``asyncio.run``), or ``litellm.completion`` (bare: the function saved before
``capture(litellm)`` patched the module). As apps do, each call resends the whole
history, so capture also has to find what the session already holds. Prints the
median per-call time of each, the difference (the overhead) and the ratio, all
measured in the same run. The writes are the handle's writer thread's: after each
captured conversation (outside the timed calls) ``handle.flush()`` waits for them, so
the next bare round is not measured against a writer still busy; its median time is
printed, and every exchange is checked to be in the store at the end. ``--durable``:
``capture(..., durable=True)``, each call waiting for its own write. Nothing here
asserts a time.
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

import llm_server  # noqa: E402
from llm_server import FakeLLMServer, Reply  # noqa: E402

# The fake server writes a reply's headers and body separately: with Nagle's algorithm the
# body waits for the client's delayed ACK (~40 ms), which would hide ms-level costs.
llm_server._Handler.disable_nagle_algorithm = True

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
    parser.add_argument("--durable", action="store_true")
    parser.add_argument("--client", choices=("openai", "async", "litellm"), default="openai")
    args = parser.parse_args()

    import openai

    from sessionctl import Store, capture

    with FakeLLMServer() as server, tempfile.TemporaryDirectory() as tmp:
        server.default = Reply(text="A short answer of a few words.", chunk_size=8)
        store = Store(Path(tmp) / "home")
        kw: dict[str, Any] = {"model": "m", "stream": args.stream}
        times: dict[str, list[float]] = {"bare": [], "captured": []}
        flushes: list[float] = []
        names: list[str] = []

        in_call: list[float] = []  # handle.record/arecord: the recording in the call's thread

        def timed(handle: Any) -> None:
            record, arecord = handle.record, handle.arecord

            def rec(request: Any, answer: Any) -> None:
                start = time.perf_counter()
                record(request, answer)
                in_call.append(time.perf_counter() - start)

            async def arec(request: Any, answer: Any) -> None:
                start = time.perf_counter()
                await arecord(request, answer)
                in_call.append(time.perf_counter() - start)

            handle.record, handle.arecord = rec, arec

        def flush(handle: Any) -> None:
            start = time.perf_counter()
            handle.flush()
            flushes.append(time.perf_counter() - start)
            names.append(handle.session)

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
                handle = capture(cap, store=store, durable=args.durable)
                timed(handle)

                def caller(client: Any) -> ACall:
                    async def call(history: list[dict[str, str]]) -> str:
                        result = await client.chat.completions.create(messages=history, **kw)
                        return await _atext(result, args.stream)

                    return call

                await aconversation(caller(bare), [])
                await aconversation(caller(cap), [])  # warm-up
                handle.flush()
                in_call.clear()
                for _ in range(args.rounds):
                    await aconversation(caller(bare), times["bare"])
                    handle.reset_session()
                    await aconversation(caller(cap), times["captured"])
                    flush(handle)
                handle.close()
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
                handle = capture(litellm, store=store, durable=args.durable)
                timed(handle)
                cap_fn = litellm.completion
                closers: list[Callable[[], None]] = [handle.close]
            else:
                bare_c = openai.OpenAI(base_url=server.base_url, api_key="sk-b", max_retries=0)
                cap_c = openai.OpenAI(base_url=server.base_url, api_key="sk-b", max_retries=0)
                handle = capture(cap_c, store=store, durable=args.durable)
                timed(handle)
                bare_fn = bare_c.chat.completions.create
                cap_fn = cap_c.chat.completions.create
                closers = [handle.close, bare_c.close, cap_c.close]

            def caller(fn: Callable[..., Any]) -> Call:
                return lambda history: _text(fn(messages=history, **kw), args.stream)

            conversation(caller(bare_fn), [])
            conversation(caller(cap_fn), [])  # warm-up: imports, first connection, price table
            handle.flush()
            in_call.clear()
            for _ in range(args.rounds):
                conversation(caller(bare_fn), times["bare"])
                handle.reset_session()
                conversation(caller(cap_fn), times["captured"])
                flush(handle)
            for close in closers:
                close()
        base = statistics.median(times["bare"])
        for name in names:  # every exchange written: a question and an answer per call
            held = len(store.session(name).get_messages())
            assert held == 2 * args.calls, f"{name}: {held} messages, not {2 * args.calls}"
        mode = "streamed" if args.stream else "non-streamed"
        how = "durable" if args.durable else "writer thread"
        print(
            f"{args.client} ({how}): {args.rounds} rounds x {args.calls} {mode} calls,"
            " history resent"
        )
        for label, values in times.items():
            median = statistics.median(values)
            print(
                f"{label:9s} median {median * 1000:7.2f} ms  (+{(median - base) * 1000:.2f} ms,"
                f" x{median / base:.2f})"
            )
        print(
            f"recording in the call's thread: median {statistics.median(in_call) * 1000:.3f} ms"
            f" (handing the exchange over{'' if not args.durable else ' and its write'})"
        )
        print(
            f"flush after each conversation: median {statistics.median(flushes) * 1000:.2f} ms"
            f" (writes still queued when its last call returned)"
        )


if __name__ == "__main__":
    main()
