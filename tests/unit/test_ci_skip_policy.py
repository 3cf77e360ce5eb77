"""The root conftest.py turns every skip into a failure when CI=true.

Each case runs pytest in a subprocess on a scratch project whose conftest.py is a copy
of the repository's, once without CI (skips are skips) and once with CI=true.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT_CONFTEST = Path(__file__).resolve().parents[2] / "conftest.py"
PYTEST_RUN_TIMEOUT_S = 120

SKIPPING_TESTS = """
import pytest

def test_passes():
    pass

def test_skips_in_its_body():
    pytest.skip("helm not found")

@pytest.fixture
def plane():
    pytest.skip("envtest binaries not found")

def test_skips_in_a_fixture(plane):
    pass

@pytest.mark.skipif(True, reason="a skipif marker")
def test_skipif():
    pass

@pytest.mark.xfail(reason="an expected failure is not a skip", strict=True)
def test_expected_failure():
    assert False
"""

MODULE_SKIP = """
import pytest

pytest.importorskip("a_module_that_does_not_exist_anywhere")

def test_never_collected():
    pass
"""


def run_pytest(project: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", str(project)]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True,
                          timeout=PYTEST_RUN_TIMEOUT_S, check=False)  # fmt: skip


def make_project(tmp_path: Path, tests: str) -> Path:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # the scratch dir is the rootdir
    (tmp_path / "conftest.py").write_text(ROOT_CONFTEST.read_text())
    (tmp_path / "test_scratch.py").write_text(tests)
    return tmp_path


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_without_ci_skips_are_skips(tmp_path: Path, ci: str | None) -> None:
    result = run_pytest(make_project(tmp_path, SKIPPING_TESTS), ci)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 3 skipped, 1 xfailed" in result.stdout, result.stdout


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_under_ci_every_skip_fails_with_its_reason(tmp_path: Path, ci: str) -> None:
    result = run_pytest(make_project(tmp_path, SKIPPING_TESTS), ci)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "1 failed, 1 passed, 1 xfailed, 2 errors" in out, out
    assert "skipped" not in out.splitlines()[-1], out  # no skip left in the summary line
    for reason in ("helm not found", "envtest binaries not found", "a skipif marker"):
        assert "was skipped under CI=true, where skips are errors" in out and reason in out, out


def test_under_ci_a_module_level_skip_fails_collection(tmp_path: Path) -> None:
    project = make_project(tmp_path, MODULE_SKIP)
    (project / "test_other.py").write_text("def test_passes():\n    pass\n")
    quiet = run_pytest(project, None)
    assert quiet.returncode == 0 and "1 passed, 1 skipped" in quiet.stdout, quiet.stdout
    result = run_pytest(project, "true")
    assert result.returncode != 0, result.stdout
    assert "ERROR collecting" in result.stdout, result.stdout
    assert "a_module_that_does_not_exist_anywhere" in result.stdout, result.stdout
