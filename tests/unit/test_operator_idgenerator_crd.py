"""The IdGenerator CRD: structural schema, CEL rules, bounds and defaults shared with the
node (synod.ids.layout, IdsLimits, the SDK's StepPolicy) and the operator's parser, printer
columns and status conditions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from synod.ids import layout as node_layout
from synod.ids.segment import StepPolicy
from synod.services.ids import NAME_PATTERN, IdsLimits
from synod_operator import idgenerator
from synod_operator.idgenerator import IdObservation, build_id_status, parse_idgenerator
from synod_operator.spec import GROUP, REPLICAS_MAX, REPLICAS_MIN, SpecError
from synod_operator.status import now_utc

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "synod.dev_idgenerators.yaml"
UNTYPED_MARKERS = ("x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")


def _version() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    assert crd["metadata"]["name"] == f"{idgenerator.IDGENERATOR_PLURAL}.{GROUP}"
    assert crd["spec"]["names"]["kind"] == idgenerator.IDGENERATOR_KIND
    assert crd["spec"]["scope"] == "Namespaced"
    versions = crd["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"]
    return dict(versions[0])


def _schema() -> dict[str, Any]:
    return dict(_version()["schema"]["openAPIV3Schema"])


def _spec_props() -> dict[str, Any]:
    return dict(_schema()["properties"]["spec"]["properties"])


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
    assert len(nodes) > 30
    for path, node in nodes:
        if path in ("", ".metadata"):
            continue
        assert "type" in node or any(node.get(m) for m in UNTYPED_MARKERS), path


def test_printer_columns_point_at_existing_fields() -> None:
    columns = {c["name"]: c["jsonPath"] for c in _version()["additionalPrinterColumns"]}
    assert columns == {
        "Mode": ".spec.mode",
        "Cluster": ".status.cluster",
        "Ready": ".status.ready",
        "Workers": ".status.workersLeased",
        "HighWater": ".status.highWaterMark",
        "Age": ".metadata.creationTimestamp",
    }
    status = _schema()["properties"]["status"]["properties"]
    for path in columns.values():
        if path.startswith(".status."):
            assert path.removeprefix(".status.") in status, path
    assert "mode" in _spec_props()


def test_cel_rules_cover_cluster_choice_layout_ranges_and_immutability() -> None:
    spec = _schema()["properties"]["spec"]
    rules = {r["rule"]: r["message"] for r in spec["x-kubernetes-validations"]}
    messages = " | ".join(rules.values())
    for phrase in ("set exactly one", "uuidv7 needs no cluster", "odd", "clusterRef is immutable",
                   "storage is immutable", "layout and worker range are immutable",
                   "snowflake settings only", "segment settings only"):  # fmt: skip
        assert phrase in messages, phrase
    snowflake = _spec_props()["snowflake"]["x-kubernetes-validations"]
    assert any("<= 63" in r["rule"] for r in snowflake)
    assert sum("workerBits]" in r["rule"] for r in snowflake) == 2
    segment = _spec_props()["segment"]["x-kubernetes-validations"]
    assert any("stepInitial <= self.stepMax" in r["rule"] for r in segment)
    for name in ("mode", "generator"):
        assert _spec_props()[name]["x-kubernetes-validations"] == [
            {"rule": "self == oldSelf", "message": f"{name} is immutable"}
        ]


def test_power_of_two_table_in_the_cel_rules_is_right() -> None:
    """`[1, 2, 4, ...][self.workerBits]` stands in for 1 << workerBits (CEL has no shift)."""
    snowflake = _spec_props()["snowflake"]["x-kubernetes-validations"]
    for rule in (r["rule"] for r in snowflake if "workerBits]" in r["rule"]):
        table = [int(x) for x in re.search(r"\[([0-9, ]+)\]", rule).group(1).split(",")]  # type: ignore[union-attr]
        assert table == [1 << bits for bits in range(node_layout.WORKER_BITS_MAX + 1)]


def test_bounds_match_the_node_and_the_parser() -> None:
    props = _spec_props()
    sf = props["snowflake"]["properties"]
    assert sf["workerBits"]["maximum"] == node_layout.WORKER_BITS_MAX == idgenerator.WORKER_BITS_MAX
    assert node_layout.ID_BITS_MAX == idgenerator.ID_BITS_MAX == 63
    # Each part has at least one bit, so no part exceeds 63 - 2.
    assert sf["timeBits"]["maximum"] == sf["sequenceBits"]["maximum"] == node_layout.ID_BITS_MAX - 2
    assert sf["epochMs"]["maximum"] == node_layout.UNIX_MS_MAX - 1
    assert idgenerator.UNIX_MS_MAX == node_layout.UNIX_MS_MAX
    assert (
        sf["workerMax"]["maximum"]
        == sf["workerMin"]["maximum"]
        == 2**node_layout.WORKER_BITS_MAX - 1
    )
    default = node_layout.Layout()
    assert (sf["timeBits"]["default"], sf["workerBits"]["default"],
            sf["sequenceBits"]["default"], sf["epochMs"]["default"]) == (
        default.time_bits, default.worker_bits, default.sequence_bits, default.epoch_ms
    )  # fmt: skip
    assert sf["epochMs"]["default"] == node_layout.EPOCH_MS_DEFAULT
    limits = IdsLimits()
    seg = props["segment"]["properties"]
    for key in ("stepMin", "stepInitial", "stepMax"):
        assert seg[key]["minimum"] == limits.segment_step_min == idgenerator.SEGMENT_STEP_MIN
        assert seg[key]["maximum"] == limits.segment_step_max == idgenerator.SEGMENT_STEP_MAX
    policy = StepPolicy()
    assert (seg["stepMin"]["default"], seg["stepInitial"]["default"], seg["stepMax"]["default"],
            seg["growBelowMs"]["default"], seg["shrinkAboveMs"]["default"]) == (
        policy.step_min, policy.step_initial, policy.step_max, policy.grow_below_ms,
        policy.shrink_above_ms,
    )  # fmt: skip
    assert (
        seg["growBelowMs"]["maximum"] == seg["shrinkAboveMs"]["maximum"] == idgenerator.ADAPT_MS_MAX
    )
    generator = props["generator"]
    assert generator["maxLength"] == 128 and NAME_PATTERN.pattern.endswith("{0,127}$")
    assert NAME_PATTERN.pattern == idgenerator.GENERATOR_NAME.pattern
    assert (props["replicas"]["minimum"], props["replicas"]["maximum"]) == (
        REPLICAS_MIN,
        REPLICAS_MAX,
    )
    assert props["mode"]["enum"] == list(idgenerator.MODES)


def test_api_server_defaults_are_the_parsers() -> None:
    props = _spec_props()
    sf_defaults = {k: v["default"] for k, v in props["snowflake"]["properties"].items()
                   if "default" in v}  # fmt: skip
    seg_defaults = {k: v["default"] for k, v in props["segment"]["properties"].items()}
    bare = parse_idgenerator("g", "ns", {"clusterRef": "c"})
    filled = parse_idgenerator(
        "g", "ns", {"mode": props["mode"]["default"], "clusterRef": "c", "snowflake": sf_defaults}
    )
    assert bare == filled
    seg_bare = parse_idgenerator("g", "ns", {"mode": "segment", "clusterRef": "c"})
    seg_filled = parse_idgenerator(
        "g", "ns", {"mode": "segment", "clusterRef": "c", "segment": seg_defaults}
    )
    assert seg_bare == seg_filled


def test_largest_layouts_the_crd_allows_are_accepted_by_the_node() -> None:
    """Every split of 63 bits with worker bits at the node's maximum is a valid Layout,
    and one bit more is refused by both."""
    for time_bits in (1, 20, 63 - 16 - 1):
        sequence_bits = 63 - 16 - time_bits
        spec = {"timeBits": time_bits, "workerBits": 16, "sequenceBits": sequence_bits}
        parsed = parse_idgenerator("g", "ns", {"clusterRef": "c", "snowflake": spec})
        node_layout.Layout(time_bits=time_bits, worker_bits=16, sequence_bits=sequence_bits)
        assert parsed.snowflake.worker_max == 2**16 - 1
    with pytest.raises(ValueError, match="exceeds 63"):
        node_layout.Layout(time_bits=42, worker_bits=10, sequence_bits=12)
    with pytest.raises(SpecError, match="exceeds 63"):
        parse_idgenerator("g", "ns", {"clusterRef": "c", "snowflake": {"timeBits": 42}})


def test_condition_types_and_reasons_fit_the_schema() -> None:
    conditions = _schema()["properties"]["status"]["properties"]["conditions"]["items"]
    pattern = re.compile(conditions["properties"]["reason"]["pattern"])
    allowed = set(conditions["properties"]["type"]["enum"])
    status_props = set(_schema()["properties"]["status"]["properties"])
    listing = {"generators": [{"name": "g", "workers_leased": 1, "hwm_ms": 9}],
               "tags": [{"tag": "g", "max_id": 5}]}  # fmt: skip
    cases = [
        ({"clusterRef": "c"}, IdObservation(False, False)),
        ({"replicas": 1}, IdObservation(False, False, name_taken=True)),
        ({"clusterRef": "c"}, IdObservation(True, False)),
        ({"clusterRef": "c"}, IdObservation(True, True, error_code="already-exists")),
        ({"clusterRef": "c"}, IdObservation(True, True, applied=True, listing=listing)),
        ({"mode": "segment", "clusterRef": "c"}, IdObservation(True, True, True, listing=listing)),
        ({"mode": "uuidv7"}, IdObservation(False, False, applied=True)),
    ]
    for spec, obs in cases:
        parsed = parse_idgenerator("g", "ns", spec)
        status = build_id_status(parsed, obs, generation=1, previous={}, now=now_utc())
        assert set(status) <= status_props
        for condition in status["conditions"]:
            assert condition["type"] in allowed
            assert pattern.fullmatch(condition["reason"]), condition
