"""The ChaosExperiment resource (crds/synod.dev_chaosexperiments.yaml): pure spec parsing,
the recorder, injector and healer Jobs, and the status.

The handlers (chaos_handlers.py) gather the inputs (the target's pods, IPs and leader,
the Jobs' pods) and carry out what these return. The recorder Job runs ``python -m
synod.chaos.recorder`` from the target cluster's node image and leaves its verdict in
its termination message and its history on its log; the injector Job (privileged,
hostPID, opt-in by the chart value ``chaos.injector.enabled``) runs the shell of
`synod.chaos.faults` with nsenter + iptables; the healer Job runs the same module's
heal script when an injector did not finish.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Final

from synod.chaos import faults as planner
from synod.chaos.recorder import WorkloadSpec, parse_duration_s
from synod.chaos.verdict import CHECKERS_BY_KIND

from .attach import attachment
from .builders import CLIENT_PORT
from .spec import GROUP, VERSION, SpecError

CHAOS_PLURAL: Final = "chaosexperiments"
CHAOS_KIND: Final = "ChaosExperiment"
TARGET_KINDS: Final = ("ConsensusCluster", "LockService", "IdGenerator")
FAULTS_MAX: Final = 16
LABEL_EXPERIMENT: Final = "synod.dev/chaos-experiment"
LABEL_ROLE: Final = "synod.dev/chaos-role"
# The recorder stops on its own at the workload's duration; the Job's deadline adds room
# for the SDK's last attempts and the checkers.
RECORDER_GRACE_S: Final = 300
# Kept finished Jobs (and their pods, whose logs hold the history) for a day.
JOB_TTL_S: Final = 86_400
TIMELINE_MAX: Final = 64
INJECTOR_IMAGE_DEFAULT: Final = "synod/chaos-tools:dev"
HISTORY_KEY: Final = "history.jsonl.gz"
RESULT_PREFIX: Final = "RESULT "
HISTORY_PREFIX: Final = "HISTORY "


@dataclass(frozen=True)
class FaultSpec:
    type: str
    duration_s: int
    start_after_s: int = 10
    shape: str = ""
    member: str = ""  # pod name or "leader"; empty = the leader
    delay_ms: int = 0
    loss_percent: int = 0

    def describe(self) -> str:
        what = self.shape if self.type == "partition" else f"{self.type} {self.member or 'leader'}"
        return f"{what} {self.duration_s}s"


@dataclass(frozen=True)
class ChaosSpec:
    name: str
    namespace: str
    target_kind: str
    target_name: str
    cluster: str  # the ConsensusCluster the target lives in
    workload: WorkloadSpec
    duration: str
    faults: tuple[FaultSpec, ...] = ()
    seed: int = 0
    checkers: tuple[str, ...] = field(default=())

    @property
    def endpoint(self) -> str:
        return f"http://{self.cluster}.{self.namespace}.svc:{CLIENT_PORT}"

    @property
    def fault_summary(self) -> str:
        """The printer column: e.g. ``isolate-leader 20s, kill leader 5s``."""
        return ", ".join(f.describe() for f in self.faults) or "none"

    @property
    def faults_s(self) -> int:
        """How long the fault schedule takes, start delays included."""
        return sum(f.start_after_s + f.duration_s for f in self.faults)


def _seconds(text: str, what: str) -> int:
    try:
        return int(parse_duration_s(text))
    except ValueError as error:
        raise SpecError(f"{what}: {text!r} is not a duration") from error


def parse_chaos(
    name: str, namespace: str, spec: dict[str, Any], target: dict[str, Any] | None = None
) -> ChaosSpec:
    """Validate and default a spec (the CRD's rules again: the operator may meet objects
    created before a CRD upgrade). ``target``: the target object, for a LockService or
    IdGenerator (which cluster it lives in). Raises SpecError."""
    assert name and namespace
    target_spec = spec.get("target") or {}
    kind = target_spec.get("kind", "ConsensusCluster")
    target_name = target_spec.get("name") or ""
    if kind not in TARGET_KINDS or not target_name:
        raise SpecError(f"target must name a {' or '.join(TARGET_KINDS)}")
    cluster = target_name
    if kind != "ConsensusCluster":
        ref = ((target or {}).get("spec") or {}).get("clusterRef")
        cluster = attachment(namespace, target_name, ref).cluster
    work = spec.get("workload") or {}
    duration = str(work.get("duration", "60s"))
    faults_doc = spec.get("faults") or []
    if len(faults_doc) > FAULTS_MAX:
        raise SpecError(f"at most {FAULTS_MAX} faults")
    fault_specs = tuple(_fault(doc) for doc in faults_doc)
    kind_of_work = work.get("kind", "kv")
    checkers = tuple(spec.get("checkers") or ())
    try:
        workload = WorkloadSpec(
            kind=kind_of_work,
            clients=int(work.get("clients", 3)),
            rate_per_s=float(work.get("ratePerSecond", 0)),
            duration_s=float(_seconds(duration, "workload.duration")),
            seed=int(spec.get("seed", 0)),
            unsafe=str(work.get("unsafe", "")),
            prefix=f"chaos/{name}/",
            checkers=checkers,
        )
    except ValueError as error:
        raise SpecError(str(error)) from error
    parsed = ChaosSpec(
        name,
        namespace,
        kind,
        target_name,
        cluster,
        workload,
        duration,
        fault_specs,
        int(spec.get("seed", 0)),
        checkers,
    )
    assert len(parsed.faults) <= FAULTS_MAX
    return parsed


def _fault(doc: dict[str, Any]) -> FaultSpec:
    fault = FaultSpec(
        type=str(doc.get("type", "")),
        duration_s=_seconds(str(doc.get("duration", "")), "fault duration"),
        start_after_s=_seconds(str(doc.get("startAfter", "10s")), "startAfter"),
        shape=str(doc.get("shape", "")),
        member=str(doc.get("member", "")),
        delay_ms=int(doc.get("delayMs", 0)),
        loss_percent=int(doc.get("lossPercent", 0)),
    )
    try:  # the planner's own checks
        planner.Fault(
            fault.type,
            fault.duration_s,
            fault.start_after_s,
            fault.shape,
            fault.member,
            fault.delay_ms,
            float(fault.loss_percent),
        )
    except ValueError as error:
        raise SpecError(str(error)) from error
    return fault


# -- Jobs ---------------------------------------------------------------------------------


def _labels(spec: ChaosSpec, role: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "synod",
        "app.kubernetes.io/component": f"chaos-{role}",
        "app.kubernetes.io/managed-by": "synod-operator",
        LABEL_EXPERIMENT: spec.name,
        LABEL_ROLE: role,
    }


def job_name(spec: ChaosSpec, role: str) -> str:
    """E.g. ``exp1-recorder``; names stay within 63 characters."""
    assert role in ("recorder", "injector", "healer")
    return f"{spec.name[: 62 - len(role)]}-{role}"


def _owner(spec: ChaosSpec, uid: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": CHAOS_KIND,
            "name": spec.name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def _job(
    spec: ChaosSpec, uid: str, role: str, pod: dict[str, Any], deadline_s: int
) -> dict[str, Any]:
    labels = _labels(spec, role)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(spec, role),
            "namespace": spec.namespace,
            "labels": labels,
            "ownerReferences": _owner(spec, uid),
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_s,
            "ttlSecondsAfterFinished": JOB_TTL_S,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", **pod},
            },
        },
    }


def recorder_command(spec: ChaosSpec) -> list[str]:
    """``python -m synod.chaos.recorder ...`` for the spec's workload."""
    w = spec.workload
    command = [
        "python",
        "-m",
        "synod.chaos.recorder",
        "--endpoints",
        spec.endpoint,
        "--kind",
        w.kind,
        "--clients",
        str(w.clients),
        "--rate",
        str(int(w.rate_per_s)),
        "--duration",
        spec.duration,
        "--seed",
        str(w.seed),
        "--prefix",
        w.prefix,
        "--result-out",
        "/dev/termination-log",
        "--history-log",
    ]
    if w.unsafe:
        command += ["--unsafe", w.unsafe]
    if w.checkers:
        command += ["--checkers", ",".join(w.checkers)]
    return command


def recorder_job(spec: ChaosSpec, uid: str, image: str) -> dict[str, Any]:
    """The unprivileged recorder Job, in the target cluster's node image."""
    container = {
        "name": "recorder",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": recorder_command(spec),
        "terminationMessagePolicy": "File",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
    }
    deadline = int(spec.workload.duration_s) + RECORDER_GRACE_S
    return _job(spec, uid, "recorder", {"containers": [container]}, deadline)


def injector_script(
    spec: ChaosSpec, members: list[planner.Member], leader: str, *, tag: str
) -> str:
    """The whole schedule as one shell script (SCRIPT_PREAMBLE first). Raises SpecError
    when a fault names a member that is not there or the leader is unknown."""
    by_name = {m.name: m for m in members}
    parts = [planner.SCRIPT_PREAMBLE, ": > /dev/termination-log 2>/dev/null || true\n"]
    for index, fault in enumerate(spec.faults):  # bound: FAULTS_MAX
        parts.append(f"sleep {fault.start_after_s}\n")
        wanted = leader if fault.member in ("", "leader") else fault.member
        needs_member = fault.type != "partition" or fault.shape == "isolate-member"
        if needs_member and not wanted:
            raise SpecError(f"fault {index}: no leader known yet (the cluster's status.leader)")
        if needs_member and wanted not in by_name:
            raise SpecError(f"fault {index}: member {wanted!r} is not one of {sorted(by_name)}")
        try:
            if fault.type == "partition":
                index_of = list(by_name).index(wanted) if fault.shape == "isolate-member" else 0
                partition = planner.plan_partition(
                    fault.shape,
                    members,
                    seed=spec.seed + index,
                    leader=leader,
                    member_index=index_of,
                )
                parts.append(
                    planner.partition_script(
                        partition, members, tag=f"{tag}-{index}", duration_s=fault.duration_s
                    )
                )
            elif fault.type == "kill":
                uid = by_name[wanted].uid
                parts.append(
                    f"pid=$(pid_of {uid}) && kill -KILL $pid && log 'fault kill "
                    f"{wanted}'\nsleep {fault.duration_s}\n"
                )
            elif fault.type == "pause":
                parts.append(planner.pause_script(by_name[wanted], fault.duration_s))
            else:
                loss = float(fault.loss_percent)
                script = planner.netem_script(
                    by_name[wanted], fault.duration_s, fault.delay_ms, loss
                )
                parts.append(script)
        except ValueError as error:
            raise SpecError(f"fault {index}: {error}") from error
    parts.append("log 'schedule done'\n")
    return "".join(parts)


def _privileged_pod(service_account: str, image: str, script: str) -> dict[str, Any]:
    return {
        "hostPID": True,
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "injector",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script],
                "securityContext": {"privileged": True},
            }
        ],
    }


def injector_job(
    spec: ChaosSpec, uid: str, script: str, *, image: str, service_account: str
) -> dict[str, Any]:
    """The privileged injector Job (hostPID: it finds target pods' processes by UID)."""
    deadline = spec.faults_s + RECORDER_GRACE_S
    pod = _privileged_pod(service_account, image, script)
    return _job(spec, uid, "injector", pod, deadline)


def healer_job(
    spec: ChaosSpec,
    uid: str,
    members: list[planner.Member],
    *,
    image: str,
    service_account: str,
) -> dict[str, Any]:
    """Removes every chaos rule, netem qdisc and pause from the target's members."""
    script = planner.SCRIPT_PREAMBLE + planner.heal_script(members)
    return _job(spec, uid, "healer", _privileged_pod(service_account, image, script), 300)


# -- observations and status --------------------------------------------------------------


@dataclass(frozen=True)
class JobState:
    """A Job as the handler saw it: absent, running, succeeded or failed; with its pod's
    termination message (the recorder's verdict JSON) when it ended."""

    exists: bool = False
    finished: bool = False
    succeeded: bool = False
    message: str = ""
    failed: bool = False  # the Job says so (a deadline, a crash): heal after an injector


def job_state(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> JobState:
    if job is None:
        return JobState()
    status = job.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    succeeded = bool(status.get("succeeded")) or conditions.get("Complete") == "True"
    failed = bool(status.get("failed")) or conditions.get("Failed") == "True"
    message = ""
    for pod in pods:  # bound: backoffLimit 0, one pod
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated") or {}
            message = terminated.get("message") or message
    return JobState(True, succeeded or failed or bool(message), succeeded, message, failed)


def parse_result(message: str) -> dict[str, Any] | None:
    """The recorder's verdict JSON from its termination message, or None."""
    try:
        doc = json.loads(message)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and "verdict" in doc else None


def history_from_log(log: str) -> bytes | None:
    """The gzip'd history the recorder printed (``HISTORY <base64>``), or None."""
    import base64
    import binascii

    for line in reversed(log.splitlines()):  # bound: the log's lines
        if line.startswith(HISTORY_PREFIX):
            try:
                return base64.b64decode(line[len(HISTORY_PREFIX) :], validate=True)
            except binascii.Error:
                return None
    return None


def history_configmap(spec: ChaosSpec, uid: str, data: bytes) -> dict[str, Any]:
    import base64

    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{spec.name[:55]}-history",
            "namespace": spec.namespace,
            "labels": _labels(spec, "history"),
            "ownerReferences": _owner(spec, uid),
        },
        "binaryData": {HISTORY_KEY: base64.b64encode(data).decode()},
    }


def timeline_from_message(message: str) -> list[dict[str, str]]:
    """The injector's termination message: one ``<UTC time> <event>`` per line."""
    events = []
    for line in message.splitlines()[:TIMELINE_MAX]:  # bound: TIMELINE_MAX
        moment, _, event = line.partition(" ")
        if moment and event:
            events.append({"time": moment, "event": event})
    return events


def _ts(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def started_status(spec: ChaosSpec, now: datetime.datetime, *, injector: bool) -> dict[str, Any]:
    return {
        "phase": "Running",
        "fault": spec.fault_summary,
        "startTime": _ts(now),
        "recorderJob": job_name(spec, "recorder"),
        "injectorJob": job_name(spec, "injector") if injector else "",
        "message": f"recording {spec.workload.kind} against {spec.cluster} for {spec.duration}",
    }


def failed_status(spec: ChaosSpec, message: str) -> dict[str, Any]:
    """Could not run at all (no verdict)."""
    return {"phase": "Failed", "fault": spec.fault_summary, "message": message[:1000]}


def finished_status(
    spec: ChaosSpec,
    recorder: JobState,
    injector: JobState,
    now: datetime.datetime,
    *,
    history_configmap_name: str,
) -> dict[str, Any]:
    """The verdict from the recorder's result (Unknown when it left none)."""
    assert recorder.finished
    result = parse_result(recorder.message)
    status: dict[str, Any] = {
        "phase": "Completed",
        "completionTime": _ts(now),
        "historyConfigMap": history_configmap_name,
        "timeline": timeline_from_message(injector.message),
    }
    if result is None:
        status.update(
            verdict="Unknown",
            message="the recorder left no verdict "
            f"(its Job {'succeeded' if recorder.succeeded else 'failed'})",
        )
        return status
    status.update(
        verdict=str(result["verdict"]),
        counts={k: int(v) for k, v in (result.get("counts") or {}).items()},
        figures={k: int(v) for k, v in (result.get("figures") or {}).items()},
        checkers=list(result.get("checkers") or []),
        anomalies=list(result.get("anomalies") or [])[:10],
    )
    anomalies = status["anomalies"]
    status["message"] = (
        f"{status['verdict']}: {anomalies[0]['kind']}: {anomalies[0]['message'][:300]}"
        if anomalies
        else f"{status['verdict']}: {status['counts']}"
    )
    assert status["verdict"] in ("Passed", "Failed", "Unknown")
    return status


def checkers_for(kind: str) -> tuple[str, ...]:
    return CHECKERS_BY_KIND[kind]
