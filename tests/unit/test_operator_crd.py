"""The ConsensusCluster CRD: structural schema, CEL rules, defaults shared with the
operator's spec parser, and the chart's copy (crds/ is the single source)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from synod_operator import spec as spec_module
from synod_operator.planner import Reason
from synod_operator.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "synod.dev_consensusclusters.yaml"
CHART_CRD_DIR = ROOT / "charts" / "synod" / "crds"
UNTYPED_MARKERS = ("x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")


def _crd() -> dict[str, Any]:
    loaded = yaml.safe_load(CRD_PATH.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _version() -> dict[str, Any]:
    versions = _crd()["spec"]["versions"]
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
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_identity_and_subresources() -> None:
    crd = _crd()
    assert crd["metadata"]["name"] == f"{spec_module.PLURAL}.{spec_module.GROUP}"
    assert crd["spec"]["group"] == spec_module.GROUP
    assert crd["spec"]["names"]["kind"] == spec_module.KIND
    version = _version()
    assert version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    scale = version["subresources"]["scale"]
    assert scale["specReplicasPath"] == ".spec.replicas"
    assert scale["statusReplicasPath"] == ".status.replicas"
    assert scale["labelSelectorPath"] == ".status.selector"


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in _version()["additionalPrinterColumns"]}
    assert {"Ready", "Leader", "Term", "Age"} <= set(columns)
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    assert columns["Leader"]["jsonPath"] == ".status.leader"


def test_schema_is_structural() -> None:
    """Every node says its type (or is explicitly int-or-string / preserved)."""
    nodes = _walk(_schema(), "")
    assert len(nodes) > 50
    for path, node in nodes:
        if path in ("", ".metadata"):
            continue
        assert "type" in node or any(node.get(m) for m in UNTYPED_MARKERS), path
        # anyOf may only narrow an int-or-string; a structural schema forbids types inside.
        for alternative in node.get("anyOf") or []:
            assert node.get("x-kubernetes-int-or-string"), path
            assert set(alternative) == {"type"}, path


def test_cel_rules_cover_the_cross_field_constraints() -> None:
    rules = {
        r["rule"]: r["message"] for r in _schema()["properties"]["spec"]["x-kubernetes-validations"]
    }
    assert "self.replicas % 2 == 1" in rules
    assert "odd" in rules["self.replicas % 2 == 1"]
    election = "self.raft.electionTimeoutMs > 5 * self.raft.heartbeatIntervalMs"
    assert election in rules and "5 x" in rules[election]
    assert all(message for message in rules.values())


def test_replicas_bounds_and_defaults_match_the_parser() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    assert spec["replicas"]["minimum"] == spec_module.REPLICAS_MIN
    assert spec["replicas"]["maximum"] == spec_module.REPLICAS_MAX
    assert spec["replicas"]["default"] == spec_module.DEFAULT_REPLICAS
    assert spec["image"]["default"] == spec_module.DEFAULT_IMAGE
    assert spec["version"]["default"] == spec_module.DEFAULT_VERSION
    assert spec["imagePullPolicy"]["default"] == spec_module.DEFAULT_PULL_POLICY
    storage, raft = spec["storage"]["properties"], spec["raft"]["properties"]
    assert storage["size"]["default"] == spec_module.DEFAULT_STORAGE_SIZE
    assert raft["heartbeatIntervalMs"]["default"] == spec_module.DEFAULT_HEARTBEAT_INTERVAL_MS
    assert raft["electionTimeoutMs"]["default"] == spec_module.DEFAULT_ELECTION_TIMEOUT_MS
    assert raft["snapshotEntries"]["default"] == spec_module.DEFAULT_SNAPSHOT_ENTRIES
    monitor = spec["monitoring"]["properties"]["serviceMonitor"]["properties"]
    assert monitor["interval"]["default"] == spec_module.DEFAULT_SCRAPE_INTERVAL
    # An empty spec parsed by the operator equals what the API server would default.
    parsed = parse_spec("c", "ns", {})
    assert parsed.replicas == spec["replicas"]["default"]
    assert parsed.raft.election_timeout_ms > 5 * parsed.raft.heartbeat_interval_ms


def test_condition_reasons_fit_the_schema() -> None:
    conditions = _schema()["properties"]["status"]["properties"]["conditions"]["items"]
    pattern = re.compile(conditions["properties"]["reason"]["pattern"])
    reasons = [str(r) for r in Reason] + [f"{r}Stalled" for r in Reason]
    reasons += ["QuorumAvailable", "MemberUnhealthy", "AsExpected"]
    assert all(pattern.fullmatch(reason) for reason in reasons)
    assert set(conditions["properties"]["type"]["enum"]) == {"Available", "Progressing", "Degraded"}


def test_crds_shipped() -> None:
    """RateLimitPolicy comes with its service."""
    assert sorted(p.name for p in (ROOT / "crds").glob("*.yaml")) == [
        "synod.dev_chaosexperiments.yaml",
        CRD_PATH.name,
        "synod.dev_idgenerators.yaml",
        "synod.dev_lockservices.yaml",
        "synod.dev_ratelimitpolicies.yaml",
    ]


def test_chart_copy_is_identical() -> None:
    sources = sorted((ROOT / "crds").glob("*.yaml"))
    chart_copies = sorted(CHART_CRD_DIR.glob("*.yaml"))
    assert [p.name for p in chart_copies] == [p.name for p in sources]
    for source, copy in zip(sources, chart_copies, strict=True):
        assert copy.read_bytes() == source.read_bytes(), (
            "charts/synod/crds drifted from crds/: cp crds/*.yaml charts/synod/crds/"
        )
