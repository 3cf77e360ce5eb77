"""docs/chaos.md: its ChaosExperiment parses as the operator parses it, its `synod chaos`
commands parse as the CLI parses them, and its fault and anomaly names are the code's.
(The example is also applied to a real apiserver in tests/controlplane/test_chaos.py.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import yaml

from synod.chaos.faults import PARTITION_SHAPES
from synod.cli.chaos import FAULTS
from synod.cli.main import cli
from synod_operator.chaos import parse_chaos

DOC = Path(__file__).resolve().parents[2] / "docs" / "chaos.md"
TEXT = DOC.read_text()


EXAMPLES = sorted((DOC.parents[1] / "charts" / "synod" / "examples").glob("chaos-*.yaml"))


def doc_experiments() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", TEXT, flags=re.S)
    docs = [yaml.safe_load(block) for block in blocks]
    return [d for d in docs if d.get("kind") == "ChaosExperiment"]


def chart_examples() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in EXAMPLES]


def test_the_chart_examples_parse() -> None:
    assert len(EXAMPLES) >= 3
    for example in chart_examples():
        target = {"spec": {}} if example["spec"]["target"]["kind"] == "LockService" else None
        parse_chaos(example["metadata"]["name"], "default", example["spec"], target)


def test_the_example_experiment_parses() -> None:
    (experiment,) = doc_experiments()
    parsed = parse_chaos(experiment["metadata"]["name"], "default", experiment["spec"])
    assert parsed.fault_summary == "isolate-leader 20s, kill leader 10s"


def test_the_cli_lines_parse() -> None:
    lines = re.findall(r"^synod chaos .*$", TEXT, flags=re.M)
    assert len(lines) >= 4
    for line in lines:
        args = shlex.split(line.split("#")[0].split("|")[0])[1:]
        assert args[0] == "chaos", line
        group = cli.commands["chaos"]
        assert isinstance(group, click.Group)
        command = group.commands[args[1]]
        command.make_context(args[1], args[2:])  # raises click.UsageError on a bad line


def test_named_faults_and_shapes_exist() -> None:
    for fault in re.findall(r"`((?:partition|kill|pause|latency)-[a-z-]+)`", TEXT):
        assert fault in FAULTS, fault
    for shape in PARTITION_SHAPES:
        assert f"`{shape}`" in TEXT, shape
