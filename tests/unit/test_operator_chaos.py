"""The ChaosExperiment: CRD bounds against synod.chaos, spec parsing, the recorder,
injector and healer Jobs, and the status from the Jobs' termination messages."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from synod.chaos.faults import FAULT_TYPES, PARTITION_SHAPES, Member
from synod.chaos.recorder import CLIENTS_MAX, build_parser, spec_from_args
from synod.chaos.verdict import CHECKERS, KINDS
from synod_operator.chaos import (
    FAULTS_MAX,
    JobState,
    finished_status,
    healer_job,
    history_from_log,
    injector_job,
    injector_script,
    job_state,
    parse_chaos,
    recorder_job,
    started_status,
)
from synod_operator.spec import SpecError

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "synod.dev_chaosexperiments.yaml").read_text())
NOW = datetime.datetime(2026, 12, 1, 13, 0, tzinfo=datetime.UTC)
MEMBERS = [Member(f"kv-{i}", f"10.0.0.{i + 1}", f"uid-{i}") for i in range(3)]


def _schema() -> dict[str, Any]:
    return dict(CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_crd_bounds_and_enums_repeat_synod_chaos() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    fault = spec["faults"]["items"]["properties"]
    assert tuple(fault["shape"]["enum"]) == PARTITION_SHAPES
    assert tuple(fault["type"]["enum"]) == FAULT_TYPES
    assert spec["faults"]["maxItems"] == FAULTS_MAX
    assert tuple(spec["checkers"]["items"]["enum"]) == CHECKERS
    assert tuple(spec["workload"]["properties"]["kind"]["enum"]) == KINDS
    assert spec["workload"]["properties"]["clients"]["maximum"] == CLIENTS_MAX
    columns = [c["name"] for c in CRD["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Target", "Fault", "Verdict", "Age"]


def test_parse_defaults_and_faults() -> None:
    parsed = parse_chaos("exp", "ns", {"target": {"name": "kv"}, "faults": [
        {"type": "partition", "shape": "isolate-leader", "duration": "20s"},
        {"type": "kill", "duration": "5s", "startAfter": "1m"}]})  # fmt: skip
    assert parsed.cluster == "kv" and parsed.endpoint == "http://kv.ns.svc:2379"
    assert parsed.workload.kind == "kv" and parsed.workload.duration_s == 60.0
    assert parsed.fault_summary == "isolate-leader 20s, kill leader 5s"
    assert parsed.faults_s == 10 + 20 + 60 + 5
    locks = parse_chaos("exp", "ns", {"target": {"kind": "LockService", "name": "jobs"},
                                      "workload": {"kind": "locks"}},
                        {"spec": {}})  # fmt: skip
    assert locks.cluster == "jobs-cluster", "a LockService without clusterRef has its own"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"target": {"name": ""}}, "target"),
        ({"target": {"name": "kv"}, "workload": {"kind": "kv", "unsafe": "ignore-fencing"}},
         "unsafe"),
        ({"target": {"name": "kv"}, "faults": [{"type": "partition", "duration": "5s"}]},
         "shape"),
        ({"target": {"name": "kv"}, "faults": [{"type": "kill", "duration": "soon"}]},
         "duration"),
        ({"target": {"name": "kv"}, "checkers": ["unique-ids"]}, "checkers"),
    ],
)  # fmt: skip
def test_bad_specs_are_refused(spec: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError, match=error):
        parse_chaos("exp", "ns", spec)


def test_recorder_job_runs_the_shared_recorder_unprivileged() -> None:
    workload = {"kind": "locks", "clients": 5, "duration": "2m", "unsafe": "ignore-fencing"}
    parsed = parse_chaos("exp", "ns", {"target": {"name": "kv"}, "seed": 4, "workload": workload})
    job = recorder_job(parsed, "uid-1", "synod/node:1.2")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "synod/node:1.2"
    assert container["command"][:3] == ["python", "-m", "synod.chaos.recorder"]
    spec = spec_from_args(build_parser().parse_args(container["command"][3:]))
    assert (spec.kind, spec.clients, spec.duration_s, spec.unsafe, spec.seed) == (
        "locks", 5, 120.0, "ignore-fencing", 4)  # fmt: skip
    assert spec.prefix == "chaos/exp/", "each experiment writes its own keys"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "hostPID" not in pod
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert job["spec"]["activeDeadlineSeconds"] > 120


def test_injector_script_and_job() -> None:
    parsed = parse_chaos("exp", "ns", {"target": {"name": "kv"}, "faults": [
        {"type": "partition", "shape": "isolate-leader", "duration": "20s", "startAfter": "5s"},
        {"type": "pause", "member": "kv-2", "duration": "3s"},
        {"type": "netem", "duration": "3s", "delayMs": 100}]})  # fmt: skip
    script = injector_script(parsed, MEMBERS, "kv-1", tag="exp")
    assert script.index("sleep 5") < script.index("-s 10.0.0.2") < script.index("kill -STOP")
    assert "--datestop" in script and "synod-chaos:exp-0" in script
    assert "netem delay 100ms" in script
    job = injector_job(parsed, "u", script, image="synod/chaos-tools:x", service_account="sa")
    pod = job["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["securityContext"] == {"privileged": True}
    assert pod["containers"][0]["command"] == ["sh", "-c", script]
    with pytest.raises(SpecError, match="kv-2"):
        injector_script(parsed, MEMBERS[:2], "kv-1", tag="exp")
    with pytest.raises(SpecError, match="leader"):
        injector_script(parse_chaos("e", "ns", {"target": {"name": "kv"}, "faults": [
            {"type": "kill", "duration": "1s"}]}), MEMBERS, "", tag="e")  # fmt: skip
    healer = healer_job(parsed, "u", MEMBERS, image="i", service_account="sa")
    assert "kill -CONT" in healer["spec"]["template"]["spec"]["containers"][0]["command"][2]


def test_status_from_the_recorder_result_and_the_injector_timeline() -> None:
    parsed = parse_chaos("exp", "ns", {"target": {"name": "kv"}})
    started = started_status(parsed, NOW, injector=False)
    assert started["phase"] == "Running" and started["fault"] == "none"
    result = {"verdict": "Failed", "counts": {"acknowledged": 9}, "figures": {"run_ms": 5},
              "checkers": [{"name": "linearizability", "ok": False, "checked": 9}],
              "anomalies": [{"checker": "linearizability", "kind": "not-linearizable",
                             "message": "first offending: get"}]}  # fmt: skip
    pod = {"status": {"containerStatuses": [{"state": {"terminated": {
        "message": json.dumps(result)}}}]}}  # fmt: skip
    recorder = job_state({"status": {"failed": 1}}, [pod])
    injector = JobState(True, True, True, "2026-12-01T13:00:05Z fault halves\n"
                                          "2026-12-01T13:00:25Z healed halves\n")  # fmt: skip
    status = finished_status(parsed, recorder, injector, NOW, history_configmap_name="h")
    assert status["verdict"] == "Failed" and status["counts"] == {"acknowledged": 9}
    assert status["message"].startswith("Failed: not-linearizable: first offending")
    assert [e["event"] for e in status["timeline"]] == ["fault halves", "healed halves"]
    silent = finished_status(parsed, job_state({"status": {"failed": 1}}, []), JobState(), NOW,
                             history_configmap_name="")  # fmt: skip
    assert silent["verdict"] == "Unknown", "no result is never read as Passed"
    assert not job_state({"status": {}}, []).finished and not job_state(None, []).exists


def test_history_comes_back_from_the_recorder_log() -> None:
    data = b"\x1f\x8bhistory"
    log = "starting\nHISTORY " + base64.b64encode(data).decode() + "\nRESULT {}\n"
    assert history_from_log(log) == data
    assert history_from_log("RESULT {}") is None
    assert history_from_log("HISTORY not*base64") is None
