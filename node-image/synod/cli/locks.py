"""`synod lock ...` and `synod election ...` (docs/locks.md).

`synod lock acquire NAME -- CMD ...` runs CMD while holding the lock, like `etcdctl lock`
and `consul lock`: CMD gets the fencing token in SYNOD_LOCK_TOKEN (and the lock in
SYNOD_LOCK_NAME), the lock is renewed meanwhile, and CMD is terminated (SIGTERM, then
SIGKILL after --kill-grace) if the lock is lost. The command exits with CMD's status,
or 7 when the lock was lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import click
from rich.markup import escape

from synod.cli.output import (
    EXIT_CODES_HELP,
    EXIT_LEASE_EXPIRED,
    EXIT_USAGE,
    Failure,
    out_console,
    print_json,
)
from synod.client.locks import SyncLock

__all__ = ["register"]

# How often the CLI looks at the lock while CMD runs (the watchdog renews on its own).
HELD_CHECK_INTERVAL_S = 0.1
KILL_GRACE_S_DEFAULT = 5.0
# Changes `election observe` prints without --count.
OBSERVE_CHANGES_MAX = 2**31


def register(
    cli: click.Group,
    client_options: Callable[[Callable[..., Any]], Callable[..., Any]],
    parse_duration_ms: Callable[[str], int],
) -> None:
    """Add the `lock` and `election` groups to ``cli``. Raises nothing."""

    @cli.group(epilog=EXIT_CODES_HELP)
    def lock() -> None:
        """Fenced distributed locks (FIFO, lease-bound, with fencing tokens)."""

    @lock.command("acquire", context_settings={"ignore_unknown_options": True})
    @click.argument("name")
    @click.argument("command", nargs=-1, type=click.UNPROCESSED)
    @click.option("--ttl", default="10s", show_default=True, help="Lease TTL of the hold.")
    @click.option("--wait", default="60s", show_default=True, help="Queue at most this long.")
    @click.option("--ns", default="default", show_default=True, help="Lock namespace.")
    @click.option("--owner", default=None, help="Owner identity [default: host-pid-random].")
    @click.option(
        "--kill-grace",
        "kill_grace_s",
        type=float,
        default=KILL_GRACE_S_DEFAULT,
        show_default=True,
        help="Seconds between SIGTERM and SIGKILL of CMD.",
    )
    @client_options
    def lock_acquire(opts: Any, name: str, command: tuple[str, ...], ttl: str, wait: str,
                     ns: str, owner: str | None, kill_grace_s: float) -> None:  # fmt: skip
        """Hold NAME while running `-- CMD ...` (token in SYNOD_LOCK_TOKEN); without CMD,
        print the token and hold it until Ctrl-C."""
        with opts.client() as client:
            held = client.lock(name, ttl_ms=parse_duration_ms(ttl), wait_ms=parse_duration_ms(wait),
                               ns=ns, owner=owner)  # fmt: skip
            _hold(opts, held, name, command, kill_grace_s)

    @lock.command("list")
    @click.argument("prefix", default="")
    @click.option("--ns", default="default", show_default=True)
    @client_options
    def lock_list(opts: Any, prefix: str, ns: str) -> None:
        """Locks of a namespace (by name prefix) with holder and waiter counts."""
        with opts.client() as client:
            doc = client.lock_list(prefix, ns=ns)
        if opts.json:
            print_json({k: v for k, v in doc.items() if k != "header"})
            return
        for item in doc["locks"]:
            out_console.print(f"{escape(item['name'])}  {item['type']}  "
                              f"holders={item['holders']} waiters={item['waiters']}")  # fmt: skip
        out_console.print(f"{doc['count']} locks")

    @lock.command("show")
    @click.argument("name")
    @click.option("--ns", default="default", show_default=True)
    @client_options
    def lock_show(opts: Any, name: str, ns: str) -> None:
        """Holders (owner, token, count) and FIFO waiters of NAME."""
        with opts.client() as client:
            doc = client.lock_status(name, ns=ns)
        if opts.json:
            print_json({k: v for k, v in doc.items() if k != "header"})
            return
        if not doc["held"] and not doc["waiters"]:
            out_console.print(f"{escape(name)}: free")
            return
        for hold in doc["holders"]:
            out_console.print(f"holder {escape(hold['owner'])} token {hold['token']} "
                              f"mode {hold['mode']} count {hold['count']}")  # fmt: skip
        for position, waiter in enumerate(doc["waiters"], start=1):
            out_console.print(f"waiter {position}: {escape(waiter['owner'])}")
        if doc["delayed"]:
            out_console.print("lock-delay running (a holder's lease ended)")

    @lock.command("release")
    @click.argument("name")
    @click.option("--owner", required=True, help="The holder (or waiter) to release.")
    @click.option("--token", type=int, default=0, help="Refuse unless this is its token.")
    @click.option("--ns", default="default", show_default=True)
    @client_options
    def lock_release(opts: Any, name: str, owner: str, token: int, ns: str) -> None:
        """Release OWNER's hold of NAME (or take it out of the queue)."""
        with opts.client() as client:
            doc = client.lock_release(name, owner, ns=ns, token=token)
        _done(opts, doc, f"{owner} {'left the queue of' if doc['cancelled'] else 'released'} "
                         f"{name}")  # fmt: skip

    @lock.command("revoke")
    @click.argument("name")
    @click.option("--owner", default="", help="Only this holder [default: every holder].")
    @click.option("--ns", default="default", show_default=True)
    @client_options
    def lock_revoke(opts: Any, name: str, owner: str, ns: str) -> None:
        """Admin: take NAME from its holder(s); their tokens become stale."""
        with opts.client() as client:
            revoked = client.lock_revoke(name, ns=ns, owner=owner)
        _done(opts, {"revoked": revoked}, f"revoked {', '.join(revoked)} from {name}")

    @cli.group(epilog=EXIT_CODES_HELP)
    def election() -> None:
        """Leader election on the lock machinery (fenced by the leader's token)."""

    @election.command("campaign", context_settings={"ignore_unknown_options": True})
    @click.argument("name")
    @click.argument("value")
    @click.argument("command", nargs=-1, type=click.UNPROCESSED)
    @click.option("--ttl", default="10s", show_default=True, help="Lease TTL of leadership.")
    @click.option("--wait", default="1h", show_default=True, help="Campaign at most this long.")
    @click.option("--ns", default="default", show_default=True)
    @click.option("--owner", default=None, help="Candidate identity.")
    @client_options
    def election_campaign(opts: Any, name: str, value: str, command: tuple[str, ...],
                          ttl: str, wait: str, ns: str, owner: str | None) -> None:  # fmt: skip
        """Become leader of NAME with VALUE, then run `-- CMD` (or hold until Ctrl-C)."""
        with opts.client() as client:
            held = SyncLock(client._run, client.aio.election(name, ns=ns).campaign(
                value, ttl_ms=parse_duration_ms(ttl), wait_ms=parse_duration_ms(wait),
                owner=owner, cancel_on_lost=False))  # fmt: skip
            _hold(opts, held, name, command, KILL_GRACE_S_DEFAULT)

    @election.command("leader")
    @click.argument("name")
    @click.option("--ns", default="default", show_default=True)
    @client_options
    def election_leader(opts: Any, name: str, ns: str) -> None:
        """The current leader of NAME (exit 3 if there is none)."""
        with opts.client() as client:
            doc = client.election_leader(name, ns=ns)
        _print_leader(opts, name, doc)
        if doc["leader"] is None:
            raise SystemExit(3)

    @election.command("observe")
    @click.argument("name")
    @click.option("--ns", default="default", show_default=True)
    @click.option("--count", type=click.IntRange(min=1), default=OBSERVE_CHANGES_MAX,
                  help="Exit after printing this many leaders.")  # fmt: skip
    @client_options
    def election_observe(opts: Any, name: str, ns: str, count: int) -> None:
        """Print the leader of NAME now and at every change (long-polls)."""
        with opts.client() as client:
            doc = client.election_leader(name, ns=ns)
            _print_leader(opts, name, doc)
            for _printed in range(count - 1):
                seen = doc["leader"]
                while doc["leader"] == seen:  # each call long-polls the server
                    doc = client.election_leader(
                        name, ns=ns, after_revision=doc["changed_revision"]
                    )
                _print_leader(opts, name, doc)


def _hold(opts: Any, held: SyncLock, name: str, command: tuple[str, ...],
          kill_grace_s: float) -> None:  # fmt: skip
    """Acquire ``held``, run ``command`` under it (or wait for Ctrl-C), release.
    Raises Failure (exit 7) if the lock is lost, SystemExit with CMD's status."""
    args = list(command[1:] if command[:1] == ("--",) else command)
    with held:
        if opts.json:
            print_json({"name": name, "token": held.token, "owner": held.lock.owner})
        elif not args:
            out_console.print(f"holding {escape(name)} with token {held.token}; Ctrl-C to release")
        if not args:
            _wait_while_held(held)
            raise Failure(f"lock {name!r} lost: {held.lost}", EXIT_LEASE_EXPIRED)
        env = {**os.environ, "SYNOD_LOCK_TOKEN": str(held.token), "SYNOD_LOCK_NAME": name}
        try:
            child = subprocess.Popen(args, env=env)
        except OSError as exc:
            raise Failure(f"cannot run {args[0]!r}: {exc}", EXIT_USAGE) from exc
        status = _run_while_held(held, child, kill_grace_s)
        if status is None:
            raise Failure(f"lock {name!r} lost while {args[0]!r} ran; it was terminated",
                          EXIT_LEASE_EXPIRED)  # fmt: skip
    raise SystemExit(status)


def _wait_while_held(held: SyncLock) -> None:
    for _check in range(2**62):  # until lost or Ctrl-C
        if not held.held:
            return
        time.sleep(HELD_CHECK_INTERVAL_S)


def _run_while_held(
    held: SyncLock, child: subprocess.Popen[bytes], kill_grace_s: float
) -> int | None:
    """CMD's exit status, or None if the lock was lost and CMD was terminated."""
    for _check in range(2**62):  # until CMD ends or the lock is lost
        try:
            return child.wait(timeout=HELD_CHECK_INTERVAL_S)
        except subprocess.TimeoutExpired:
            pass
        if not held.held:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=kill_grace_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            return None
    raise AssertionError("unreachable")


def _done(opts: Any, doc: dict[str, Any], message: str) -> None:
    if opts.json:
        print_json({k: v for k, v in doc.items() if k != "header"})
    else:
        out_console.print(escape(message))


def _print_leader(opts: Any, name: str, doc: dict[str, Any]) -> None:
    leader = doc["leader"]
    if opts.json:
        print_json({"name": name, "leader": leader, "changed_revision": doc["changed_revision"]})
    elif leader is None:
        out_console.print(f"{escape(name)}: no leader")
    else:
        out_console.print(f"{escape(name)}: {escape(leader['owner'])} token {leader['token']} "
                          f"value {escape(str(leader['value']))}")  # fmt: skip
