"""`synod demo` (what `make demo` runs) completes against real node processes."""

from __future__ import annotations

import subprocess
import sys

DEMO_WAIT_S_MAX = 120.0


def test_demo_runs_every_step_and_cleans_up() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "synod.cli.main", "demo"],
        capture_output=True,
        text=True,
        timeout=DEMO_WAIT_S_MAX,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for expected in (
        "elected node",
        "hello, synod",
        "watch saw PUT demo/config/color = blue",
        "watch saw DELETE demo/config/color",
        "demo/worker-1 is gone after",
        "the two survivors elected node",
        "(still there)",
        "all nodes stopped",
    ):
        assert expected in result.stdout, result.stdout
