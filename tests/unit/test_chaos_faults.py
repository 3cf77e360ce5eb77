"""The fault planner: partition shapes as blocked links (table), rules with expiry,
idempotent apply/heal — and the generated shell run for real with iptables inside a
network namespace of the test's own (``unshare -n``): applied twice it leaves one copy
of each rule (chaos-mesh#763), the heal removes everything, a killed injector's rules
stop dropping at their expiry, enforced by the kernel."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from synod.chaos.faults import (
    CHAIN,
    SCRIPT_PREAMBLE,
    Fault,
    Member,
    apply_commands,
    heal_script,
    netem_script,
    partition_rules,
    partition_script,
    pause_script,
    plan_partition,
)
from tests.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
FIVE = [Member(f"kv-{i}", f"10.0.0.{i + 1}", f"uid-{i}") for i in range(5)]
NAMES = [m.name for m in FIVE]


def links(shape: str, **kwargs: object) -> set[tuple[str, str]]:
    return set(plan_partition(shape, FIVE, **kwargs).blocked)  # type: ignore[arg-type]


def reachable(blocked: set[tuple[str, str]], a: str, b: str) -> bool:
    """a and b talk both ways."""
    return (a, b) not in blocked and (b, a) not in blocked


def test_isolate_member_and_leader_cut_one_member_both_ways() -> None:
    for shape, kwargs, alone in (("isolate-member", {"member_index": 3}, "kv-3"),
                                 ("isolate-leader", {"leader": "kv-1"}, "kv-1")):  # fmt: skip
        blocked = links(shape, **kwargs)
        assert len(blocked) == 2 * 4
        assert all(not reachable(blocked, alone, n) for n in NAMES if n != alone)
        others = [n for n in NAMES if n != alone]
        assert all(reachable(blocked, a, b) for a in others for b in others if a != b)


def test_halves_are_seeded_minority_and_majority() -> None:
    partition = plan_partition("halves", FIVE, seed=7)
    minority, majority = partition.groups
    assert (len(minority), len(majority)) == (2, 3)
    assert plan_partition("halves", FIVE, seed=7) == partition, "same seed, same cut"
    assert len(partition.blocked) == 2 * 2 * 3
    assert {plan_partition("halves", FIVE, seed=s).groups for s in range(20)} != {
        partition.groups}, "seeds choose different minorities"  # fmt: skip


def test_one_way_blocks_only_majority_to_minority() -> None:
    partition = plan_partition("one-way", FIVE, seed=1)
    minority, majority = partition.groups
    assert partition.blocked == {(src, dst) for src in majority for dst in minority}
    assert all((dst, src) not in partition.blocked for src, dst in partition.blocked)


def test_bridge_member_sees_both_sides_which_do_not_see_each_other() -> None:
    partition = plan_partition("bridge", FIVE, seed=3)
    left, (bridge,), right = partition.groups
    blocked = set(partition.blocked)
    assert len(left) + len(right) == 4
    assert all(reachable(blocked, bridge, n) for n in NAMES if n != bridge)
    assert all(not reachable(blocked, a, b) for a in left for b in right)
    with pytest.raises(ValueError, match="bridge"):
        plan_partition("bridge", FIVE[:2])


def test_ring_each_member_sees_exactly_its_two_neighbours() -> None:
    blocked = links("ring", seed=5)
    for name in NAMES:
        seen = [n for n in NAMES if n != name and reachable(blocked, name, n)]
        assert len(seen) == 2, (name, seen)


@pytest.mark.parametrize(
    ("shape", "members", "kwargs", "error"),
    [
        ("star", FIVE, {}, "shape"),
        ("halves", FIVE[:1], {}, "2..9"),
        ("halves", [FIVE[0], FIVE[0]], {}, "distinct"),
        ("isolate-leader", FIVE, {"leader": "nobody"}, "leader"),
        ("isolate-member", FIVE, {"member_index": 5}, "index"),
    ],
)
def test_bad_partitions_are_refused(
    shape: str, members: list[Member], kwargs: dict[str, object], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        plan_partition(shape, members, **kwargs)  # type: ignore[arg-type]


def test_rules_sit_at_the_receiver_with_expiry_and_tag() -> None:
    partition = plan_partition("isolate-leader", FIVE[:3], leader="kv-0")
    rules = partition_rules(partition, FIVE[:3], tag="exp1", expires="2030-01-01T00:00:00")
    assert sorted(rules) == ["kv-0", "kv-1", "kv-2"]
    assert [r.source_ip for r in rules["kv-0"]] == ["10.0.0.2", "10.0.0.3"]
    assert [r.source_ip for r in rules["kv-1"]] == ["10.0.0.1"]
    spec = rules["kv-1"][0].spec()
    assert spec[spec.index("--datestop") + 1] == "2030-01-01T00:00:00"
    assert "synod-chaos:exp1" in spec
    commands = apply_commands(rules["kv-0"])
    # Each rule: delete every copy, then add one; the jump likewise.
    assert commands[1][0] == "-D" and commands[2][0] == "-I"
    assert [c[0] for c in commands[3:]] == ["--purge-source", "-A", "--purge-source", "-A"]
    with pytest.raises(ValueError, match="tag"):
        partition_rules(partition, FIVE[:3], tag="a b", expires="x")
    with pytest.raises(ValueError, match="unknown"):
        partition_rules(partition, FIVE[:1], tag="t", expires="x")


def test_fault_schedule_entries_are_validated() -> None:
    assert "isolate-leader for 10s" in Fault("partition", 10, shape="isolate-leader").describe()
    bad_faults: list[dict[str, object]] = [
        {"kind": "flood", "duration_s": 1},
        {"kind": "partition", "duration_s": 1},
        {"kind": "kill", "duration_s": 1, "shape": "ring"},
        {"kind": "netem", "duration_s": 1},
        {"kind": "pause", "duration_s": -1},
    ]
    for bad in bad_faults:
        with pytest.raises(ValueError):
            Fault(**bad)  # type: ignore[arg-type]
    assert "kill -STOP" in pause_script(FIVE[0], 5) and "kill -CONT" in pause_script(FIVE[0], 5)
    assert "netem delay 100ms loss 5.0%" in netem_script(FIVE[0], 5, 100, 5.0)


# -- the shell, for real, in a namespace of our own -------------------------------------

NAMESPACE_TOOLS = ("unshare", "iptables", "ip", "sh", "date")
needs_namespace = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in NAMESPACE_TOOLS),
    reason="needs root, unshare, iptables, ip (apt-get install iptables iproute2)",
)
# In the test's namespace every "pod" is the namespace itself: ipt runs iptables here.
LOCAL_IPT = 'ipt() { shift; iptables -w "$@"; }\n'
CHILD_TIMEOUT_S = 120


def run_in_namespace(script: str, tmp_path: Path) -> str:
    path = tmp_path / "script.sh"
    path.write_text(script)
    result = subprocess.run(["unshare", "-n", "sh", str(path)], check=False,
                            capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def three_members_on_loopback() -> list[Member]:
    return [Member(f"kv-{i}", f"127.0.0.{i + 1}", f"uid-{i}") for i in range(3)]


@needs_namespace
def test_apply_twice_leaves_one_copy_and_heal_removes_all(tmp_path: Path) -> None:
    members = three_members_on_loopback()
    partition = plan_partition("isolate-leader", members, leader="kv-0")
    fault = partition_script(partition, members, tag="exp1", duration_s=0)
    applied = fault[: fault.index("sleep")]
    healed = fault[fault.index("sleep") :]
    script = (SCRIPT_PREAMBLE + LOCAL_IPT + "ip link set lo up\n" + applied + applied
              + f"echo LISTING; iptables -S {CHAIN}; iptables -S INPUT; echo END\n"
              + healed + f"iptables -S {CHAIN} 2>&1 || echo GONE\n")  # fmt: skip
    out = run_in_namespace(script, tmp_path)
    listing = out[out.index("LISTING") : out.index("END")]
    rules = [line for line in listing.splitlines() if line.startswith(f"-A {CHAIN}")]
    # All three "pods" are this one namespace: one rule per source, each exactly once
    # (a rerun's new expiry must not leave the earlier copy behind).
    sources = sorted(r.split()[3] for r in rules)
    assert sources == ["127.0.0.1/32", "127.0.0.2/32", "127.0.0.3/32"], listing
    assert all("--datestop" in r and "synod-chaos:exp1" in r for r in rules)
    assert listing.count(f"-A INPUT -j {CHAIN}") == 1, listing
    assert "GONE" in out[out.index("END") :]


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.2", port), timeout=0.3):
            return True
    except OSError:
        return False


def namespace_child() -> None:
    """Runs inside `unshare -n` (see the test below): a listener on 127.0.0.2, a
    partition cutting 127.0.0.1 off with a 2 s expiry, the injector killed mid-fault;
    prints the verdicts."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    server = socket.create_server(("127.0.0.2", 0))
    port = server.getsockname()[1]
    threading.Thread(target=lambda: [server.accept()[0].close() for _ in range(1000)],
                     daemon=True).start()  # fmt: skip
    assert _connects(port), "reachable before the fault"
    members = [Member("a", "127.0.0.1", "u-a"), Member("b", "127.0.0.2", "u-b")]
    partition = plan_partition("isolate-member", members, member_index=0)
    fault = partition_script(partition, members, tag="killed", duration_s=600)
    # The fault's rules expire 2 s from now instead of 600 + grace.
    fault = fault.replace("$(expiry 605)", "$(expiry 2)")
    injector = subprocess.Popen(["sh", "-c", SCRIPT_PREAMBLE + LOCAL_IPT + fault],
                                start_new_session=True)  # fmt: skip

    def rules_in() -> bool:
        listing = subprocess.run(
            ["iptables", "-S", CHAIN], check=False, capture_output=True, text=True
        )
        return listing.stdout.count("-j DROP") == 2

    wait_until(rules_in, 30, "the injector's rules")
    os.killpg(injector.pid, signal.SIGKILL)  # the injector dies mid-fault
    injector.wait()
    cut = not _connects(port)
    healed = wait_until(lambda: _connects(port), 30, "the rules to expire in the kernel")
    still_listed = rules_in()
    print(f"cut={cut} healed={healed} still_listed={still_listed}", flush=True)


@needs_namespace
def test_a_killed_injector_s_rules_expire_in_the_kernel() -> None:
    code = "import tests.unit.test_chaos_faults as t; t.namespace_child()"
    result = subprocess.run(["unshare", "-n", sys.executable, "-c", code], check=False,
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                            capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cut=True healed=True still_listed=True" in result.stdout, result.stdout


def test_the_healer_removes_rules_netem_and_pauses_of_every_member() -> None:
    script = heal_script(FIVE[:2])
    assert script.count(f"-X {CHAIN}") == 2 and script.count("kill -CONT") == 2
    assert script.count("tc qdisc del") == 2
