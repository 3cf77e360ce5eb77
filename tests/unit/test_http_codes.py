"""The problem codes are declared once (synod.codes); every layer, docs/api.md and the
served OpenAPI document agree with that declaration."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from synod import client
from synod.client import errors as client_errors
from synod.codes import CODES, Outcome, is_definite, status_of
from synod.node import api
from synod.node.problems import Problem
from synod.raft import types as raft_types
from synod.services import errors as service_errors
from tests.unit.http_helpers import async_test, serve
from tests.unit.memory_node import MemoryNode

ROOT = Path(__file__).resolve().parents[2]
CODES_SOURCE = ROOT / "node-image" / "synod" / "codes.py"
_ROW = re.compile(r"^\| `([a-z-]+)` \| (\d{3}) \| (definite|indeterminate) \| (.+) \|$")


def _documented() -> dict[str, tuple[int, str]]:
    """code -> (status, outcome) of the errors table of docs/api.md."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("## Errors", 1)[1].split("\n## ", 1)[0]
    rows = [_ROW.match(line) for line in section.splitlines() if line.startswith("| `")]
    assert all(rows), "every row of the errors table is `code` | status | outcome | when"
    found = {m[1]: (int(m[2]), m[3]) for m in rows if m}
    assert len(found) == len(rows), "a code is documented once"
    return found


def test_codes_module_is_a_leaf() -> None:
    tree = ast.parse(CODES_SOURCE.read_text())
    imported = [
        node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 0
    ] + [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
         for alias in node.names]  # fmt: skip
    assert imported and not [name for name in imported if name.startswith("synod")]


def test_docs_document_every_code_with_its_status_and_outcome() -> None:
    expected = {entry.code: (entry.status, entry.outcome.value) for entry in CODES.values()}
    assert _documented() == expected


def test_undocumented_conf_change_codes_are_declared() -> None:
    assert status_of("conf-change-pending") == status_of("conf-change-invalid") == 409
    assert raft_types.ConfChangePending.code == "conf-change-pending"
    assert raft_types.ConfChangeInvalid.code == "conf-change-invalid"


def test_no_leader_is_definite_and_outcome_unknown_is_not() -> None:
    assert is_definite("no-leader") and not is_definite("outcome-unknown")
    assert not is_definite("timeout") and not is_definite("internal")
    assert not is_definite("no-such-code")  # an unknown failure may have done anything
    assert status_of("no-leader") == status_of("outcome-unknown") == 503


def _subclasses(base: type[Any]) -> list[type[Any]]:
    found: list[type[Any]] = []
    todo = [base]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_service_and_node_errors_take_their_status_from_the_table() -> None:
    for cls in _subclasses(service_errors.ServiceError):
        assert cls.code in CODES and cls.http_status == CODES[cls.code].status, cls
    for cls in _subclasses(api.NodeError):
        assert cls.code in CODES, cls
    assert api.OutcomeUnknown("x").status == 503 and api.ChangeInvalid("x").status == 409


def test_client_maps_every_server_code_to_a_class_of_that_code_and_status() -> None:
    for entry in CODES.values():
        doc = {"type": client_errors.PROBLEM_TYPE_PREFIX + entry.code, "detail": "d"}
        error = client_errors.error_from_problem(entry.status, doc)
        assert error.status == entry.status, entry.code
        if entry.code != "internal":
            assert error.code == entry.code, entry.code
        assert error.definite == (entry.outcome is Outcome.DEFINITE), entry.code
    assert client.OutcomeUnknown.retryable


def test_problem_status_is_the_code_status() -> None:
    for entry in CODES.values():
        assert Problem(entry.code, "d").to_dict()["status"] == entry.status
    undeclared = Problem("made-up", "oops")
    assert undeclared.code == "internal" and "made-up" in undeclared.detail


@async_test
async def test_served_openapi_agrees_with_the_table() -> None:
    async with serve(MemoryNode()) as http:
        document: dict[str, Any] = await (await http.get("/v1/openapi.json")).json()
    declared = document["x-synod-problem-codes"]
    assert declared == {
        entry.code: {"status": entry.status, "title": entry.title,
                     "outcome": entry.outcome.value, "description": entry.description}
        for entry in CODES.values()
    }  # fmt: skip
    schema = document["components"]["schemas"]["Problem"]
    assert set(schema["properties"]["code"]["enum"]) == set(CODES)
    for methods in document["paths"].values():
        for operation in methods.values():
            for status, response in operation["responses"].items():
                if status == "200":
                    continue
                listed = response["description"].removeprefix("problem: ").split(", ")
                assert all(CODES[code].status == int(status) for code in listed), listed
