"""The RateLimitPolicy CRD: structural schema, nested levels spelled out alike, CEL rules,
bounds and enums shared with the node's policy parser, defaults equal to the operator's,
printer columns and status conditions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from synod.ratelimit.algorithms import (
    CONCURRENCY_REQUESTS_MAX,
    REQUESTS_PER_UNIT_MAX,
    SLIDING_LOG_REQUESTS_MAX,
    Algorithm,
)
from synod.ratelimit.policy import QUOTA_VALID_MS_MAX, UNITS_MS, Consistency, PolicyLimits
from synod_operator import ratelimitpolicy as rlp
from synod_operator.ratelimitpolicy import (
    RateLimitObservation,
    build_ratelimit_status,
    parse_ratelimitpolicy,
    policy_document,
)
from synod_operator.spec import GROUP, REPLICAS_MAX, REPLICAS_MIN, SpecError
from synod_operator.status import now_utc

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "synod.dev_ratelimitpolicies.yaml"
UNTYPED_MARKERS = ("x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")


def _version() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    assert crd["metadata"]["name"] == f"{rlp.RATELIMITPOLICY_PLURAL}.{GROUP}"
    assert crd["spec"]["names"]["kind"] == rlp.RATELIMITPOLICY_KIND
    assert crd["spec"]["scope"] == "Namespaced"
    versions = crd["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"]
    return dict(versions[0])


def _schema() -> dict[str, Any]:
    return dict(_version()["schema"]["openAPIV3Schema"])


def _spec() -> dict[str, Any]:
    return dict(_schema()["properties"]["spec"])


def _levels() -> list[dict[str, Any]]:
    """The rule schema of every nesting level, outermost first."""
    levels, node = [], _spec()["properties"]["descriptors"]
    while node is not None:  # bound: the CRD's depth
        levels.append(node["items"])
        node = node["items"]["properties"].get("descriptors")
        assert len(levels) <= PolicyLimits().entries_per_descriptor_max
    return levels


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for key, child in (node.get("properties") or {}).items():
        found += _walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        found += _walk(node["items"], f"{path}[]")
    return found


def test_schema_is_structural_with_a_status_subresource() -> None:
    assert _version()["subresources"] == {"status": {}}
    nodes = _walk(_schema(), "")
    assert len(nodes) > 60
    for path, node in nodes:
        if path in ("", ".metadata"):
            continue
        assert "type" in node or any(node.get(m) for m in UNTYPED_MARKERS), path


def test_nested_levels_are_spelled_out_alike_to_the_depth() -> None:
    levels = _levels()
    assert len(levels) == rlp.DESCRIPTOR_DEPTH_MAX
    deepest = levels[-1]
    for level in levels[:-1]:
        props = dict(level["properties"])
        nested = props.pop("descriptors")
        assert nested["maxItems"] == rlp.NESTED_RULES_MAX
        assert {**level, "properties": props} == deepest
    assert _spec()["properties"]["descriptors"]["maxItems"] == rlp.RULES_MAX


def test_printer_columns_point_at_status_fields() -> None:
    columns = {c["name"]: c["jsonPath"] for c in _version()["additionalPrinterColumns"]}
    assert columns == {
        "Domain": ".status.domain",
        "Cluster": ".status.cluster",
        "Ready": ".status.ready",
        "Rules": ".status.rules",
        "Ring": ".status.ringMembers",
        "Applied": ".status.applied",
        "Generation": ".status.policyGeneration",
        "Age": ".metadata.creationTimestamp",
    }
    status = _schema()["properties"]["status"]["properties"]
    for path in columns.values():
        if path.startswith(".status."):
            assert path.removeprefix(".status.") in status, path


def test_cel_rules_cover_exactly_one_of_and_immutability() -> None:
    rules = {r["rule"]: r["message"] for r in _spec()["x-kubernetes-validations"]}
    assert rules["has(self.clusterRef) != has(self.replicas)"].startswith("set exactly one")
    assert "odd" in rules["!has(self.replicas) || self.replicas % 2 == 1"]
    for field in ("clusterRef", "domain"):
        assert any(f"oldSelf.{field}" in rule and "immutable" in m for rule, m in rules.items())


def test_bounds_and_enums_are_the_nodes() -> None:
    limits = PolicyLimits()
    props = _spec()["properties"]
    assert (props["replicas"]["minimum"], props["replicas"]["maximum"]) == (
        REPLICAS_MIN, REPLICAS_MAX)  # fmt: skip
    assert props["domain"]["maxLength"] == limits.name_bytes_max
    assert limits.rules_per_policy_max == rlp.RULES_MAX
    for level in _levels():
        rule = level["properties"]
        assert rule["key"]["maxLength"] == limits.key_bytes_max
        assert rule["value"]["maxLength"] == limits.value_bytes_max
        limit = rule["rateLimit"]["properties"]
        assert limit["unit"]["enum"] == list(UNITS_MS)
        assert limit["algorithm"]["enum"] == [str(a) for a in Algorithm]
        assert limit["consistency"]["enum"] == [str(c) for c in Consistency]
        assert limit["requestsPerUnit"]["maximum"] == REQUESTS_PER_UNIT_MAX
        assert limit["burst"]["maximum"] == REQUESTS_PER_UNIT_MAX
        assert limit["quotaValidMs"]["maximum"] == QUOTA_VALID_MS_MAX
        assert limit["name"]["maxLength"] == limits.name_bytes_max
        rules = " ".join(r["rule"] for r in rule["rateLimit"]["x-kubernetes-validations"])
        assert f"<= {SLIDING_LOG_REQUESTS_MAX}" in rules
        assert f"<= {CONCURRENCY_REQUESTS_MAX}" in rules


def test_api_server_defaults_are_the_parsers() -> None:
    limit = _levels()[0]["properties"]["rateLimit"]["properties"]
    defaults = {key: node["default"] for key, node in limit.items() if "default" in node}
    assert defaults == {"algorithm": rlp.ALGORITHM_DEFAULT, "burst": 0,
                        "consistency": rlp.CONSISTENCY_DEFAULT, "quotaRequests": 0,
                        "quotaValidMs": 0}  # fmt: skip
    bare = {"unit": "second", "requestsPerUnit": 3}
    parsed = [
        parse_ratelimitpolicy("a", "n", {"clusterRef": "c", "descriptors": [
            {"key": "k", "rateLimit": given}]})
        for given in (bare, bare | defaults)
    ]  # fmt: skip
    assert policy_document(parsed[0]) == policy_document(parsed[1])


# One rateLimit breaking each CEL rule of the CRD: the operator's parser (the node's) refuses
# it too, so a resource that got past an older CRD still cannot reach the cluster.
CEL_BREAKERS = {
    "burst applies to token_bucket and gcra only": {"algorithm": "fixed_window", "burst": 5},
    "concurrency limits cannot be global": {"algorithm": "concurrency", "consistency": "global"},
    "sliding_log allows at most": {"algorithm": "sliding_log", "requestsPerUnit": 10_001},
    "concurrency allows at most": {"algorithm": "concurrency", "requestsPerUnit": 100_001},
    "quotaRequests and quotaValidMs go together": {"quotaRequests": 1},
    "quotaRequests must not exceed requestsPerUnit": {"quotaRequests": 11, "quotaValidMs": 1},
    "concurrency limits grant no quota": {"algorithm": "concurrency", "quotaRequests": 1,
                                          "quotaValidMs": 1},
}  # fmt: skip


def test_every_rate_limit_cel_rule_is_also_the_parsers() -> None:
    messages = [r["message"] for r in _levels()[0]["properties"]["rateLimit"][
        "x-kubernetes-validations"]]  # fmt: skip
    assert len(messages) == len(CEL_BREAKERS)
    for message in messages:
        [breaker] = [b for prefix, b in CEL_BREAKERS.items() if message.startswith(prefix)]
        limit = {"unit": "second", "requestsPerUnit": 10} | breaker
        with pytest.raises(SpecError):
            parse_ratelimitpolicy("a", "n", {"clusterRef": "c", "descriptors": [
                {"key": "k", "rateLimit": limit}]})  # fmt: skip


def test_condition_types_and_reasons_fit_the_schema() -> None:
    status_schema = _schema()["properties"]["status"]["properties"]
    conditions = status_schema["conditions"]["items"]
    pattern = re.compile(conditions["properties"]["reason"]["pattern"])
    spec = parse_ratelimitpolicy("l", "ns", {"clusterRef": "c"})
    member = {"generation": 1, "ring_source": "raft", "ring": [{"name": "1"}]}
    members = [{"url": "u", "status": member}, {"url": "v", "status": None}]
    listing = {"policy": None, "generation": 1, "members": members}
    observations = [
        RateLimitObservation(False, False),
        RateLimitObservation(False, False, name_taken=True),
        RateLimitObservation(True, False),
        RateLimitObservation(True, True, error_code="invalid-argument", error_detail="x"),
        RateLimitObservation(True, True, applied=True, listing=listing),
    ]
    allowed = set(conditions["properties"]["type"]["enum"])
    for obs in observations:
        status = build_ratelimit_status(spec, obs, generation=1, previous={}, now=now_utc())
        assert set(status) <= set(status_schema)
        for condition in status["conditions"]:
            assert condition["type"] in allowed
            assert pattern.fullmatch(condition["reason"]), condition


def test_doc_examples_parse_and_make_node_policies() -> None:
    """The YAML examples of the docs (the API server accepts them too: see
    tests/controlplane/test_ratelimitpolicy.py)."""
    examples = [
        doc
        for name in ("ratelimit.md", "operator.md")
        for block in re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / name).read_text(), re.S)
        for doc in [yaml.safe_load(block)]
        if isinstance(doc, dict) and doc.get("kind") == rlp.RATELIMITPOLICY_KIND
    ]
    assert len(examples) == 2
    for example in examples:
        parsed = parse_ratelimitpolicy(example["metadata"]["name"], "ns", example["spec"])
        assert parsed.rules >= 2 and policy_document(parsed)["domain"] == "api"
