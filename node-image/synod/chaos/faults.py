"""The fault planner: pure code deciding which packets to drop for which partition
shape, and the shell the privileged injector runs inside each target's network
namespace (``nsenter --net``), as ``make e2e-smoke`` proved on kind.

Partitions are sets of blocked directed links ``src -> dst``: ``dst`` drops every
packet whose source is ``src``'s IP (one iptables rule in ``dst``'s namespace; that also
cuts the replies of connections ``dst`` opens to ``src``, so a symmetric cut is the two
directions). Shapes (Jepsen's nemeses):

* ``isolate-member``: one member (by index) cut from every other;
* ``isolate-leader``: the same for the leader the caller names;
* ``halves``: a seeded random minority cut from the majority;
* ``one-way``: the minority receives nothing from the majority, the majority still
  hears the minority (an asymmetric link);
* ``bridge``: two halves that both still see one bridge member (Jepsen's bridge: the
  bridge can be elected by both sides' votes);
* ``ring``: every member sees only its two neighbours on a seeded ring (a majority
  each, but no two members agree on which).

**Healing without the injector.** Every rule carries its own expiry, enforced by the
kernel inside the target namespace: ``-m time --datestop`` (UTC) makes it inert once the
fault's time is over, even if the injector died mid-fault; the injector's heal (and the
next run, and the operator's healer Job) deletes the dead rules. **Idempotence**
(chaos-mesh#763, duplicated rules that outlived their fault): rules live in their own
chain ``SYNOD-CHAOS``; applying deletes every copy of a rule before inserting it once,
and the jump from INPUT is likewise kept to exactly one.
"""

from __future__ import annotations

import random
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

CHAIN: Final = "SYNOD-CHAOS"
COMMENT_PREFIX: Final = "synod-chaos"
PARTITION_SHAPES: Final = ("isolate-member", "isolate-leader", "halves", "one-way", "bridge",
                           "ring")  # fmt: skip
FAULT_TYPES: Final = ("partition", "kill", "pause", "netem")
MEMBERS_MAX: Final = 9  # a ConsensusCluster's largest size (REPLICAS_MAX)
FAULT_S_MAX: Final = 3600  # the longest single fault
# A rule deleted this many times in a row has no copy left (bounds the delete loop).
DUPLICATES_MAX: Final = 64
# Pseudo-command of `apply_commands`: delete every chain rule with this source.
PURGE_SOURCE: Final = "--purge-source"


@dataclass(frozen=True, slots=True)
class Member:
    """A target pod: name, pod IP and pod UID (the injector finds its PID by UID)."""

    name: str
    ip: str
    uid: str = ""


@dataclass(frozen=True, slots=True)
class Partition:
    """Blocked directed links (src name, dst name) and the groups, for the timeline."""

    shape: str
    blocked: frozenset[tuple[str, str]]
    groups: tuple[tuple[str, ...], ...]

    def describe(self) -> str:
        """E.g. ``halves [a] | [b c]``."""
        return f"{self.shape} " + " | ".join("[" + " ".join(g) + "]" for g in self.groups)


def plan_partition(
    shape: str,
    members: Sequence[Member],
    *,
    seed: int = 0,
    leader: str = "",
    member_index: int = 0,
) -> Partition:
    """The blocked links of ``shape`` over ``members`` (seeded where the shape chooses).

    Raises ValueError for an unknown shape, fewer than 2 (bridge: 3) or more than
    MEMBERS_MAX members, duplicate names, an unknown leader or a bad member index."""
    names = [m.name for m in members]
    if shape not in PARTITION_SHAPES:
        raise ValueError(f"shape must be one of {PARTITION_SHAPES}, got {shape!r}")
    if not 2 <= len(names) <= MEMBERS_MAX or len(set(names)) != len(names):
        raise ValueError(f"a partition needs 2..{MEMBERS_MAX} distinct members, got {names}")
    rng = random.Random(seed)
    if shape in ("isolate-member", "isolate-leader"):
        if shape == "isolate-leader" and leader not in names:
            raise ValueError(f"leader {leader!r} is not a member of {names}")
        if shape == "isolate-member" and not 0 <= member_index < len(names):
            raise ValueError(f"member index {member_index} not in [0, {len(names)})")
        alone = leader if shape == "isolate-leader" else names[member_index]
        rest = tuple(n for n in names if n != alone)
        return _cut(shape, (alone,), rest, both_ways=True)
    shuffled = names[:]
    rng.shuffle(shuffled)
    minority, majority = tuple(shuffled[: len(names) // 2]), tuple(shuffled[len(names) // 2 :])
    if shape == "halves":
        return _cut(shape, minority, majority, both_ways=True)
    if shape == "one-way":
        blocked = frozenset((src, dst) for src in majority for dst in minority)
        return Partition(shape, blocked, (minority, majority))
    if shape == "bridge":
        if len(names) < 3:
            raise ValueError("a bridge needs at least 3 members")
        bridge, others = shuffled[0], shuffled[1:]
        left, right = tuple(others[: len(others) // 2]), tuple(others[len(others) // 2 :])
        cut = _cut(shape, left, right, both_ways=True)
        return Partition(shape, cut.blocked, (left, (bridge,), right))
    assert shape == "ring"
    count = len(shuffled)
    neighbours = {n: {shuffled[(i - 1) % count], shuffled[(i + 1) % count], n}
                  for i, n in enumerate(shuffled)}  # fmt: skip
    blocked = frozenset((a, b) for a in names for b in names if b not in neighbours[a])
    assert all((b, a) in blocked for a, b in blocked), "a ring cut is symmetric"
    return Partition(shape, blocked, (tuple(shuffled),))


def _cut(shape: str, one: tuple[str, ...], other: tuple[str, ...], *, both_ways: bool) -> Partition:
    blocked = {(src, dst) for src in other for dst in one}
    if both_ways:
        blocked |= {(src, dst) for src in one for dst in other}
    assert not any(src == dst for src, dst in blocked)
    return Partition(shape, frozenset(blocked), (one, other))


# -- rules --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One DROP in ``member``'s namespace of packets from ``source_ip``, inert after
    ``expires`` (UTC ``YYYY-MM-DDThh:mm:ss``, or a shell expression the injector
    expands, e.g. ``$EXPIRES``)."""

    member: str
    source_ip: str
    tag: str
    expires: str

    def spec(self) -> list[str]:
        """The rule's iptables match and target (after ``-A/-D/-C CHAIN``)."""
        return ["-s", self.source_ip, "-m", "time", "--datestop", self.expires,
                "-m", "comment", "--comment", f"{COMMENT_PREFIX}:{self.tag}",
                "-j", "DROP"]  # fmt: skip


def partition_rules(
    partition: Partition, members: Sequence[Member], *, tag: str, expires: str
) -> dict[str, list[Rule]]:
    """The rules per member name (members without rules are absent), sorted for a stable
    script. Raises ValueError for a blocked link naming an unknown member or a bad tag."""
    if not tag or any(c.isspace() or c in "'\"" for c in tag):
        raise ValueError(f"tag must be a non-empty word, got {tag!r}")
    ips = {m.name: m.ip for m in members}
    unknown = {n for link in partition.blocked for n in link if n not in ips}
    if unknown:
        raise ValueError(f"blocked links name unknown members {sorted(unknown)}")
    rules: dict[str, list[Rule]] = {}
    for src, dst in sorted(partition.blocked):  # bound: MEMBERS_MAX**2
        rules.setdefault(dst, []).append(Rule(dst, ips[src], tag, expires))
    assert sum(len(r) for r in rules.values()) == len(partition.blocked)
    return rules


def apply_commands(rules: Sequence[Rule]) -> list[list[str]]:
    """iptables commands (one namespace) that leave exactly one copy of each rule and
    one jump from INPUT, whatever was there before (rerunning them changes nothing).

    Each ``-D`` is repeated until it fails; ``[PURGE_SOURCE, ip]`` deletes every rule of
    the chain matching that source (see `shell_line`)."""
    commands: list[list[str]] = [["-N", CHAIN], ["-D", "INPUT", "-j", CHAIN]]
    commands.append(["-I", "INPUT", "-j", CHAIN])
    for rule in rules:  # bound: MEMBERS_MAX per namespace
        # Every earlier rule for this source goes, whatever its expiry or tag: a rerun
        # computes a new expiry, so deleting the exact spec would leave the old copy.
        commands.append([PURGE_SOURCE, rule.source_ip])
        commands.append(["-A", CHAIN, *rule.spec()])
    assert len(commands) == 3 + 2 * len(rules)
    return commands


def heal_commands() -> list[list[str]]:
    """Remove every chaos rule and the jump (idempotent; an absent chain is fine)."""
    return [["-D", "INPUT", "-j", CHAIN], ["-F", CHAIN], ["-X", CHAIN]]


def shell_line(uid: str, args: Sequence[str]) -> str:
    """One iptables command in pod ``uid``'s namespace as shell (``ipt``, defined by
    SCRIPT_PREAMBLE). ``-N``, ``-F`` and ``-X`` may fail harmlessly; every ``-D`` is
    repeated until no copy is left (at most DUPLICATES_MAX times). ``$EXPIRES`` is
    expanded by the script."""
    ns = f"ipt {shlex.quote(uid)}"
    if args[0] == PURGE_SOURCE:
        source = shlex.quote(f"-s {args[1]}/32 ")
        return (f"{ns} -S {CHAIN} 2>/dev/null | grep -F -e {source} | head -n {DUPLICATES_MAX}"
                f" | sed 's/^-A /-D /' | while read -r r; do eval \"{ns} $r\"; done")  # fmt: skip
    quoted = " ".join('"$EXPIRES"' if a == "$EXPIRES" else shlex.quote(a) for a in args)
    call = f"{ns} {quoted}"
    if args[0] == "-D":
        return (f"i=0; while [ $i -lt {DUPLICATES_MAX} ] && {call} 2>/dev/null; "
                "do i=$((i+1)); done")  # fmt: skip
    if args[0] in ("-N", "-X", "-F"):
        return f"{call} 2>/dev/null || true"
    return call


# -- the injector's script ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """One scheduled fault. ``kind``: partition (``shape``), kill (``target`` member or
    the leader), pause (SIGSTOP for ``duration_s``), netem (``delay_ms``, ``loss_percent``
    on ``target``). ``start_s``: after the previous fault healed."""

    kind: str
    duration_s: int
    start_s: int = 0
    shape: str = ""
    target: str = ""  # a member name, or "leader"
    delay_ms: int = 0
    loss_percent: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_TYPES:
            raise ValueError(f"fault kind must be one of {FAULT_TYPES}, got {self.kind!r}")
        if not 0 <= self.duration_s <= FAULT_S_MAX or not 0 <= self.start_s <= FAULT_S_MAX:
            raise ValueError(f"durations must be in [0, {FAULT_S_MAX}] s")
        if (self.kind == "partition") != bool(self.shape):
            raise ValueError("a partition (and only a partition) names a shape")
        if self.kind == "netem" and not (self.delay_ms > 0 or self.loss_percent > 0):
            raise ValueError("netem needs delay_ms > 0 or loss_percent > 0")

    def describe(self) -> str:
        what = {"partition": self.shape, "kill": f"kill {self.target or 'a member'}",
                "pause": f"pause {self.target or 'a member'}",
                "netem": f"netem {self.target or 'a member'} +{self.delay_ms}ms "
                         f"{self.loss_percent}% loss"}[self.kind]  # fmt: skip
        return f"{what} for {self.duration_s}s"


SCRIPT_PREAMBLE: Final = r"""set -u
log() { line="$(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; echo "$line"
  echo "$line" >> /dev/termination-log 2>/dev/null || true; }
expiry() { date -u -d "@$(( $(date +%s) + $1 ))" +%Y-%m-%dT%H:%M:%S; }
pid_of() {  # a host PID of pod UID $1 (the Job runs with hostPID)
  for f in /proc/[0-9]*/cgroup; do
    if grep -q -e "$1" -e "$(printf %s "$1" | tr - _)" "$f" 2>/dev/null; then
      p=${f#/proc/}; echo "${p%/cgroup}"; return 0; fi
  done; return 1; }
ipt() { pid=$(pid_of "$1") || { log "no process of pod $1"; return 1; }; shift
  nsenter --target "$pid" --net -- iptables -w "$@"; }
"""
# Rules outlive the fault's planned end by this much before the kernel makes them inert:
# the injector's own heal comes first, the expiry is the safety net.
EXPIRY_GRACE_S: Final = 5


def partition_script(
    partition: Partition, members: Sequence[Member], *, tag: str, duration_s: int
) -> str:
    """Shell for one partition fault: apply (expiring at now + duration + grace, in the
    kernel), sleep, heal. Raises ValueError like `partition_rules`."""
    uids = {m.name: m.uid for m in members}
    rules = partition_rules(partition, members, tag=tag, expires="$EXPIRES")
    lines = [f"EXPIRES=$(expiry {duration_s + EXPIRY_GRACE_S})",
             f"log 'fault {partition.describe()} until '$EXPIRES"]  # fmt: skip
    for name, member_rules in sorted(rules.items()):  # bound: MEMBERS_MAX
        lines += [shell_line(uids[name], c) for c in apply_commands(member_rules)]
    lines.append(f"sleep {duration_s}")
    for name in sorted(rules):  # bound: MEMBERS_MAX
        lines += [shell_line(uids[name], c) for c in heal_commands()]
    lines.append(f"log 'healed {partition.shape}'")
    return "\n".join(lines) + "\n"


def heal_script(members: Sequence[Member]) -> str:
    """The healer: remove every chaos rule, netem qdisc and pause from every member
    (idempotent; run after an injector that did not finish)."""
    lines = []
    for member in members:  # bound: MEMBERS_MAX
        uid = shlex.quote(member.uid)
        lines += [shell_line(member.uid, c) for c in heal_commands()]
        lines.append(f"pid=$(pid_of {uid}) && kill -CONT $pid 2>/dev/null; "
                     f"nsenter --target \"$pid\" --net -- tc qdisc del dev eth0 root "
                     "2>/dev/null || true")  # fmt: skip
    lines.append("log 'healed all'")
    return "\n".join(lines) + "\n"


def pause_script(member: Member, duration_s: int) -> str:
    """SIGSTOP every process of the pod, then SIGCONT after the duration."""
    uid = shlex.quote(member.uid)
    return (f"pid=$(pid_of {uid}) && kill -STOP $pid && log 'fault pause {member.name}'\n"
            f"sleep {duration_s}\npid=$(pid_of {uid}) && kill -CONT $pid; "
            f"log 'healed pause {member.name}'\n")  # fmt: skip


def netem_script(member: Member, duration_s: int, delay_ms: int, loss_percent: float) -> str:
    """Add latency/loss on the pod's eth0 with tc netem (where the kernel has it)."""
    uid = shlex.quote(member.uid)
    args = f"delay {delay_ms}ms" if delay_ms else ""
    args = (args + (f" loss {loss_percent}%" if loss_percent else "")).strip()
    enter = f'pid=$(pid_of {uid}) && nsenter --target "$pid" --net --'
    missing = "command -v tc >/dev/null || log 'netem skipped: no tc in the injector image'\n"
    return missing + (f"{enter} tc qdisc replace dev eth0 root netem {args} "
            f"&& log 'fault netem {member.name} {args}'\nsleep {duration_s}\n"
            f"{enter} tc qdisc del dev eth0 root 2>/dev/null || true; "
            f"log 'healed netem {member.name}'\n")  # fmt: skip
