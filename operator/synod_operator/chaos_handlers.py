"""kopf handlers for ChaosExperiment: thin shells over chaos.py (and synod.chaos).

* create/resume: read the target (its cluster, pods, IPs, leader), create the recorder
  Job and, when the chart enables the injector (``SYNOD_OPERATOR_CHAOS_INJECTOR=1``),
  the privileged injector Job; status Running;
* a timer follows the Jobs: an injector that failed gets a healer Job; when the recorder
  ended, its verdict (termination message) goes to status with an Event, its history
  (log) to the ``<name>-history`` ConfigMap. An experiment runs once: the spec is
  immutable and a finished one is left alone.

Loaded by `python -m synod_operator` next to the other handlers.
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from synod.chaos.faults import Member

from .builders import selector_string
from .chaos import (
    CHAOS_PLURAL,
    INJECTOR_IMAGE_DEFAULT,
    ChaosSpec,
    JobState,
    failed_status,
    finished_status,
    healer_job,
    history_configmap,
    history_from_log,
    injector_job,
    injector_script,
    job_name,
    job_state,
    parse_chaos,
    recorder_job,
    started_status,
)
from .handlers import CLIENTS, RETRY_DELAY_S, Logger
from .kube import KubeError, resource_path
from .spec import GROUP, VERSION, SpecError, parse_spec
from .status import now_utc

CHAOS_FOLLOW_INTERVAL_S = 5.0
INJECTOR_ENV = "SYNOD_OPERATOR_CHAOS_INJECTOR"
INJECTOR_IMAGE_ENV = "SYNOD_OPERATOR_CHAOS_IMAGE"
INJECTOR_SA_ENV = "SYNOD_OPERATOR_CHAOS_SERVICE_ACCOUNT"
LOG_BYTES_MAX = 4 * 1024 * 1024
ENDED_PHASES = ("Completed", "Failed")


def injector_enabled() -> bool:
    return os.environ.get(INJECTOR_ENV) == "1"


async def _parse(name: str, namespace: str | None, spec: kopf.Spec) -> ChaosSpec:
    if not namespace:
        raise kopf.PermanentError("a ChaosExperiment is namespaced")
    kube = CLIENTS.kube_client()
    target_doc = dict(spec).get("target") or {}
    kind = target_doc.get("kind", "ConsensusCluster")
    target = None
    if kind != "ConsensusCluster":
        target = await kube.get(kind, namespace, str(target_doc.get("name", "")))
        if target is None:
            raise kopf.TemporaryError(
                f"{kind} {target_doc.get('name')!r} not found", delay=RETRY_DELAY_S
            )
    return parse_chaos(name, namespace, dict(spec), target)


@kopf.on.create(GROUP, VERSION, CHAOS_PLURAL)
@kopf.on.resume(GROUP, VERSION, CHAOS_PLURAL)
async def start_chaos(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    status: kopf.Status,
    patch: kopf.Patch,
    body: kopf.Body,
    logger: Logger,
    **_: Any,
) -> None:
    if status.get("phase") in ("Running", *ENDED_PHASES):
        return  # runs once; the timer follows a running one
    try:
        parsed = await _parse(name, namespace, spec)
    except SpecError as error:
        patch.status.update({"phase": "Failed", "message": str(error)})
        kopf.warn(body, reason="InvalidSpec", message=str(error))
        return
    kube = CLIENTS.kube_client()
    cluster = await kube.get("ConsensusCluster", parsed.namespace, parsed.cluster)
    if cluster is None:
        raise kopf.TemporaryError(f"cluster {parsed.cluster!r} not found", delay=RETRY_DELAY_S)
    image = parse_spec(parsed.cluster, parsed.namespace, dict(cluster.get("spec") or {})).image_ref
    if parsed.faults and not injector_enabled():
        message = (
            "fault injection is disabled: install the chart with "
            "chaos.injector.enabled=true (the injector is privileged)"
        )
        patch.status.update(failed_status(parsed, message))
        kopf.warn(body, reason="InjectorDisabled", message=message)
        return
    try:
        if parsed.faults:
            members = await _members(parsed)
            leader = str((cluster.get("status") or {}).get("leader") or "")
            script = injector_script(parsed, members, leader, tag=name)
            await kube.apply(
                injector_job(
                    parsed,
                    uid,
                    script,
                    image=os.environ.get(INJECTOR_IMAGE_ENV, INJECTOR_IMAGE_DEFAULT),
                    service_account=os.environ.get(INJECTOR_SA_ENV, "default"),
                )
            )
        await kube.apply(recorder_job(parsed, uid, image))
    except SpecError as error:  # e.g. no leader yet for isolate-leader
        raise kopf.TemporaryError(str(error), delay=RETRY_DELAY_S) from error
    except KubeError as error:
        raise kopf.TemporaryError(f"creating the Jobs: {error}", delay=RETRY_DELAY_S) from error
    patch.status.update(started_status(parsed, now_utc(), injector=bool(parsed.faults)))
    kopf.info(
        body,
        reason="Started",
        message=f"{parsed.fault_summary}; {parsed.workload.kind} workload for {parsed.duration}",
    )
    logger.info("chaos experiment %s started", name)


async def _members(spec: ChaosSpec) -> list[Member]:
    pods = await CLIENTS.kube_client().list("Pod", spec.namespace, selector_string(spec.cluster))
    members = [
        Member(p["metadata"]["name"], p["status"]["podIP"], p["metadata"]["uid"])
        for p in sorted(pods, key=lambda p: p["metadata"]["name"])
        if (p.get("status") or {}).get("podIP")
    ]
    if len(members) < 2:
        raise SpecError(f"cluster {spec.cluster!r} has {len(members)} pods with an IP")
    return members


async def _job(spec: ChaosSpec, role: str) -> JobState:
    kube = CLIENTS.kube_client()
    name = job_name(spec, role)
    job = await kube.get("Job", spec.namespace, name)
    pods = await kube.list("Pod", spec.namespace, f"job-name={name}") if job else []
    return job_state(job, pods)


async def _keep_history(spec: ChaosSpec, uid: str, logger: Logger) -> str:
    """Copy the recorder's history from its log into a ConfigMap; '' if unavailable."""
    kube = CLIENTS.kube_client()
    try:
        pods = await kube.list("Pod", spec.namespace, f"job-name={job_name(spec, 'recorder')}")
        if not pods:
            return ""
        path = resource_path("Pod", spec.namespace, pods[0]["metadata"]["name"], "log")
        log = await kube.text(path, params={"limitBytes": str(LOG_BYTES_MAX)})
        data = history_from_log(log)
        if data is None:
            return ""
        made = await kube.apply(history_configmap(spec, uid, data))
        return str(made["metadata"]["name"])
    except KubeError as error:
        logger.warning("history of %s not kept: %s", spec.name, error)
        return ""


@kopf.timer(GROUP, VERSION, CHAOS_PLURAL, interval=CHAOS_FOLLOW_INTERVAL_S)
async def follow_chaos(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    status: kopf.Status,
    patch: kopf.Patch,
    body: kopf.Body,
    logger: Logger,
    **_: Any,
) -> None:
    if status.get("phase") != "Running":
        return
    try:
        parsed = await _parse(name, namespace, spec)
    except SpecError:
        return
    kube = CLIENTS.kube_client()
    recorder = await _job(parsed, "recorder")
    injector = await _job(parsed, "injector") if status.get("injectorJob") else JobState()
    if injector.failed and not status.get("healerJob"):
        members = await _members(parsed)
        image = os.environ.get(INJECTOR_IMAGE_ENV, INJECTOR_IMAGE_DEFAULT)
        account = os.environ.get(INJECTOR_SA_ENV, "default")
        await kube.apply(healer_job(parsed, uid, members, image=image, service_account=account))
        patch.status["healerJob"] = job_name(parsed, "healer")
        kopf.warn(body, reason="Healing", message="the injector did not finish; healer started")
    if not recorder.exists:
        raise kopf.TemporaryError("the recorder Job is gone", delay=RETRY_DELAY_S)
    if not recorder.finished or (injector.exists and not injector.finished):
        return
    configmap = await _keep_history(parsed, uid, logger)
    new = finished_status(parsed, recorder, injector, now_utc(), history_configmap_name=configmap)
    patch.status.update(new)
    if new["verdict"] == "Passed":
        kopf.info(body, reason="Passed", message=new["message"])
    else:
        kopf.warn(body, reason=str(new["verdict"]), message=new["message"])
