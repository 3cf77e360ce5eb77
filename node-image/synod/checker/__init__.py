"""History checkers: linearizability (KV, register), locks and fencing, unique ids.

Pure code over recorded client histories; used by the deterministic simulator,
the process-cluster tests and the chaos jobs alike.
"""

from synod.checker.history import (
    PENDING,
    HistoryError,
    HistoryFullError,
    HistoryRecorder,
    Operation,
)
from synod.checker.ids import IssuedId, TakenSegment, check_ids, check_segments
from synod.checker.linearizability import CheckResult, Model, check
from synod.checker.locks import LockHold, check_locks
from synod.checker.models import (
    Cas,
    CompareAndSet,
    Delete,
    Get,
    KvModel,
    Put,
    Read,
    RegisterModel,
    Write,
)
from synod.checker.report import Report, Violation

__all__ = [
    "PENDING",
    "Cas",
    "CheckResult",
    "CompareAndSet",
    "Delete",
    "Get",
    "HistoryError",
    "HistoryFullError",
    "HistoryRecorder",
    "IssuedId",
    "KvModel",
    "LockHold",
    "Model",
    "Operation",
    "Put",
    "Read",
    "RegisterModel",
    "Report",
    "TakenSegment",
    "Violation",
    "Write",
    "check",
    "check_ids",
    "check_locks",
    "check_segments",
]
