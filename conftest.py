"""Project-wide pytest policy: under CI a skipped test is a failure.

A test skips when something it needs is missing (helm, the envtest binaries, a kind
cluster). Locally that is a convenience; in CI it hides a broken pipeline, since
`make check` builds every such tool before pytest runs. So when the environment
variable ``CI`` is ``true`` (or ``1``), every skip -- of a test, of its setup, or of a
whole module at collection -- is reported as a failure that names the skip's reason.

This file sits at the repository root so that it applies to ``tests/`` and ``e2e/``
alike (pytest loads the conftest.py of every directory from a test up to the rootdir).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

# Values of $CI that mean "this is a CI run" (GitHub Actions and GitLab set "true").
CI_TRUE_VALUES = frozenset({"true", "1"})


def ci_forbids_skips() -> bool:
    """True when running under CI, where a skip must fail the run. Raises nothing."""
    return os.environ.get("CI", "").strip().lower() in CI_TRUE_VALUES


def _skip_reason(longrepr: Any) -> str:
    """The reason of a skip report (longrepr is (path, line, "Skipped: why"))."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport, what: str) -> None:
    """Turn the skip ``report`` into a failure naming its reason."""
    reason = _skip_reason(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"{what} was skipped under CI=true, where skips are errors "
        f"(make check must provide what it needs): {reason}"
    )
    assert report.failed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # An expected failure (xfail) is reported as skipped too, but it is not a skip.
    if report.skipped and not hasattr(report, "wasxfail") and ci_forbids_skips():
        _fail_skip(report, f"{item.nodeid} ({report.when})")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if report.skipped and ci_forbids_skips():
        _fail_skip(report, f"collecting {collector.nodeid}")
    return report
