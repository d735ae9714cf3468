"""Usage, latency and cost recorded per answer, and `sessionctl stats` summing them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Cli
from llm_server import FakeLLMServer, Reply, llm_server

from sessionctl.service.stats import parse_since
from sessionctl.service.store import Store

__all__ = ["llm_server"]


def _last_answer(home: Path, name: str) -> dict:  # type: ignore[type-arg]
    last = Store(home).session(name).get_messages()[-1]
    return {"usage": last.usage, "model": last.model}


def test_a_priced_model_records_usage_latency_and_cost(
    cli: Cli, llm_server: FakeLLMServer, home: Path
) -> None:
    llm_server.push(
        Reply(
            text="hi there",
            usage={"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
        )
    )
    r = cli("chat", "-s", "p", "-m", "gpt-4o-mini", "--api-base", llm_server.base_url, "hi")
    assert r.exit_code == 0, r.stderr
    usage = _last_answer(home, "p")["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (1000, 100)
    assert usage["latency_s"] >= usage["ttft_s"] >= 0
    # litellm's table: gpt-4o-mini is $0.15 / $0.60 per million tokens
    assert usage["cost_usd"] == pytest.approx(1000 * 0.15e-6 + 100 * 0.6e-6)


def test_an_unknown_model_has_a_null_cost_and_stats_count_it_unknown(
    cli: Cli, llm_server: FakeLLMServer, home: Path
) -> None:
    r = cli("chat", "-s", "u", "-m", "local-thing", "--api-base", llm_server.base_url, "hi")
    assert r.exit_code == 0, r.stderr
    assert _last_answer(home, "u")["usage"]["cost_usd"] is None
    llm_server.push(Reply(usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}))
    r = cli("chat", "-s", "k", "-m", "gpt-4o-mini", "--api-base", llm_server.base_url, "hi")
    assert r.exit_code == 0, r.stderr
    r = cli("stats", "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    rows = {row["session"]: row for row in report["rows"]}
    assert rows["u"]["cost_usd"] is None and rows["u"]["cost_unknown"] == 1
    assert rows["k"]["cost_usd"] > 0 and rows["k"]["cost_unknown"] == 0
    assert report["total"]["answers"] == 2 and report["total"]["cost_unknown"] == 1
    assert report["total"]["cost_usd"] == rows["k"]["cost_usd"]
    by_model = json.loads(cli("stats", "--by", "model", "--json").stdout)
    assert {row["model"] for row in by_model["rows"]} == {"test-model-0613"}  # as answered
    one = json.loads(cli("stats", "-s", "k", "--json").stdout)
    assert [row["session"] for row in one["rows"]] == ["k"]
    assert json.loads(cli("stats", "--since", "2099-01-01", "--json").stdout)["rows"] == []
    table = cli("stats").stdout
    assert table.splitlines()[0].split()[:2] == ["session", "answers"]
    assert "total" in table


def test_bad_since_is_a_usage_error(cli: Cli) -> None:
    r = cli("stats", "--since", "yesterday")
    assert r.exit_code == 2
    assert "--since" in r.stderr and "30d" in r.stderr
    assert parse_since("2026-11-01").year == 2026
