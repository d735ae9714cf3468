"""The provider layer over real HTTP: the direct (stdlib) path and the litellm path.

Both paths talk to the same OpenAI-compatible fake server on 127.0.0.1. litellm is
imported once per test session (the first litellm-path test pays ~3.5 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_server import FakeLLMServer, Reply, refused_port

from sessionctl.errors import ProviderError, UsageError
from sessionctl.llm import (
    AuthenticationFailed,
    BadModel,
    BadResponse,
    ChatRequest,
    ConnectionFailed,
    ContextTooLong,
    ProviderTimeout,
    RateLimited,
    ServerError,
    chat,
    context_window,
    count_tokens,
    estimate_tokens,
    uses_direct_path,
)

REPO = Path(__file__).resolve().parent.parent
SENTINEL = "sk-SENTINEL-7f3a9c0e1d2b4a5f"
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hello."},
]
PATHS = ["direct", "litellm"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        low = var.lower()
        if low.endswith("_proxy") or var in (
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "OPENAI_API_BASE",
        ):
            monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(max_stall=5.0) as srv:
        yield srv


def make(srv: FakeLLMServer, path: str, **kw: Any) -> ChatRequest:
    kw.setdefault("model", "openai/test-model")
    kw.setdefault("api_base", srv.base_url)
    kw.setdefault("messages", MESSAGES)
    kw.setdefault("timeout", 10.0)
    req = ChatRequest(via_litellm=(path == "litellm"), **kw)
    assert uses_direct_path(req) is (path == "direct")
    return req


def assert_clean(err: BaseException) -> None:
    text = str(err)
    assert isinstance(err, ProviderError) and err.exit_code == 4
    assert text and "\n" not in text and len(text) < 600
    for secret in (SENTINEL, SENTINEL[:12], SENTINEL[-10:]):
        assert secret not in text
        assert secret not in repr(err)


# -- routing and model facts ----------------------------------------------------------


def test_routing_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    base = "http://127.0.0.1:9/v1"
    direct = [
        ("openai/anything", base),
        ("llama3", base),
        ("gpt-4o", base),
        ("gpt-4o-mini", None),
        ("openai/gpt-4o-mini", None),
    ]
    for model, api_base in direct:
        assert uses_direct_path(ChatRequest(model, [], api_base=api_base)), model
    via_litellm = [
        ("ollama/llama3", None),
        ("ollama/llama3", base),
        ("anthropic/claude-sonnet-4-5", None),
        ("claude-sonnet-4-5", None),
        ("claude-sonnet-4-5", base),  # a known Anthropic name: litellm routes it
        ("meta-llama/Llama-3-8B", base),  # needs a provider prefix
        ("llama3", None),  # no idea where to send it
        ("o1-pro", None),  # served by OpenAI's responses API only
    ]
    for model, api_base in via_litellm:
        assert not uses_direct_path(ChatRequest(model, [], api_base=api_base)), model
    assert not uses_direct_path(ChatRequest("openai/x", [], api_base=base, via_litellm=True))
    assert not uses_direct_path(ChatRequest("openai/x", [], api_base="localhost:8000"))

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert not uses_direct_path(ChatRequest("openai/x", [], api_base=base))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert uses_direct_path(ChatRequest("openai/x", [], api_base=base))


def test_openai_base_url_env_is_honoured_like_litellm(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    req = ChatRequest("gpt-4o-mini", MESSAGES)
    assert uses_direct_path(req)
    assert chat(req).read().content == Reply().text
    sent = server.requests[-1]
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.headers["Authorization"] == f"Bearer {SENTINEL}"
    assert sent.body["stream"] is True


def test_context_window_from_litellms_map_without_importing_it() -> None:
    assert context_window("gpt-4o") == 128000
    assert context_window("openai/gpt-4o") == 128000
    assert context_window("ollama/llama3") == 8192
    assert context_window("no-such-model-xyz") is None
    assert context_window("openai/test-model") is None


def test_token_counting() -> None:
    msgs = [{"role": "user", "content": "hello world"}]
    exact = count_tokens("gpt-4o", msgs)
    assert 5 <= exact <= 12
    prose = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 50}]
    assert count_tokens("gpt-4o", prose) < estimate_tokens(prose)
    # unknown models: cl100k_base plus a margin, but never below the estimate (an
    # upper bound for the tokenizers measured: their real one is unknown)
    assert count_tokens("openai/test-model", prose) > count_tokens("gpt-4", prose)
    assert count_tokens("openai/test-model", prose) == estimate_tokens(prose)


def test_request_repr_hides_the_key() -> None:
    req = ChatRequest("openai/x", [], api_key=SENTINEL)
    assert SENTINEL not in repr(req)


# -- success over both paths ---------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_streaming_answer_usage_model_and_request_body(server: FakeLLMServer, path: str) -> None:
    server.push(Reply(text="Hello there, streaming world!", chunk_size=4))
    req = make(server, path, api_key=SENTINEL, temperature=0.25, max_tokens=77)
    with chat(req) as stream:
        deltas = list(stream)
    assert len(deltas) > 3
    assert "".join(deltas) == "Hello there, streaming world!"
    result = stream.result
    assert result.content == "Hello there, streaming world!"
    assert result.finish_reason == "stop"
    assert result.usage and result.usage["completion_tokens"] == 7
    assert set(result.usage) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert result.model and "test-model" in result.model
    if path == "direct":
        assert result.model == "test-model-0613"  # what the server says answered
    [sent] = server.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "test-model"
    assert sent.body["messages"] == MESSAGES
    assert sent.body["temperature"] == 0.25
    assert sent.body["max_tokens"] == 77
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.headers["Authorization"] == f"Bearer {SENTINEL}"


@pytest.mark.parametrize("path", PATHS)
def test_non_streaming_answer(server: FakeLLMServer, path: str) -> None:
    server.push(Reply(text="Whole answer.", model="served-model"))
    stream = chat(make(server, path, stream=False, api_key="sk-x"))
    result = stream.read()
    assert result.content == "Whole answer."
    assert result.model == "served-model"
    assert result.usage and result.usage["total_tokens"] > 0
    assert not server.requests[-1].body.get("stream")
    assert "temperature" not in server.requests[-1].body


@pytest.mark.parametrize("path", PATHS)
def test_server_without_usage_or_done_is_fine(server: FakeLLMServer, path: str) -> None:
    server.push(Reply(text="no usage here", send_usage=False, send_done=False))
    result = chat(make(server, path, api_key="sk-x")).read()
    assert result.content == "no usage here"
    if path == "direct":
        assert result.usage is None  # (litellm computes its own usage when none comes)


def test_direct_path_sends_no_authorization_without_a_key(server: FakeLLMServer) -> None:
    chat(make(server, "direct")).read()
    assert "Authorization" not in server.requests[-1].headers


def test_litellm_path_works_without_a_key_for_local_servers(server: FakeLLMServer) -> None:
    assert chat(make(server, "litellm")).read().content == Reply().text


def test_openai_itself_gets_max_completion_tokens(server: FakeLLMServer) -> None:
    from urllib.parse import urlsplit

    from sessionctl.llm._http import open_stream
    from sessionctl.llm.models import DirectTarget

    target = DirectTarget(url=urlsplit(server.base_url), model="gpt-5", official=True)
    req = ChatRequest("gpt-5", MESSAGES, max_tokens=50, api_key="sk-x")
    assert open_stream(req, target).read().content == Reply().text
    body = server.requests[-1].body
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body


def test_direct_path_drops_stream_options_if_the_server_rejects_them(server: FakeLLMServer) -> None:
    server.default = Reply(text="ok", reject_stream_options=True)
    assert chat(make(server, "direct")).read().content == "ok"
    assert [("stream_options" in r.body) for r in server.requests] == [True, False]


@pytest.mark.parametrize("path", PATHS)
def test_slow_first_byte_within_the_timeout(server: FakeLLMServer, path: str) -> None:
    server.push(Reply(text="late", first_byte_delay=0.5))
    assert chat(make(server, path, timeout=5, api_key="sk-x")).read().content == "late"


@pytest.mark.parametrize(("path", "size"), [("direct", 3_000_000), ("litellm", 300_000)])
def test_huge_answer(server: FakeLLMServer, path: str, size: int) -> None:
    text = ("0123456789abcdef" * (size // 16 + 1))[:size]
    server.push(Reply(text=text, chunk_size=4096))
    assert chat(make(server, path, api_key="sk-x")).read().content == text


# -- failures over both paths ---------------------------------------------------------


def _fail(
    server: FakeLLMServer, path: str, reply: Reply | None, **kw: Any
) -> tuple[ProviderError, float]:
    if reply is not None:
        server.push(reply)
    kw.setdefault("api_key", SENTINEL)
    kw.setdefault("retries", 0)
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        chat(make(server, path, **kw)).read()
    assert_clean(info.value)
    return info.value, time.monotonic() - started


@pytest.mark.parametrize("path", PATHS)
def test_401_auth_error_never_shows_the_key(server: FakeLLMServer, path: str) -> None:
    err, _ = _fail(server, path, Reply(status=401, echo_auth=True))
    assert isinstance(err, AuthenticationFailed)
    assert "401" in str(err) and "OPENAI_API_KEY" in str(err)


@pytest.mark.parametrize("path", PATHS)
def test_429_rate_limited(server: FakeLLMServer, path: str) -> None:
    err, _ = _fail(server, path, Reply(status=429, headers={"Retry-After": "0"}))
    assert isinstance(err, RateLimited)
    assert len(server.requests) == 1  # retries=0


@pytest.mark.parametrize("path", PATHS)
def test_500_server_error(server: FakeLLMServer, path: str) -> None:
    err, _ = _fail(server, path, Reply(status=500))
    assert isinstance(err, ServerError)


@pytest.mark.parametrize("path", PATHS)
def test_404_bad_model(server: FakeLLMServer, path: str) -> None:
    body = {"error": {"message": "The model `nope` does not exist", "code": "model_not_found"}}
    err, _ = _fail(server, path, Reply(status=404, error=body))
    assert isinstance(err, BadModel)
    assert "test-model" in str(err)


@pytest.mark.parametrize("path", PATHS)
def test_context_length_exceeded(server: FakeLLMServer, path: str) -> None:
    body = {
        "error": {
            "message": "This model's maximum context length is 8192 tokens.",
            "code": "context_length_exceeded",
        }
    }
    err, _ = _fail(server, path, Reply(status=400, error=body))
    assert isinstance(err, ContextTooLong)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("reset", [False, True])
def test_connection_dropped_mid_stream(server: FakeLLMServer, path: str, reset: bool) -> None:
    server.push(Reply(text="abcdefghijklmnopqrstuvwxyz", chunk_size=3, drop_after=2, reset=reset))
    stream = chat(make(server, path, api_key=SENTINEL))
    got = []
    with pytest.raises(ConnectionFailed) as info:
        for delta in stream:
            got.append(delta)
    assert_clean(info.value)
    assert "".join(got) == stream.partial_text
    assert "abcdef".startswith(stream.partial_text)
    assert not stream.done


@pytest.mark.parametrize("path", PATHS)
def test_stall_mid_stream_times_out(server: FakeLLMServer, path: str) -> None:
    server.push(Reply(text="abcdefghijkl", chunk_size=3, stall_after=2))
    stream = chat(make(server, path, timeout=1.0, api_key=SENTINEL))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as info:
        stream.read()
    assert time.monotonic() - started < 4
    assert_clean(info.value)
    assert stream.partial_text == "abcdef"


@pytest.mark.parametrize("path", PATHS)
def test_no_first_byte_times_out(server: FakeLLMServer, path: str) -> None:
    err, elapsed = _fail(server, path, Reply(first_byte_delay=4), timeout=1.0)
    assert isinstance(err, ProviderTimeout)
    assert elapsed < 3.5


@pytest.mark.parametrize("path", PATHS)
def test_connection_refused(server: FakeLLMServer, path: str) -> None:
    port = refused_port()
    err, _ = _fail(server, path, None, api_base=f"http://127.0.0.1:{port}/v1")
    assert isinstance(err, ConnectionFailed)
    assert "refused" in str(err) and str(port) in str(err)


@pytest.mark.parametrize("path", PATHS)
def test_malformed_stream(server: FakeLLMServer, path: str) -> None:
    err, _ = _fail(server, path, Reply(malformed=True))
    assert isinstance(err, BadResponse)


def test_error_event_mid_stream(server: FakeLLMServer) -> None:
    body = {"message": "Rate limit reached", "code": "rate_limit_exceeded"}
    err, _ = _fail(server, "direct", Reply(error_mid_stream=body))
    assert isinstance(err, RateLimited)


def test_invalid_api_base_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        chat(ChatRequest("openai/x", MESSAGES, api_base="localhost:8000"))


def test_missing_key_for_openai_itself_fails_before_any_network() -> None:
    with pytest.raises(AuthenticationFailed) as info:
        chat(ChatRequest("gpt-4o-mini", MESSAGES))
    assert "OPENAI_API_KEY" in str(info.value)


# -- retries (direct path) ----------------------------------------------------------------


def test_retries_429_and_5xx_before_the_first_byte(server: FakeLLMServer) -> None:
    server.push(
        Reply(status=429, headers={"Retry-After": "0"}), Reply(status=503), Reply(text="ok")
    )
    started = time.monotonic()
    assert chat(make(server, "direct", retries=2)).read().content == "ok"
    assert len(server.requests) == 3
    assert time.monotonic() - started < 3


def test_long_retry_after_is_reported_not_waited_for(server: FakeLLMServer) -> None:
    server.push(Reply(status=429, headers={"Retry-After": "60"}))
    started = time.monotonic()
    with pytest.raises(RateLimited) as info:
        chat(make(server, "direct", retries=2))
    assert time.monotonic() - started < 1
    assert info.value.retry_after == 60 and "60 s" in str(info.value)
    assert len(server.requests) == 1


def test_gives_up_after_the_retries(server: FakeLLMServer) -> None:
    server.default = Reply(status=500)
    with pytest.raises(ServerError):
        chat(make(server, "direct", retries=1))
    assert len(server.requests) == 2


def test_litellm_path_retries_too(server: FakeLLMServer) -> None:
    server.push(Reply(status=503), Reply(text="ok"))
    assert chat(make(server, "litellm", retries=1, api_key="sk-x")).read().content == "ok"
    assert len(server.requests) == 2


# -- interrupts --------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_interrupt_in_the_callers_loop_keeps_partial_text(server: FakeLLMServer, path: str) -> None:
    server.push(Reply(text="one two three four five six seven", chunk_size=4, chunk_delay=0.05))
    with pytest.raises(KeyboardInterrupt), chat(make(server, path, api_key="sk-x")) as stream:
        for i, _ in enumerate(stream):
            if i == 1:
                raise KeyboardInterrupt
    assert stream.partial_text == "one two "
    assert stream.interrupted and not stream.done
    assert server.disconnected.wait(5)  # the connection was closed under the server
    with pytest.raises(RuntimeError):
        _ = stream.result


@pytest.mark.parametrize("path", PATHS)
def test_sigint_while_waiting_for_data_keeps_partial_text(server: FakeLLMServer, path: str) -> None:
    server.push(Reply(text="abcdefghijkl", chunk_size=3, stall_after=2))
    stream = chat(make(server, path, api_key="sk-x"))
    assert next(stream) + next(stream) == "abcdef"
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(stream)  # blocked reading the stalled stream
    finally:
        timer.cancel()
    assert stream.interrupted and stream.partial_text == "abcdef"
    assert list(stream) == []  # closed: iteration ends


def test_close_aborts(server: FakeLLMServer) -> None:
    server.push(Reply(text="abcdefghijkl", chunk_size=3, chunk_delay=0.05))
    stream = chat(make(server, "direct"))
    assert next(stream) == "abc"
    stream.close()
    assert stream.interrupted and stream.partial_text == "abc"
    assert list(stream) == []


# -- start-up cost ------------------------------------------------------------------------


def _run_py(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


HEAVY = ("litellm", "httpx", "openai", "tiktoken")


def test_import_is_cheap() -> None:
    out = _run_py(
        "import sys, json, sessionctl.llm, sessionctl.context\n"
        "sessionctl.llm.context_window('gpt-4o')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{HEAVY!r} or m == 'http.client')))"
    )
    assert json.loads(out) == []


def test_direct_chat_in_a_fresh_process_never_imports_litellm(server: FakeLLMServer) -> None:
    server.push(Reply(text="fresh"))
    out = _run_py(
        "import sys, json\n"
        "from sessionctl.llm import chat, ChatRequest\n"
        f"r = chat(ChatRequest('openai/test-model', [{{'role': 'user', 'content': 'x'}}], "
        f"api_base={server.base_url!r})).read()\n"
        "print(json.dumps([r.content, sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{HEAVY!r})]))"
    )
    assert json.loads(out) == ["fresh", []]


OVERFLOWS: dict[str, tuple[dict[str, Any], int | None, int | None]] = {
    # llama.cpp llama-server (as measured against a real one; see docs/providers.md)
    "llama.cpp request": (
        {
            "error": {
                "code": 400,
                "type": "exceed_context_size_error",
                "message": "request (6794 tokens) exceeds the available context size "
                "(2048 tokens), try increasing it",
            }
        },
        2048,
        6794,
    ),
    "llama.cpp input": (
        {
            "error": {
                "code": 400,
                "type": "invalid_request_error",
                "message": "input (3000 tokens) is larger than the max context size "
                "(2048 tokens). skipping",
            }
        },
        2048,
        3000,
    ),
    "llama.cpp type only": (
        {"error": {"code": 400, "type": "exceed_context_size_error", "message": "too big"}},
        None,
        None,
    ),
    "vLLM": (
        {
            "object": "error",
            "message": "This model's maximum context length is 2048 tokens. However, you "
            "requested 6794 tokens (6794 in the messages, 0 in the completion). Please "
            "reduce the length of the messages or completion.",
            "type": "BadRequestError",
            "code": 400,
        },
        2048,
        6794,
    ),
    "Ollama": ({"error": "the input length exceeds the context length"}, None, None),
    "OpenAI": (
        {
            "error": {
                "message": "This model's maximum context length is 8192 tokens. However, your "
                "messages resulted in 9000 tokens. Please reduce the length of the messages.",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            }
        },
        8192,
        9000,
    ),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", sorted(OVERFLOWS))
def test_every_overflow_shape_is_the_same_error_on_both_paths(
    server: FakeLLMServer, path: str, shape: str
) -> None:
    body, window, requested = OVERFLOWS[shape]
    err, _ = _fail(server, path, Reply(status=400, error=body))
    assert isinstance(err, ContextTooLong), (shape, str(err))
    assert "too long" in str(err)
    if path == "direct":  # litellm rewrites the text; the direct path keeps the sizes
        assert (err.window, err.requested) == (window, requested)
