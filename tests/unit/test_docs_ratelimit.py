"""Every Python example of docs/ratelimit.md runs against the real HTTP API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.memory_cluster import MemoryCluster, threaded

DOC = Path(__file__).resolve().parents[2] / "docs" / "ratelimit.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    with threaded(MemoryCluster()) as cluster:
        monkeypatch.setenv("SYNOD_ENDPOINTS", ",".join(cluster.urls))
        exec(compile(BLOCKS[index], f"{DOC.name}[{index}]", "exec"), {"__name__": "__doc__"})
