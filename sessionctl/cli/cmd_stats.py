"""The stats command: tokens, latency and cost summed over answers."""

from typing import Annotated, Any

import typer

from sessionctl.cli.options import ExplicitSessionOpt, StatsBy
from sessionctl.cli.registry import commands
from sessionctl.cli.state import State


@commands.command()
def stats(
    ctx: typer.Context,
    session: ExplicitSessionOpt = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only answers since: 30d, 12h, 2w, or a date (2026-11-01)."),
    ] = None,
    by: Annotated[StatsBy, typer.Option("--by", help="Group by session, model or day.")] = (
        StatsBy.session
    ),
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Sum the answers' tokens, latency and cost (USD, where litellm's table knows the model).

    Answers whose cost is unknown are counted apart, never as zero.

    Example:

        sessionctl stats --since 30d --by model
    """
    from sessionctl.service.stats import parse_since, usage_stats

    state: State = ctx.obj
    report = usage_stats(
        state.store(),
        session=session,
        since=parse_since(since) if since is not None else None,
        by=by.value,
    )
    if json_:
        state.out.json(report)
        return
    out = state.out.stdout
    head = (by.value, "answers", "in", "out", "cached", "cost_usd", "unknown", "ttft_s")
    lines = [head]
    for row in [*report["rows"], {by.value: "total", **report["total"]}]:
        lines.append(
            (
                str(row[by.value]),
                str(row["answers"]),
                str(row["input_tokens"]),
                str(row["output_tokens"]),
                str(row["cached_tokens"]),
                _cost(row["cost_usd"]),
                str(row["cost_unknown"]),
                "-" if row["mean_ttft_s"] is None else f"{row['mean_ttft_s']:.2f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line in lines:
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        out.write("  ".join(cells).rstrip() + "\n")


def _cost(value: Any) -> str:
    return "-" if value is None else f"{value:.6f}"
