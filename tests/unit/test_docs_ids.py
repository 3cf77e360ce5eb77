"""The Python examples of docs/ids.md run (against the real HTTP API, memory cluster)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.unit.memory_cluster import MemoryCluster, threaded

DOC = Path(__file__).resolve().parents[2] / "docs" / "ids.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def test_every_python_example_runs() -> None:
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 4
    with threaded(MemoryCluster()) as cluster:
        for block in blocks:  # bound: the examples of one page
            code = block.replace("Client()", f"Client({cluster.urls!r})")
            exec(compile(code, str(DOC), "exec"), {})
