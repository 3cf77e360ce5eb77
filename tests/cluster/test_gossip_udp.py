"""Gossip members as real processes on loopback UDP (`python -m synod.gossip.udp`):
a member killed with SIGKILL is declared dead by every other member, and a member
stopped with SIGSTOP is suspected and, once resumed, refutes with a higher
incarnation. Each process logs its membership events as JSON lines (with their
provenance), and the test waits on those, never on a fixed time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port
from tests.waiting import wait_until

WAIT_S_MAX = 30.0
MEMBERS = 4
# Faster than memberlist's defaults so the test is short, slow enough that a loaded
# 2-core machine's stalls do not dominate: suspicion takes 4 probe intervals at least.
TIMING = [
    "--probe-interval-ms",
    "300",
    "--probe-timeout-ms",
    "150",
    "--gossip-interval-ms",
    "100",
    "--push-pull-interval-ms",
    "5000",
]


class Member:
    def __init__(self, name: str, port: int, log_path: Path) -> None:
        self.name = name
        self.address = f"127.0.0.1:{port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, join: str | None) -> None:
        args = [
            sys.executable,
            "-m",
            "synod.gossip.udp",
            "--name",
            self.name,
            "--bind",
            self.address,
            "--client-url",
            f"http://{self.name}:2379",
            "--zone",
            "z1",
            "--services",
            "kv",
            *TIMING,
        ]
        if join:
            args += ["--join", join]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)

    def records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == "gossip.membership":
                    records.append(record)
        return records

    def last_kind(self, subject: str) -> str | None:
        kinds = [r["kind"] for r in self.records() if r["member"] == subject]
        return kinds[-1] if kinds else None


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[Member]]:
    group = [Member(f"g{i}", free_port(), tmp_path / f"g{i}.log") for i in range(MEMBERS)]
    try:
        for member in group:
            member.start(None if member is group[0] else group[0].address)
        for member in group:
            others = {m.name for m in group if m is not member}
            wait_until(
                lambda m=member, o=others: o <= {r["member"] for r in m.records()},
                WAIT_S_MAX,
                f"{member.name} to learn every other member",
            )
        yield group
    finally:
        for member in group:
            if member.process is not None and member.process.poll() is None:
                member.process.send_signal(signal.SIGCONT)
                member.process.kill()
                member.process.wait(timeout=WAIT_S_MAX)


def test_a_killed_member_is_declared_dead_by_every_other(members: list[Member]) -> None:
    victim = members[-1]
    assert victim.process is not None
    killed = time.monotonic()
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=WAIT_S_MAX)
    for observer in members[:-1]:
        wait_until(
            lambda o=observer: o.last_kind(victim.name) == "dead",
            WAIT_S_MAX,
            f"{observer.name} to declare {victim.name} dead",
        )
    print(f"kill -9 to dead everywhere: {time.monotonic() - killed:.2f}s")
    deaths = [
        r
        for m in members[:-1]
        for r in m.records()
        if r["member"] == victim.name and r["kind"] == "dead"
    ]
    # Provenance: every death names who suspected it first.
    names = {m.name for m in members}
    assert all(r["suspected_by"] in names or r["source"] in names for r in deaths)


def test_a_paused_member_is_suspected_and_refutes_when_resumed(members: list[Member]) -> None:
    paused = members[1]
    assert paused.process is not None
    others = [m for m in members if m is not paused]
    paused.process.send_signal(signal.SIGSTOP)
    try:
        wait_until(
            lambda: any(
                o.last_kind(paused.name) in ("suspected", "confirmed", "dead") for o in others
            ),
            WAIT_S_MAX,
            f"someone to suspect {paused.name}",
        )
    finally:
        paused.process.send_signal(signal.SIGCONT)
    wait_until(
        lambda: paused.last_kind(paused.name) == "self_refuted",
        WAIT_S_MAX,
        f"{paused.name} to refute",
    )
    for observer in others:
        wait_until(
            lambda o=observer: o.last_kind(paused.name) in ("refuted", "joined", "updated"),
            WAIT_S_MAX,
            f"{observer.name} to hold {paused.name} alive again",
        )
    refutations = [r for r in paused.records() if r["kind"] == "self_refuted"]
    assert refutations[-1]["incarnation"] >= 1
