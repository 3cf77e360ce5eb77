"""A recorded chaos history judged by `synod.checker`, and the history's stored form.

`Recording` is what one run of `synod.chaos.recorder` observed: KV operations (for
linearizability), lock holds and fenced writes (mutual exclusion by fencing token,
token monotonicity), issued IDs (uniqueness, per-generator order), plus counts and
availability figures. `judge` runs the checkers named for the workload's kind and
returns a `Verdict` whose JSON goes to the ChaosExperiment's status: Passed, Failed
(anomalies name the first offending operations) or Unknown (a search budget ran out;
never read as Passed). Pure code: no I/O, no clock.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from synod.checker.history import Operation
from synod.checker.ids import IssuedId, check_ids
from synod.checker.linearizability import check
from synod.checker.locks import FencedWrite, LockHold, check_fenced_writes, check_locks
from synod.checker.models import Cas, Get, KvModel, Put
from synod.checker.report import Report

KINDS: Final = ("kv", "locks", "ids")
# The checkers each workload kind runs by default; a spec may name a subset.
CHECKERS_BY_KIND: Final[dict[str, tuple[str, ...]]] = {
    "kv": ("linearizability",),
    "locks": ("lock-holds", "fenced-writes"),
    "ids": ("unique-ids",),
}
CHECKERS: Final = tuple(name for names in CHECKERS_BY_KIND.values() for name in names)
# Anomalies reported per checker: the first offending operations are what a human reads.
ANOMALIES_PER_CHECKER_MAX: Final = 5
ANOMALY_CHARS_MAX: Final = 600
# Errors the recorder keeps verbatim (the rest are counted).
ERRORS_KEPT_MAX: Final = 20
# The stored history: gzip'd JSON lines; a ConfigMap holds at most 1 MiB in all.
HISTORY_BYTES_MAX_DEFAULT: Final = 900_000

PASSED: Final = "Passed"
FAILED: Final = "Failed"
UNKNOWN: Final = "Unknown"


@dataclass
class Recording:
    """What one run observed. Times: one monotone clock in nanoseconds, except
    `FencedWrite.time`, which is the cluster revision at which the resource answered."""

    kind: str
    operations: list[Operation] = field(default_factory=list)
    holds: list[LockHold] = field(default_factory=list)
    writes: list[FencedWrite] = field(default_factory=list)
    ids: list[IssuedId] = field(default_factory=list)
    acknowledged: int = 0
    unknown: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    errors_dropped: int = 0
    longest_unavailable_ms: int = 0
    run_ms: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        assert self.acknowledged >= 0 and self.unknown >= 0

    def note_error(self, message: str) -> None:
        """Keep the first ERRORS_KEPT_MAX errors verbatim, count the others."""
        assert message
        if len(self.errors) < ERRORS_KEPT_MAX:
            self.errors.append(message[:ANOMALY_CHARS_MAX])
        else:
            self.errors_dropped += 1
        assert len(self.errors) <= ERRORS_KEPT_MAX

    def counts(self) -> dict[str, int]:
        """The counts that go to status: acknowledged, unknown outcome, refused/failed."""
        recorded = len(self.operations) + len(self.holds) + len(self.writes) + len(self.ids)
        counts = {
            "recorded": recorded,
            "acknowledged": self.acknowledged,
            "unknown": self.unknown,
            "failed": self.failed,
            "errors": len(self.errors) + self.errors_dropped,
        }
        assert all(value >= 0 for value in counts.values())
        return counts


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One broken property: `checker`, a stable `kind` code and the offending records."""

    checker: str
    kind: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"checker": self.checker, "kind": self.kind, "message": self.message}


@dataclass(frozen=True, slots=True)
class CheckerVerdict:
    """One checker's answer: ok True/False, or None when its budget ran out."""

    name: str
    ok: bool | None
    checked: int
    anomalies: tuple[Anomaly, ...] = ()

    def __post_init__(self) -> None:
        assert self.name in CHECKERS, self.name
        assert self.ok is not True or not self.anomalies
        assert len(self.anomalies) <= ANOMALIES_PER_CHECKER_MAX


@dataclass(frozen=True, slots=True)
class Verdict:
    """Passed iff every checker passed; Failed if any found an anomaly; else Unknown."""

    checkers: tuple[CheckerVerdict, ...]
    counts: dict[str, int]
    figures: dict[str, int]
    errors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert self.checkers, "a verdict judges at least one checker"
        assert all(value >= 0 for value in self.counts.values())

    @property
    def verdict(self) -> str:
        """PASSED, FAILED or UNKNOWN."""
        if any(c.ok is False for c in self.checkers):
            return FAILED
        return PASSED if all(c.ok is True for c in self.checkers) else UNKNOWN

    @property
    def passed(self) -> bool:
        return self.verdict == PASSED

    @property
    def anomalies(self) -> list[Anomaly]:
        return [anomaly for checker in self.checkers for anomaly in checker.anomalies]

    @property
    def explanation(self) -> str:
        """One line per checker, then each anomaly."""
        lines = [f"{self.verdict}: {self.counts}"]
        for checker in self.checkers:
            lines.append(f"  {checker.name}: ok={checker.ok} over {checker.checked} records")
            lines += [f"    [{a.kind}] {a.message}" for a in checker.anomalies]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The status-shaped document (also the recorder's RESULT line)."""
        return {
            "verdict": self.verdict,
            "checkers": [{"name": c.name, "ok": c.ok, "checked": c.checked} for c in self.checkers],
            "counts": dict(self.counts),
            "figures": dict(self.figures),
            "anomalies": [a.to_json() for a in self.anomalies],
            "errors": list(self.errors),
        }


def judge(recording: Recording, checkers: Sequence[str] = ()) -> Verdict:
    """Run `checkers` (default: every checker of the recording's kind) over it.

    Raises ValueError for a checker that does not apply to the recording's kind."""
    names = tuple(checkers) or CHECKERS_BY_KIND[recording.kind]
    allowed = CHECKERS_BY_KIND[recording.kind]
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise ValueError(f"checkers {unknown} do not apply to a {recording.kind} workload "
                         f"(allowed: {list(allowed)})")  # fmt: skip
    verdicts = tuple(_run_checker(name, recording) for name in names)
    figures = {
        "longest_unavailable_ms": recording.longest_unavailable_ms,
        "run_ms": recording.run_ms,
    }
    verdict = Verdict(verdicts, recording.counts(), figures, tuple(recording.errors))
    assert len(verdict.checkers) == len(names)
    return verdict


def _run_checker(name: str, recording: Recording) -> CheckerVerdict:
    if name == "linearizability":
        result = check(KvModel(), recording.operations)
        anomalies: tuple[Anomaly, ...] = ()
        if result.ok is False:
            first = result.unlinearizable
            offending = f"first offending: {_describe(first)}; " if first is not None else ""
            message = (offending + result.explanation)[:ANOMALY_CHARS_MAX]
            anomalies = (Anomaly(name, "not-linearizable", message),)
        return CheckerVerdict(name, result.ok, len(recording.operations), anomalies)
    if name == "lock-holds":
        return _from_report(name, check_locks(recording.holds))
    if name == "fenced-writes":
        return _from_report(name, check_fenced_writes(recording.writes))
    assert name == "unique-ids", name
    return _from_report(name, check_ids(recording.ids))


def _from_report(name: str, report: Report) -> CheckerVerdict:
    anomalies = tuple(
        Anomaly(name, violation.kind, violation.message[:ANOMALY_CHARS_MAX])
        for violation in report.violations[:ANOMALIES_PER_CHECKER_MAX]
    )
    assert report.ok == (not report.violations and not report.violations_dropped)
    return CheckerVerdict(name, report.ok, report.checked_count, anomalies)


def _describe(operation: Operation) -> str:
    shown = "?" if operation.is_pending else repr(operation.output)
    return f"client {operation.client_id} {operation.input!r} -> {shown} " \
           f"[{operation.call_time}..{operation.return_time}]"  # fmt: skip


# -- the stored history ----------------------------------------------------------------


def history_records(recording: Recording) -> Iterator[dict[str, Any]]:
    """One JSON-able record per recorded item, in recording order per category."""
    for op in recording.operations:  # bound: operations_max of the recorder
        record: dict[str, Any] = {"type": "kv", "client": op.client_id, "call": op.call_time,
                                  "return": op.return_time}  # fmt: skip
        match op.input:
            case Put(key=key, value=value):
                record.update(op="put", key=key, value=value)
            case Get(key=key):
                record.update(op="get", key=key)
            case Cas(key=key, expected=expected, new=new):
                record.update(op="cas", key=key, expected=expected, value=new)
        if not op.is_pending:
            record["output"] = op.output
        yield record
    for hold in recording.holds:  # bound: operations_max
        yield {"type": "hold", "lock": hold.lock, "holder": hold.holder, "token": hold.token,
               "acquire": hold.acquire_time, "release": hold.release_time}  # fmt: skip
    for write in recording.writes:  # bound: operations_max
        yield {"type": "fenced-write", "lock": write.lock, "holder": write.holder,
               "token": write.token, "revision": write.time,
               "believed_held": write.believed_held, "accepted": write.accepted}  # fmt: skip
    for issued in recording.ids:  # bound: operations_max
        yield {"type": "id", "generator": issued.generator, "value": issued.value,
               "call": issued.call_time, "return": issued.return_time}  # fmt: skip


def encode_history(
    recording: Recording, bytes_max: int = HISTORY_BYTES_MAX_DEFAULT
) -> tuple[bytes, int]:
    """gzip'd JSON lines of the history, cut to fit `bytes_max` compressed bytes.

    Returns (data, records_dropped). Raises ValueError if bytes_max < 1024."""
    if bytes_max < 1024:
        raise ValueError(f"bytes_max must be >= 1024, got {bytes_max}")
    lines = [json.dumps(r, separators=(",", ":"), default=str) for r in history_records(recording)]
    keep = len(lines)
    for _halving in range(64):  # bound: halving a list of < 2**64 lines
        data = gzip.compress(("\n".join(lines[:keep]) + "\n").encode(), mtime=0)
        if len(data) <= bytes_max or keep == 0:
            break
        keep //= 2
    assert len(data) <= bytes_max or keep == 0
    return data, len(lines) - keep


def decode_history(data: bytes, records_max: int = 10_000_000) -> list[dict[str, Any]]:
    """The records of `encode_history`'s output. Raises ValueError beyond records_max or
    on data that is not gzip'd JSON lines."""
    try:
        text = gzip.decompress(data).decode()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"not a gzip'd history: {error}") from error
    lines = [line for line in text.splitlines() if line]
    if len(lines) > records_max:
        raise ValueError(f"{len(lines)} records exceed records_max={records_max}")
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) for r in records)
    return records
