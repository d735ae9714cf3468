"""The CLI's start-up: the collector's threshold is raised for a short-lived process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _threshold_after_import(before: str) -> str:
    code = "\n".join(
        [
            "import gc",
            before,
            "import sessionctl.cli.app",
            "print(gc.get_threshold(), gc.isenabled())",
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return proc.stdout.strip()


def test_the_cli_raises_the_young_generation_and_keeps_the_older_ones() -> None:
    assert _threshold_after_import("gc.set_threshold(700, 7, 9)") == "(100000, 7, 9) True"


def test_a_higher_threshold_or_a_collector_switched_off_is_left_alone() -> None:
    assert _threshold_after_import("gc.set_threshold(500000, 10, 10)") == "(500000, 10, 10) True"
    assert _threshold_after_import("gc.set_threshold(0)") == "(0, 10, 10) True"
    assert _threshold_after_import("gc.disable()") == "(100000, 10, 10) False"
