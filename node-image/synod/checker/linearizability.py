"""Linearizability checking of a client history against a sequential model.

The algorithm is Wing & Gong's search with Lowe's memoisation, in the shape
porcupine uses (github.com/anishathalye/porcupine):

* every operation contributes a call entry and a return entry, sorted by time
  into a doubly linked list (operations that never returned get their return
  at +infinity, i.e. after everything);
* walking the list, a call entry is a candidate to linearize next: if the model
  accepts it from the current state and the pair (set of linearized ops,
  resulting state) was never seen, it is "lifted" out of the list (call and
  return entry both) and the walk restarts from the head;
* reaching a return entry means an operation that has already returned could
  not be linearized before it: backtrack by popping the last lifted call and
  trying the next candidate after it.

History is linearizable iff the list empties. The cache of (op set, state)
pairs stops the search from revisiting a configuration, P-compositionality
(`Model.partition`, e.g. one partition per key) keeps each search small, and
read-only operations are placed greedily (see `_Search`).

Cost: the problem is NP-complete, and the search grows exponentially with the
number of operations open at the same time within one partition. Thousands of
operations per key from up to ~10 concurrent clients check in well under a
second; a history beyond the budget gets `ok=None`, never a guess.

Times: a call and a return at the same instant count as concurrent, since ticks
cannot order them; that is the permissive (no false alarm) choice.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

from synod.checker.history import Operation

# Per partition. A few thousand well-behaved operations need tens of thousands of
# steps; millions mean the search is exploring a hard (usually buggy) history.
SEARCH_STEPS_MAX_DEFAULT: Final = 2_000_000
# Lines of linearized prefix shown in an explanation; the tail is what matters.
EXPLANATION_PREFIX_OPS_MAX: Final = 20
# Concurrent operations listed next to the one that could not be linearized.
EXPLANATION_RIVALS_MAX: Final = 5

S = TypeVar("S", bound=Hashable)


class Model(Protocol[S]):
    """A sequential specification. States must be hashable and immutable.

    Subclass it explicitly to inherit the defaults of `partition`, `describe`
    and `is_read_only`.
    """

    def init(self) -> S:
        """The state before any operation."""
        ...

    def step(self, state: S, input: object, output: object) -> tuple[bool, S]:
        """Apply `input` to `state`; return (output is allowed, next state).

        `output` is `history.PENDING` when the call never returned: then any
        output is allowed and the first element must be True for every input the
        model knows. Must not mutate `state`. May raise ValueError for an input
        the model does not know.
        """
        ...

    def partition(self, history: Sequence[Operation]) -> list[list[Operation]]:
        """Split into independently checkable sub-histories (default: one)."""
        return [list(history)]

    def describe(self, input: object, output: object) -> str:
        """A short human description of one operation, for explanations."""
        return f"{input!r} -> {output!r}"

    def is_read_only(self, input: object, output: object) -> bool:
        """True if, in every state that allows this (input, output), it keeps the state.

        Optional (default False); a True answer lets the search prune hard.
        """
        return False


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict of `check`.

    `ok` is True (linearizable), False (not linearizable: see `explanation`,
    `linearized_prefix` and `unlinearizable`), or None (the search budget ran out:
    UNKNOWN, never to be read as success). `partition_index` names the partition
    that failed, or else the first one that ran out of budget.
    """

    ok: bool | None
    explanation: str
    search_steps: int
    partitions_count: int
    partition_index: int | None = None
    linearized_prefix: tuple[Operation, ...] = ()
    unlinearizable: Operation | None = None


@dataclass(frozen=True, slots=True)
class _Outcome:
    """Result of searching one partition; operations named by their index in it."""

    ok: bool | None
    steps: int
    best_prefix: tuple[int, ...]  # longest linearizable prefix, linearization order
    stuck_op: int | None  # an operation that could not follow best_prefix


class _EntryList:
    """Call and return entries as an array-backed doubly linked list.

    Position 0 is the head sentinel and the last position the tail sentinel, so
    lifting and unlifting never test for the ends.
    """

    __slots__ = ("head", "match_of", "next_of", "op_of", "prev_of", "tail")

    def __init__(self, operations: Sequence[Operation]) -> None:
        events: list[tuple[int, int, int, int]] = []
        for op_index, op in enumerate(operations):
            events.append((0, op.call_time, 0, op_index))
            if op.return_time is None:
                events.append((1, 0, 1, op_index))  # +infinity: after every timed event
            else:
                events.append((0, op.return_time, 1, op_index))
        # Calls (kind 0) sort before returns (kind 1) at equal times: concurrent.
        events.sort()
        entries_count = len(events) + 2
        self.head: Final = 0
        self.tail: Final = entries_count - 1
        self.next_of = [position + 1 for position in range(entries_count)]
        self.prev_of = [position - 1 for position in range(entries_count)]
        self.op_of = [-1] * entries_count
        self.match_of = [-1] * entries_count
        call_position_of = [-1] * len(operations)
        for position, (_, _, kind, op_index) in enumerate(events, start=1):
            self.op_of[position] = op_index
            if kind == 0:
                call_position_of[op_index] = position
            else:
                assert call_position_of[op_index] > 0, "a call sorts before its return"
                self.match_of[call_position_of[op_index]] = position
        assert all(position > 0 for position in call_position_of)

    def lift(self, call: int) -> None:
        """Unlink a call entry and its return entry (the op is now linearized)."""
        next_of, prev_of = self.next_of, self.prev_of
        assert self.match_of[call] > call, "only call entries are lifted"
        next_of[prev_of[call]] = next_of[call]
        prev_of[next_of[call]] = prev_of[call]
        ret = self.match_of[call]
        next_of[prev_of[ret]] = next_of[ret]
        prev_of[next_of[ret]] = prev_of[ret]

    def unlift(self, call: int) -> None:
        """Relink what `lift(call)` unlinked; unlifts run in reverse lift order."""
        next_of, prev_of = self.next_of, self.prev_of
        ret = self.match_of[call]
        assert ret > call, "only call entries are unlifted"
        next_of[prev_of[ret]] = ret
        prev_of[next_of[ret]] = ret
        next_of[prev_of[call]] = call
        prev_of[next_of[call]] = call


_BACKTRACK: Final = -1  # `_Search._restart`: the current (set, state) is a dead end
_FAILED: Final = -2  # `_Search._backtrack`: nothing left to undo, no linearization
_LIFTED: Final = 0  # `_Search._try_lift` outcomes
_REJECTED: Final = 1
_SEEN: Final = 2


class _Search(Generic[S]):
    """One backtracking search over one partition; `run` may be called once.

    Beyond porcupine: read-only operations (per `Model.is_read_only`) whose output
    the current state allows are linearized at once and never reconsidered. That
    is safe because such an op, if it fits anywhere later, also fits now (it
    changes no state and every op that returned before its call is already
    linearized). It prunes the search enormously on read-heavy histories.
    """

    def __init__(self, model: Model[S], operations: Sequence[Operation], steps_max: int) -> None:
        assert steps_max >= 1
        self.model = model
        self.inputs = [op.input for op in operations]
        self.outputs = [op.effective_output for op in operations]
        self.returned = [op.return_time is not None for op in operations]
        # Tolerate duck-typed models written without the optional method.
        is_read_only = getattr(model, "is_read_only", lambda input, output: False)
        self.read_only = [bool(is_read_only(op.input, op.effective_output)) for op in operations]
        self.entries = _EntryList(operations)
        self.steps_max = steps_max
        self.steps = 0
        self.state = model.init()
        self.linearized = 0  # bit i set: operation i is in the current prefix
        # Keys (count of leading linearized ops, bits above them, state): ops are in
        # call order, so the leading run is long and the stored bits stay few.
        self.cache: set[tuple[int, int, S]] = set()
        self.lifted: list[tuple[int, S, bool]] = []  # (call entry, state before, forced)
        self.lifted_returned_count = 0  # lifted operations that returned (not pending)
        self.best_prefix: tuple[int, ...] = ()
        self.best_returned_count = -1
        self.stuck_op: int | None = None

    def run(self) -> _Outcome:
        """Search for a linearization; raises TypeError if a state is unhashable."""
        entries = self.entries
        next_of, match_of = entries.next_of, entries.match_of
        entry = self._restart()
        while self.steps < self.steps_max:  # bound: steps_max, the search budget
            if next_of[entries.head] == entries.tail:
                return _Outcome(True, self.steps, self._prefix(), None)
            self.steps += 1
            if entry == _BACKTRACK:
                entry = self._backtrack()
            elif match_of[entry] >= 0:  # A call entry: try to linearize it next.
                lift = self._try_lift(entry, False)
                entry = self._restart() if lift == _LIFTED else next_of[entry]
            else:  # A return entry: its op returned before it could be linearized.
                self._note_stuck(entries.op_of[entry])
                entry = self._backtrack()
            if entry == _FAILED:
                return _Outcome(False, self.steps, self.best_prefix, self.stuck_op)
        if next_of[entries.head] == entries.tail:
            return _Outcome(True, self.steps, self._prefix(), None)
        return _Outcome(None, self.steps, self.best_prefix, self.stuck_op)

    def _try_lift(self, call: int, forced: bool) -> int:
        """Linearize the op of `call` next if the model allows it and the result is new.

        Returns _LIFTED, _REJECTED (the model disallows it here) or _SEEN (the
        resulting (set, state) pair was explored before).
        """
        op_index = self.entries.op_of[call]
        allowed, state_next = self.model.step(
            self.state, self.inputs[op_index], self.outputs[op_index]
        )
        if not allowed:
            return _REJECTED
        linearized_next = self.linearized | (1 << op_index)
        leading_count = (~linearized_next & (linearized_next + 1)).bit_length() - 1
        key = (leading_count, linearized_next >> leading_count, state_next)
        if key in self.cache:
            return _SEEN
        assert not forced or state_next == self.state, "read-only ops keep the state"
        assert key[1] & 1 == 0, "the bit after the leading run is clear"
        self.cache.add(key)
        self.lifted.append((call, self.state, forced))
        self.lifted_returned_count += self.returned[op_index]
        self.state, self.linearized = state_next, linearized_next
        self.entries.lift(call)
        return _LIFTED

    def _restart(self) -> int:
        """After a lift: linearize allowed read-only candidates, then rescan from the head.

        Returns the entry to scan from, or _BACKTRACK when an allowed read-only
        candidate leads to an explored (hence failed) (set, state) pair.
        """
        entries = self.entries
        entry = entries.next_of[entries.head]
        # Candidates are the calls before the first return entry; the tail has match -1.
        while entries.match_of[entry] >= 0 and self.steps < self.steps_max:  # bound: steps_max
            self.steps += 1
            op_index = entries.op_of[entry]
            if not self.read_only[op_index]:
                entry = entries.next_of[entry]
                continue
            lift = self._try_lift(entry, True)
            if lift == _SEEN:
                return _BACKTRACK
            entry = entries.next_of[entries.head if lift == _LIFTED else entry]
        return entries.next_of[entries.head]

    def _backtrack(self) -> int:
        """Undo forced lifts and then one chosen lift; return where to scan, or _FAILED."""
        assert self.steps <= self.steps_max
        entries_lifted_max = len(self.lifted)
        for _ in range(entries_lifted_max):  # bound: the lifted stack's depth
            call, self.state, forced = self.lifted.pop()
            op_index = self.entries.op_of[call]
            self.linearized &= ~(1 << op_index)
            self.lifted_returned_count -= self.returned[op_index]
            self.entries.unlift(call)
            if not forced:
                return self.entries.next_of[call]
        assert not self.lifted
        return _FAILED

    def _prefix(self) -> tuple[int, ...]:
        """Operation indices of the lifted calls, in linearization order."""
        prefix = tuple(self.entries.op_of[call] for call, _, _ in self.lifted)
        assert len(set(prefix)) == len(prefix), "an operation is linearized once"
        return prefix

    def _note_stuck(self, op_index: int) -> None:
        """Remember the best prefix seen and the operation that could not follow it.

        Best: most operations that returned, then fewest pending ones, so that the
        explanation is not cluttered by pending writes the search tried early.
        """
        returned_count = self.lifted_returned_count
        assert 0 <= op_index < len(self.inputs) and 0 <= returned_count <= len(self.lifted)
        better = returned_count > self.best_returned_count or (
            returned_count == self.best_returned_count and len(self.lifted) < len(self.best_prefix)
        )
        if better:
            self.best_prefix = self._prefix()
            self.best_returned_count = returned_count
            self.stuck_op = op_index


def check(
    model: Model[S],
    history: Sequence[Operation],
    *,
    search_steps_max: int = SEARCH_STEPS_MAX_DEFAULT,
) -> CheckResult:
    """Decide whether `history` is linearizable with respect to `model`.

    `search_steps_max` bounds the search of each partition; when it runs out the
    result has `ok=None`. Partitions are searched in order until the first
    violation, past exhausted ones, so a definite violation anywhere wins over
    an exhausted budget elsewhere.

    Raises ValueError if search_steps_max < 1 or the model rejects an input as
    unknown, and TypeError if the model produces an unhashable state.
    """
    if search_steps_max < 1:
        raise ValueError(f"search_steps_max must be >= 1, got {search_steps_max}")
    # Call order keeps the cache keys small (see `_Search.cache`).
    partitions = [
        sorted(partition, key=lambda operation: operation.call_time)
        for partition in model.partition(history)
    ]
    steps_total = 0
    unknown: tuple[int, _Outcome] | None = None
    for partition_index, operations in enumerate(partitions):  # bound: len(partitions)
        outcome = _Search(model, operations, search_steps_max).run()
        assert outcome.steps <= search_steps_max
        steps_total += outcome.steps
        if outcome.ok is False:
            return _failure(model, partitions, partition_index, outcome, steps_total)
        if outcome.ok is None and unknown is None:
            unknown = (partition_index, outcome)
    if unknown is not None:
        return _unknown(model, partitions, unknown, steps_total, search_steps_max)
    explanation = (
        f"linearizable: {sum(len(p) for p in partitions)} operations in "
        f"{len(partitions)} partitions, {steps_total} search steps"
    )
    return CheckResult(True, explanation, steps_total, len(partitions))


def describe_operation(model: Model[S], operation: Operation) -> str:
    """One line for an operation: client, [call..return] interval and the model's text."""
    returned = "pending" if operation.return_time is None else str(operation.return_time)
    text = model.describe(operation.input, operation.effective_output)
    assert "\n" not in text, "descriptions are one line"
    return f"client {operation.client_id} [{operation.call_time}..{returned}] {text}"


def _failure(
    model: Model[S],
    partitions: list[list[Operation]],
    partition_index: int,
    outcome: _Outcome,
    steps_total: int,
) -> CheckResult:
    """Build the explained False verdict for a partition whose search failed."""
    operations = partitions[partition_index]
    assert outcome.ok is False and outcome.stuck_op is not None
    prefix = tuple(operations[i] for i in outcome.best_prefix)
    stuck = operations[outcome.stuck_op]
    lines = [
        f"NOT linearizable: partition {partition_index} of {len(partitions)} "
        f"({len(operations)} operations), {steps_total} search steps",
        *_prefix_lines(model, prefix),
        "this operation returned before it could be linearized after that prefix:",
        f"  {describe_operation(model, stuck)}",
        _stuck_reason(model, prefix, stuck),
        *_rival_lines(model, operations, outcome),
    ]
    return CheckResult(
        False, "\n".join(lines), steps_total, len(partitions), partition_index, prefix, stuck
    )


def _unknown(
    model: Model[S],
    partitions: list[list[Operation]],
    unknown: tuple[int, _Outcome],
    steps_total: int,
    search_steps_max: int,
) -> CheckResult:
    """Build the None verdict: the budget ran out, nothing was proven."""
    partition_index, outcome = unknown
    operations = partitions[partition_index]
    prefix = tuple(operations[i] for i in outcome.best_prefix)
    lines = [
        f"UNKNOWN (not verified): search budget search_steps_max={search_steps_max} "
        f"exhausted in partition {partition_index} of {len(partitions)} "
        f"({len(operations)} operations); raise the budget or check a shorter history",
        *_prefix_lines(model, prefix),
    ]
    return CheckResult(
        None, "\n".join(lines), steps_total, len(partitions), partition_index, prefix
    )


def _prefix_lines(model: Model[S], prefix: Sequence[Operation]) -> list[str]:
    """The tail of the longest linearized prefix, each op with the state after it."""
    lines = [f"longest linearizable prefix found: {len(prefix)} operations, in order:"]
    state = model.init()
    shown_from = max(0, len(prefix) - EXPLANATION_PREFIX_OPS_MAX)
    if shown_from > 0:
        lines.append(f"  ... {shown_from} earlier operations")
    for position, operation in enumerate(prefix):  # bound: len(prefix)
        allowed, state = model.step(state, operation.input, operation.effective_output)
        assert allowed, "the search only lifts operations the model allowed"
        if position >= shown_from:
            lines.append(
                f"  {position + 1:>5}. {describe_operation(model, operation)}  => state {state!r}"
            )
    assert len(lines) <= EXPLANATION_PREFIX_OPS_MAX + 2
    return lines


def _rival_lines(model: Model[S], operations: Sequence[Operation], outcome: _Outcome) -> list[str]:
    """Operations outside the prefix that could have been placed before the stuck one."""
    assert outcome.stuck_op is not None
    stuck = operations[outcome.stuck_op]
    placed = set(outcome.best_prefix)
    deadline = stuck.return_time
    rivals = [
        operation
        for index, operation in enumerate(operations)
        if index not in placed
        and index != outcome.stuck_op
        and (deadline is None or operation.call_time <= deadline)
    ]
    if not rivals:
        return ["no other operation could have been linearized before it"]
    lines = [f"{len(rivals)} other operations not in the prefix were called before it returned:"]
    lines += [f"  {describe_operation(model, r)}" for r in rivals[:EXPLANATION_RIVALS_MAX]]
    if len(rivals) > EXPLANATION_RIVALS_MAX:
        lines.append(f"  ... and {len(rivals) - EXPLANATION_RIVALS_MAX} more")
    assert len(lines) <= EXPLANATION_RIVALS_MAX + 2
    return lines


def _stuck_reason(model: Model[S], prefix: Sequence[Operation], stuck: Operation) -> str:
    """Say whether the model rejects the stuck op right after the prefix, or later."""
    state = model.init()
    for operation in prefix:  # bound: len(prefix)
        _, state = model.step(state, operation.input, operation.effective_output)
    allowed, _ = model.step(state, stuck.input, stuck.effective_output)
    if allowed:
        return (
            f"  (the model allows it in state {state!r}, but every way to continue after it fails)"
        )
    return f"  (the model rejects it in state {state!r}, the state after the prefix)"
