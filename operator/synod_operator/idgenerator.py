"""The IdGenerator resource (crds/synod.dev_idgenerators.yaml): pure spec parsing, the
generator definition written through the cluster's API, and the status.

The handlers (idgenerator_handlers.py) only gather inputs for these and carry out what
they return. Modes: `snowflake` writes a generator definition (`POST /v1/ids/{g}`,
idempotent for the same definition); `segment` writes nothing (a tag exists once its
first segment is taken; the step bounds are the SDK's StepPolicy settings); `uuidv7`
needs no cluster at all.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any, Final

from .attach import (
    Attachment,
    Observation,
    attachment,
    cluster_condition,
    owned_cluster,
    refusal_reason,
)
from .spec import GROUP, REPLICAS_MAX, REPLICAS_MIN, VERSION, SpecError
from .status import _condition

IDGENERATOR_PLURAL = "idgenerators"
IDGENERATOR_KIND = "IdGenerator"
IDGENERATOR_API_VERSION = f"{GROUP}/{VERSION}"
MODES: Final = ("snowflake", "segment", "uuidv7")
# The node's bounds (synod.ids.layout, synod.services.ids.IdsLimits, synod.ids.segment
# StepPolicy); the CRD repeats them and test_operator_idgenerator_crd.py checks all three.
ID_BITS_MAX = 63
WORKER_BITS_MAX = 16
UNIX_MS_MAX = 2**53  # epochs are below
EPOCH_MS_DEFAULT = 1_704_067_200_000
TIME_BITS_DEFAULT = 41
WORKER_BITS_DEFAULT = 10
SEQUENCE_BITS_DEFAULT = 12
SEGMENT_STEP_MIN = 1
SEGMENT_STEP_MAX = 10_000_000
STEP_MIN_DEFAULT = 100
STEP_INITIAL_DEFAULT = 1_000
STEP_MAX_DEFAULT = 1_000_000
GROW_BELOW_MS_DEFAULT = 15 * 60 * 1000
SHRINK_ABOVE_MS_DEFAULT = 30 * 60 * 1000
ADAPT_MS_MAX = 24 * 60 * 60 * 1000  # the CRD's bound on growBelowMs / shrinkAboveMs
GENERATOR_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class SnowflakeSettings:
    epoch_ms: int = EPOCH_MS_DEFAULT
    time_bits: int = TIME_BITS_DEFAULT
    worker_bits: int = WORKER_BITS_DEFAULT
    sequence_bits: int = SEQUENCE_BITS_DEFAULT
    worker_min: int = 0
    worker_max: int = (1 << WORKER_BITS_DEFAULT) - 1


@dataclass(frozen=True)
class SegmentSettings:
    step_min: int = STEP_MIN_DEFAULT
    step_initial: int = STEP_INITIAL_DEFAULT
    step_max: int = STEP_MAX_DEFAULT
    grow_below_ms: int = GROW_BELOW_MS_DEFAULT
    shrink_above_ms: int = SHRINK_ABOVE_MS_DEFAULT


@dataclass(frozen=True)
class IdGeneratorSpec:
    name: str
    namespace: str
    mode: str = "snowflake"
    cluster_ref: str | None = None
    replicas: int | None = None
    storage: dict[str, Any] = field(default_factory=dict)
    generator: str = ""
    snowflake: SnowflakeSettings = field(default_factory=SnowflakeSettings)
    segment: SegmentSettings = field(default_factory=SegmentSettings)

    @property
    def attachment(self) -> Attachment | None:
        """The cluster holding the generator; None for uuidv7 (no cluster)."""
        if self.mode == "uuidv7":
            return None
        return attachment(self.namespace, self.name, self.cluster_ref)


def _int(raw: dict[str, Any], key: str, default: int, minimum: int, maximum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise SpecError(f"{key} must be an integer in [{minimum}, {maximum}], got {value!r}")
    return value


def _snowflake(raw: dict[str, Any]) -> SnowflakeSettings:
    time_bits = _int(raw, "timeBits", TIME_BITS_DEFAULT, 1, ID_BITS_MAX - 2)
    worker_bits = _int(raw, "workerBits", WORKER_BITS_DEFAULT, 1, WORKER_BITS_MAX)
    sequence_bits = _int(raw, "sequenceBits", SEQUENCE_BITS_DEFAULT, 1, ID_BITS_MAX - 2)
    total = time_bits + worker_bits + sequence_bits
    if total > ID_BITS_MAX:
        raise SpecError(f"timeBits + workerBits + sequenceBits = {total} exceeds {ID_BITS_MAX}")
    worker_top = (1 << worker_bits) - 1
    worker_min = _int(raw, "workerMin", 0, 0, worker_top)
    worker_max = _int(raw, "workerMax", worker_top, 0, worker_top)
    if worker_min > worker_max:
        raise SpecError(f"workerMin {worker_min} exceeds workerMax {worker_max}")
    settings = SnowflakeSettings(
        epoch_ms=_int(raw, "epochMs", EPOCH_MS_DEFAULT, 0, UNIX_MS_MAX - 1),
        time_bits=time_bits,
        worker_bits=worker_bits,
        sequence_bits=sequence_bits,
        worker_min=worker_min,
        worker_max=worker_max,
    )
    assert settings.time_bits + settings.worker_bits + settings.sequence_bits <= ID_BITS_MAX
    assert 0 <= settings.worker_min <= settings.worker_max < 1 << settings.worker_bits
    return settings


def _segment(raw: dict[str, Any]) -> SegmentSettings:
    steps = [
        _int(raw, key, default, SEGMENT_STEP_MIN, SEGMENT_STEP_MAX)
        for key, default in (
            ("stepMin", STEP_MIN_DEFAULT),
            ("stepInitial", STEP_INITIAL_DEFAULT),
            ("stepMax", STEP_MAX_DEFAULT),
        )
    ]
    if steps != sorted(steps):
        raise SpecError(f"need stepMin <= stepInitial <= stepMax, got {steps}")
    grow = _int(raw, "growBelowMs", GROW_BELOW_MS_DEFAULT, 0, ADAPT_MS_MAX)
    shrink = _int(raw, "shrinkAboveMs", SHRINK_ABOVE_MS_DEFAULT, 0, ADAPT_MS_MAX)
    if grow > shrink:
        raise SpecError(f"need growBelowMs <= shrinkAboveMs, got {grow} > {shrink}")
    settings = SegmentSettings(steps[0], steps[1], steps[2], grow, shrink)
    assert SEGMENT_STEP_MIN <= settings.step_min <= settings.step_max <= SEGMENT_STEP_MAX
    return settings


def parse_idgenerator(name: str, namespace: str, spec: dict[str, Any]) -> IdGeneratorSpec:
    """The CRD's rules again (cluster choice per mode, layout fits 63 bits, ranges):
    SpecError."""
    assert name, "an IdGenerator has a name"
    assert namespace, "an IdGenerator is namespaced"
    mode = spec.get("mode", "snowflake")
    if mode not in MODES:
        raise SpecError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    cluster_ref = spec.get("clusterRef") or None
    replicas = spec.get("replicas")
    if mode == "uuidv7":
        if cluster_ref is not None or replicas is not None or spec.get("storage"):
            raise SpecError("uuidv7 needs no cluster (IDs are made in the client process)")
    elif (cluster_ref is None) == (replicas is None):
        raise SpecError("set exactly one of clusterRef or replicas")
    if replicas is not None and (
        isinstance(replicas, bool)
        or not isinstance(replicas, int)
        or not REPLICAS_MIN <= replicas <= REPLICAS_MAX
        or replicas % 2 == 0
    ):
        raise SpecError(f"replicas must be odd and in [1, 9], got {replicas!r}")
    if cluster_ref is not None and spec.get("storage"):
        raise SpecError("storage is only for a dedicated cluster (replicas)")
    for other in ("snowflake", "segment"):
        if spec.get(other) is not None and mode != other:
            raise SpecError(f"{other} settings only with mode {other}")
    generator = str(spec.get("generator") or name)
    if not GENERATOR_NAME.match(generator):
        raise SpecError(f"generator {generator!r} must match {GENERATOR_NAME.pattern}")
    return IdGeneratorSpec(
        name=name,
        namespace=namespace,
        mode=str(mode),
        cluster_ref=None if cluster_ref is None else str(cluster_ref),
        replicas=replicas,
        storage=dict(spec.get("storage") or {}),
        generator=generator,
        snowflake=_snowflake(dict(spec.get("snowflake") or {})),
        segment=_segment(dict(spec.get("segment") or {})),
    )


def definition_document(spec: IdGeneratorSpec) -> dict[str, Any] | None:
    """The body of `POST /v1/ids/{generator}` for a snowflake generator (the same body
    twice is a no-op; another definition under the name is refused `already-exists`);
    None for segment and uuidv7 (nothing to define)."""
    if spec.mode != "snowflake":
        return None
    s = spec.snowflake
    body = {
        "time_bits": s.time_bits,
        "worker_bits": s.worker_bits,
        "sequence_bits": s.sequence_bits,
        "epoch_ms": s.epoch_ms,
        "worker_min": s.worker_min,
        "worker_max": s.worker_max,  # explicit: the node's default is the same value
    }
    assert body["time_bits"] + body["worker_bits"] + body["sequence_bits"] <= ID_BITS_MAX
    assert body["worker_min"] <= body["worker_max"]
    return body


def dedicated_cluster_manifest(spec: IdGeneratorSpec, uid: str) -> dict[str, Any] | None:
    """The owned ConsensusCluster for an IdGenerator without clusterRef; None otherwise."""
    return owned_cluster(
        spec.attachment,
        IDGENERATOR_API_VERSION,
        IDGENERATOR_KIND,
        spec.name,
        uid,
        spec.replicas,
        spec.storage,
    )


# One reconcile's view: the Observation every service resource shares.
IdObservation = Observation


def _counts(spec: IdGeneratorSpec, listing: dict[str, Any] | None) -> dict[str, Any]:
    """workersLeased / highWaterMark from one `GET /v1/ids` (absent when not listed)."""
    if listing is None:
        return {}
    if spec.mode == "snowflake":
        generators = listing.get("generators") or []
        assert isinstance(generators, list)
        found = [g for g in generators if g.get("name") == spec.generator]
        if not found:
            return {}
        workers = int(found[0].get("workers_leased") or 0)
        assert workers >= 0
        return {"workersLeased": workers, "highWaterMark": int(found[0].get("hwm_ms") or 0)}
    tags = listing.get("tags") or []
    assert isinstance(tags, list)
    max_ids = [int(t.get("max_id") or 0) for t in tags if t.get("tag") == spec.generator]
    return {"highWaterMark": max_ids[0]} if max_ids else {}


def build_id_status(
    spec: IdGeneratorSpec,
    obs: IdObservation,
    *,
    generation: int,
    previous: dict[str, Any],
    now: datetime.datetime,
) -> dict[str, Any]:
    """The whole `.status` (conditions keep their transition times while unchanged)."""
    assert generation >= 0
    before = {c["type"]: c for c in previous.get("conditions") or [] if "type" in c}
    attach = spec.attachment
    if attach is None:
        cluster = (True, "NoClusterNeeded", "uuidv7 IDs are made in the client process")
    else:
        cluster = cluster_condition(attach, obs)
    if spec.mode != "snowflake" and cluster[0]:
        definition = (True, "NothingToDefine", f"mode {spec.mode} keeps no definition")
    elif obs.applied:
        definition = (True, "Applied", f"generator {spec.generator!r} defined")
    elif obs.error_code:
        definition = (False, refusal_reason(obs.error_code), obs.error_detail or obs.error_code)
    else:
        definition = (False, "WaitingForCluster", "the cluster is not ready")
    ready = cluster[0] and definition[0]
    conditions = [
        _condition("ClusterReady", *cluster, before, generation, now),
        _condition("DefinitionApplied", *definition, before, generation, now),
        _condition(
            "Ready",
            ready,
            "Ready" if ready else "NotReady",
            "IDs can be issued" if ready else (definition[2] if cluster[0] else cluster[2]),
            before,
            generation,
            now,
        ),
    ]
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "ready": ready,
        "mode": spec.mode,
        "generator": spec.generator,
        "conditions": conditions,
    }
    if attach is not None:
        status["cluster"] = attach.cluster
        status["endpoint"] = attach.endpoint
    status.update(_counts(spec, obs.listing) if ready else {})
    assert status["ready"] == (conditions[2]["status"] == "True")
    return status
