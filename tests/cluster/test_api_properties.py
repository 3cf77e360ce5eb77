"""Property-based tests of the HTTP API against its own OpenAPI document (schemathesis).

A real single-member node serves `/v1/openapi.json`; schemathesis generates
requests from it (valid and invalid) and every answer must be a documented,
non-5xx response. Admin routes that would tear the member down are excluded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.cluster.harness import Cluster


@pytest.fixture(scope="module")
def node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("schemathesis")
    cluster = Cluster(root, 1)
    try:
        cluster.start_all()
        yield cluster.nodes[1].url
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def api_schema(node_url: str) -> Any:
    schema = schemathesis.openapi.from_url(f"{node_url}/v1/openapi.json")
    # Removing the only member or moving leadership away would end the test server, and
    # a generated learner address could make the node dial hosts beyond loopback.
    admin = r"^/v1/admin/(members/remove|members/add-learner|leadership/transfer)$"
    # /v1/watch is an endless stream: the watch tests cover it.
    return schema.exclude(path_regex=admin).exclude(path="/v1/watch")


def test_no_request_makes_the_node_fail(api_schema: Any, node_url: str) -> None:
    # schemathesis' pytest plugin lags behind pytest 9, so drive its strategies directly.
    tested = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check_operation(case: Any) -> None:
            case.call_and_validate(base_url=node_url, checks=[not_a_server_error])

        check_operation()
        tested += 1
    assert tested >= 15
