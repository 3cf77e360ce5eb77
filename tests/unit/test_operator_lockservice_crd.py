"""The LockService CRD: structural schema, CEL rules, bounds shared with the node's
LockLimits and the operator's parser, printer columns and status conditions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from synod.services.locks import LockLimits
from synod_operator import lockservice
from synod_operator.lockservice import LockObservation, build_lock_status, parse_lockservice
from synod_operator.spec import GROUP, REPLICAS_MAX, REPLICAS_MIN
from synod_operator.status import now_utc

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "synod.dev_lockservices.yaml"
UNTYPED_MARKERS = ("x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")


def _version() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    assert crd["metadata"]["name"] == f"{lockservice.LOCKSERVICE_PLURAL}.{GROUP}"
    assert crd["spec"]["names"]["kind"] == lockservice.LOCKSERVICE_KIND
    assert crd["spec"]["scope"] == "Namespaced"
    versions = crd["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"]
    return dict(versions[0])


def _schema() -> dict[str, Any]:
    return dict(_version()["schema"]["openAPIV3Schema"])


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
    assert len(nodes) > 20
    for path, node in nodes:
        if path in ("", ".metadata"):
            continue
        assert "type" in node or any(node.get(m) for m in UNTYPED_MARKERS), path


def test_printer_columns_point_at_status_fields() -> None:
    columns = {c["name"]: c["jsonPath"] for c in _version()["additionalPrinterColumns"]}
    assert columns == {
        "Cluster": ".status.cluster",
        "Namespace": ".status.lockNamespace",
        "Ready": ".status.ready",
        "Held": ".status.locksHeld",
        "Waiters": ".status.waiters",
        "Age": ".metadata.creationTimestamp",
    }
    status = _schema()["properties"]["status"]["properties"]
    for path in columns.values():
        if path.startswith(".status."):
            assert path.removeprefix(".status.") in status, path


def test_cel_rules_cover_exactly_one_of_and_immutability() -> None:
    spec = _schema()["properties"]["spec"]
    rules = {r["rule"]: r["message"] for r in spec["x-kubernetes-validations"]}
    assert rules["has(self.clusterRef) != has(self.replicas)"].startswith("set exactly one")
    assert "odd" in rules["!has(self.replicas) || self.replicas % 2 == 1"]
    assert any("oldSelf.clusterRef" in rule and "immutable" in m for rule, m in rules.items())
    assert all(rules.values())
    ns_rules = spec["properties"]["lockNamespace"]["x-kubernetes-validations"]
    assert {r["rule"] for r in ns_rules} == {"self == oldSelf", "self != 'default'"}


def test_bounds_match_the_node_limits_and_the_parser() -> None:
    limits = LockLimits()
    props = _schema()["properties"]["spec"]["properties"]
    settings = props["settings"]["properties"]
    assert settings["lockDelayMs"]["maximum"] == limits.lock_delay_ms_max
    assert settings["locksMax"]["maximum"] == limits.locks_per_namespace_max
    assert settings["waitersPerLockMax"]["maximum"] == limits.waiters_per_lock_max
    assert props["lockNamespace"]["maxLength"] == limits.namespace_bytes_max
    assert limits.lock_delay_ms_max == lockservice.LOCK_DELAY_MS_MAX
    assert limits.locks_per_namespace_max == lockservice.LOCKS_PER_NAMESPACE_MAX
    assert limits.waiters_per_lock_max == lockservice.WAITERS_PER_LOCK_MAX
    assert limits.namespace_bytes_max == lockservice.NAMESPACE_BYTES_MAX
    assert (props["replicas"]["minimum"], props["replicas"]["maximum"]) == (
        REPLICAS_MIN,
        REPLICAS_MAX,
    )
    # The API server's defaults (all zero) are the parser's.
    defaults = {key: node["default"] for key, node in settings.items()}
    parsed = parse_lockservice("l", "ns", {"clusterRef": "c", "settings": defaults})
    assert parsed.settings == parse_lockservice("l", "ns", {"clusterRef": "c"}).settings


def test_condition_types_and_reasons_fit_the_schema() -> None:
    conditions = _schema()["properties"]["status"]["properties"]["conditions"]["items"]
    pattern = re.compile(conditions["properties"]["reason"]["pattern"])
    spec = parse_lockservice("l", "ns", {"clusterRef": "c"})
    observations = [
        LockObservation(False, False),
        LockObservation(True, False),
        LockObservation(True, True, error_code="limit-exceeded", error_detail="x"),
        LockObservation(True, True, applied=True, listing={"locks": [], "count": 0}),
    ]
    allowed = set(conditions["properties"]["type"]["enum"])
    status_props = set(_schema()["properties"]["status"]["properties"])
    for obs in observations:
        status = build_lock_status(spec, obs, generation=1, previous={}, now=now_utc())
        assert set(status) <= status_props
        for condition in status["conditions"]:
            assert condition["type"] in allowed
            assert pattern.fullmatch(condition["reason"]), condition
