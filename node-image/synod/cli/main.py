"""The `synod` command: a local dev cluster, a demo, and a client for any cluster."""

from __future__ import annotations

import functools
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from synod.cli.chaos import register as register_chaos
from synod.cli.dev import DevCluster, DevClusterError
from synod.cli.locks import register as register_locks
from synod.cli.output import (
    EXIT_CODES_HELP,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    Failure,
    err_console,
    handle_errors,
    out_console,
    print_json,
)
from synod.cli.ratelimit import register as register_ratelimit
from synod.client import (
    KV,
    Client,
    ClusterStatus,
    SynodError,
    WatchEvent,
)

__all__ = ["cli", "main"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
LEADER_WAIT_S_DEFAULT = 30.0
DEV_POLL_INTERVAL_S = 0.5
DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
MEMBERS_SHOWN_MAX = 1024  # Rows of `synod members` (GossipSettings.members_max); -o json has all.
DURATION_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, None: 1000}


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """The options every client command takes."""

    endpoints: str | None
    output: str
    timeout_s: float
    attempts_max: int = 8
    ca: str = ""
    cert: str = ""
    key: str = ""

    @property
    def json(self) -> bool:
        """True for `--output json`. Raises nothing."""
        return self.output == "json"

    @contextmanager
    def client(self) -> Iterator[Client]:
        """A blocking client on the endpoints. Raises Failure on bad endpoints."""
        try:
            client = Client(
                self.endpoints, timeout_s=self.timeout_s, attempts_max=self.attempts_max,
                ca=self.ca, cert=self.cert, key=self.key,
            )  # fmt: skip
        except ValueError as exc:
            raise Failure(f"--endpoints/--cert/--key: {exc}", EXIT_USAGE) from exc
        except OSError as exc:  # ssl.SSLError is an OSError
            raise Failure(f"--ca/--cert/--key: {exc}", EXIT_USAGE) from exc
        with client:
            yield client


def client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --endpoints/--output/--timeout and pass them as ``opts``; report errors."""

    @click.option(
        "--endpoints",
        envvar="SYNOD_ENDPOINTS",
        default=None,
        metavar="URLS",
        help="Comma-separated client URLs or host:port [env SYNOD_ENDPOINTS; "
        "default: the `synod dev` addresses 127.0.0.1:2379,2479,2579].",
    )
    @click.option(
        "-o",
        "--output",
        type=click.Choice(["text", "json"]),
        default="text",
        envvar="SYNOD_OUTPUT",
        show_default=True,
        help="text for people, json (one document per line) for scripts.",
    )
    @click.option(
        "--timeout",
        "timeout_s",
        type=click.FloatRange(min=0.05),
        default=5.0,
        show_default=True,
        help="Seconds per attempt (each call retries with backoff).",
    )
    @click.option(
        "--attempts",
        "attempts_max",
        type=click.IntRange(min=1),
        default=8,
        show_default=True,
        help="Attempts per call before giving up (exit code 5).",
    )
    @click.option(
        "--ca", "tls_ca", envvar="SYNOD_CA", default="", metavar="PEM",
        help="CA bundle of the nodes' certificates (HTTPS) [env SYNOD_CA].",
    )  # fmt: skip
    @click.option(
        "--cert", "tls_cert", envvar="SYNOD_CERT", default="", metavar="PEM",
        help="Client certificate, for nodes that ask for one [env SYNOD_CERT].",
    )  # fmt: skip
    @click.option(
        "--key", "tls_key", envvar="SYNOD_KEY", default="", metavar="PEM",
        help="Private key of --cert [env SYNOD_KEY].",
    )  # fmt: skip
    @functools.wraps(func)
    @handle_errors
    def wrapper(
        endpoints: str | None,
        output: str,
        timeout_s: float,
        attempts_max: int,
        tls_ca: str,
        tls_cert: str,
        tls_key: str,
        **kwargs: Any,
    ) -> Any:
        options = ClientOptions(endpoints, output, timeout_s, attempts_max, tls_ca, tls_cert,
                                tls_key)  # fmt: skip
        return func(options, **kwargs)

    return wrapper


def parse_duration_ms(text: str) -> int:
    """`10s`, `500ms`, `2m`, `1h` or bare seconds, in ms. Raises click.BadParameter."""
    match = DURATION_RE.match(text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 10s, 500ms or 2m")
    return int(float(match.group(1)) * DURATION_UNIT_MS[match.group(2)])


def kv_json(kv: KV | None) -> dict[str, Any] | None:
    """Raises nothing."""
    return None if kv is None else kv.to_json()


# -- the group --------------------------------------------------------------------


@click.group(context_settings=CONTEXT_SETTINGS, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="synod", prog_name="synod")
def cli() -> None:
    """Synod: a Raft-backed key-value store with leases and watches.

    Start a local cluster with `synod dev`, take the tour with `synod demo`, and talk
    to any cluster with the other commands.
    """


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point. Exits with the documented exit code."""
    cli.main(args=argv, prog_name="synod")


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def node(args: tuple[str, ...]) -> None:
    """Run one member process (see docs/node.md)."""
    from synod.node.main import main as node_main  # heavy: only `synod node` needs it

    sys.exit(node_main(list(args)))


# -- dev and demo -----------------------------------------------------------------


class _Terminated(Exception):
    """SIGTERM arrived."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--nodes", type=click.IntRange(1, 9), default=None, help="Members [default: 3].")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".synod/dev"),
    show_default=True,
    help="Kept between runs: running again resumes the data.",
)
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65000),
    default=None,
    help="Client port of node 1 [default: 2379]; node i uses +100·(i-1).",
)
@click.option(
    "--node-arg",
    "node_args",
    multiple=True,
    metavar="ARG",
    help="Extra flag for every `synod node` (repeat), e.g. --node-arg=--tick-ms=20.",
)
@click.option(
    "--leader-wait",
    "leader_wait_s",
    type=float,
    default=LEADER_WAIT_S_DEFAULT,
    show_default=True,
    help="Seconds to wait for the first leader.",
)
@handle_errors
def dev(
    nodes: int | None,
    data_dir: Path,
    base_port: int | None,
    node_args: tuple[str, ...],
    leader_wait_s: float,
) -> None:
    """Run a local N-node cluster until Ctrl-C.

    Each member is a `synod node` subprocess; SIGTERM or Ctrl-C stops them all (SIGTERM,
    then SIGKILL after 10 s). Running it again on the same --data-dir resumes the data.
    """
    try:
        cluster = DevCluster(data_dir, nodes=nodes, base_port=base_port, node_args=node_args)
    except DevClusterError as exc:
        raise Failure(str(exc), EXIT_USAGE) from exc
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        _run_dev(cluster, leader_wait_s)
    except DevClusterError as exc:
        raise Failure(str(exc)) from exc
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_dev(cluster: DevCluster, leader_wait_s: float) -> None:
    """Start, supervise until a signal, stop. Raises DevClusterError."""
    verb = "resuming" if cluster.resumed else "starting"
    out_console.print(
        f"[bold]synod dev[/]: {verb} {cluster.nodes_count} nodes, data in {cluster.data_dir}"
    )
    try:
        cluster.start()
        for node in cluster.nodes.values():
            out_console.print(f"  node {node.node_id}  {node.url}  (log {node.log_path})")
        leader = cluster.wait_for_leader(leader_wait_s)
        out_console.print(f"leader: node {leader}. Ready.")
        out_console.print(f"export SYNOD_ENDPOINTS={','.join(cluster.endpoints)}")
        out_console.print("Ctrl-C stops the cluster.", style="dim")
        _supervise(cluster)
    except (KeyboardInterrupt, _Terminated):
        out_console.print("stopping...")
    finally:
        # A second Ctrl-C must not abandon the nodes half-stopped (they run in sessions
        # of their own, so nothing else would stop them); stop() itself is bounded.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            cluster.stop()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)
    out_console.print("stopped.")


def _supervise(cluster: DevCluster) -> None:
    """Report nodes that exit until interrupted. Raises KeyboardInterrupt, _Terminated."""
    while True:
        for node_id, code in cluster.exited():
            err_console.print(f"[yellow]node {node_id} exited with code {code}[/]")
            tail = cluster.tail_log(node_id)
            if tail:
                err_console.print(escape(tail), style="dim")
        time.sleep(DEV_POLL_INTERVAL_S)


@cli.command(epilog=EXIT_CODES_HELP)
@click.option(
    "--endpoints",
    envvar="SYNOD_DEMO_ENDPOINTS",
    default=None,
    metavar="URLS",
    help="Use a running cluster instead of starting one (skips the failover step).",
)
@handle_errors
def demo(endpoints: str | None) -> None:
    """A guided tour: put/get, watch, leases, a leader crash."""
    from synod.cli.demo import run_demo

    run_demo(endpoints)


# -- status -----------------------------------------------------------------------


@cli.command(epilog=EXIT_CODES_HELP)
@client_options
def status(opts: ClientOptions) -> None:
    """Members, roles, term, commit/applied indexes and the leader."""
    with opts.client() as client:
        first = client.status()
        rows: list[tuple[Any, ClusterStatus | None, str]] = []
        for member in first.members:
            url = member.client_url or ""
            try:
                rows.append((member, client.status(url) if url else None, ""))
            except SynodError as exc:
                rows.append((member, None, exc.detail))
    if opts.json:
        print_json(_status_json(first, rows))
    else:
        out_console.print(_status_table(first, rows))


def _status_json(first: ClusterStatus, rows: list[tuple[Any, ClusterStatus | None, str]]) -> Any:
    """Raises nothing."""
    return {
        "leader_id": first.leader_id,
        "leader_client_url": first.leader_client_url,
        "term": first.term,
        "members": [
            {
                "id": member.id,
                "voter": member.role != "learner",
                "client_url": member.client_url,
                "reachable": node is not None,
                "error": error or None,
                "status": node.raw if node else None,
            }
            for member, node, error in rows
        ],
    }


def _status_table(first: ClusterStatus, rows: list[tuple[Any, ClusterStatus | None, str]]) -> Table:
    """Raises nothing."""
    term = max([first.term] + [n.term for _, n, _ in rows if n])
    table = Table(title=f"leader: {first.leader_id or 'none'}   term: {term}")
    for column in ("ID", "ENDPOINT", "ROLE", "TERM", "COMMIT", "APPLIED", "MATCH", "CONTACT"):
        table.add_column(column, justify="right" if column not in ("ENDPOINT", "ROLE") else "left")
    for member, node, error in rows:
        contact = "" if member.last_contact_ms is None else f"{member.last_contact_ms} ms"
        if node is None:
            role = f"[red]unreachable[/] {escape(error)}"
            cells = [role, "", "", "", str(member.match_index or ""), contact]
        else:
            role = node.role + ("" if member.role != "learner" else " (learner)")
            style = "bold green" if node.role == "leader" else ""
            cells = [f"[{style}]{role}[/]" if style else role, str(node.term),
                     str(node.commit_index), str(node.applied_index),
                     str(member.match_index or ""), contact]  # fmt: skip
        table.add_row(str(member.id), member.client_url.removeprefix("http://"), *cells)
    return table


# -- members (gossip) ---------------------------------------------------------------


@cli.command(epilog=EXIT_CODES_HELP)
@client_options
def members(opts: ClientOptions) -> None:
    """The gossip view of a member: every member it knows, with state and client URL."""
    with opts.client() as client:
        view = client.gossip_members()
    if opts.json:
        print_json(view)
        return
    if not view.get("enabled"):
        out_console.print("gossip is off on this member (start it with --listen-gossip)")
        return
    table = Table(title=f"gossip view of {view.get('self')}   "
                        f"health score: {view.get('health_score')}")  # fmt: skip
    for column in ("NAME", "STATE", "INCARNATION", "ADDRESS", "CLIENT URL"):
        table.add_column(column, justify="right" if column == "INCARNATION" else "left")
    colours = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}
    for member in view["members"][:MEMBERS_SHOWN_MAX]:
        state = str(member.get("state", ""))
        table.add_row(str(member.get("name", "")), f"[{colours.get(state, 'white')}]{state}[/]",
                      str(member.get("incarnation", "")), escape(str(member.get("address", ""))),
                      escape(str(member.get("client_url", ""))))  # fmt: skip
    out_console.print(table)
    if len(view["members"]) > MEMBERS_SHOWN_MAX:
        out_console.print(f"{len(view['members']) - MEMBERS_SHOWN_MAX} more: use -o json")


# -- kv ---------------------------------------------------------------------------


@cli.group(epilog=EXIT_CODES_HELP)
def kv() -> None:
    """Keys and values: put, get, del, range, cas, watch."""


@kv.command("put")
@click.argument("key")
@click.argument("value")
@click.option("--lease", type=int, default=0, help="Attach to this lease id.")
@click.option("--prev-kv", is_flag=True, help="Show the previous value.")
@client_options
def kv_put(opts: ClientOptions, key: str, value: str, lease: int, prev_kv: bool) -> None:
    """Set KEY to VALUE."""
    with opts.client() as client:
        result = client.put(key, value, lease=lease, prev_kv=prev_kv)
    if opts.json:
        print_json({"revision": result.revision, "prev_kv": kv_json(result.prev_kv)})
        return
    out_console.print(f"OK (revision {result.revision})")
    if result.prev_kv is not None:
        out_console.print(f"previous: {escape(result.prev_kv.value)}")


@kv.command("get")
@click.argument("key")
@click.option("--revision", type=int, default=0, help="Read at this revision.")
@click.option("--serializable", is_flag=True, help="Read from the node asked (may be stale).")
@client_options
def kv_get(opts: ClientOptions, key: str, revision: int, serializable: bool) -> None:
    """Print the value of KEY (exit code 3 when absent)."""
    with opts.client() as client:
        found = client.get(key, revision=revision, serializable=serializable)
    if found is None:
        raise Failure(f"key {key!r} not found", EXIT_NOT_FOUND)
    if opts.json:
        print_json(found.to_json())
    else:
        click.echo(found.value)


@kv.command("del")
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Delete every key starting with KEY.")
@client_options
def kv_del(opts: ClientOptions, key: str, prefix: bool) -> None:
    """Delete KEY (or a prefix); prints how many keys went."""
    with opts.client() as client:
        result = client.delete(key, prefix=prefix)
    if opts.json:
        print_json({"deleted": result.deleted, "revision": result.header.revision})
    else:
        out_console.print(f"deleted {result.deleted}")


@kv.command("range")
@click.argument("key")
@click.argument("range_end", required=False, default="")
@click.option("--prefix", is_flag=True, help="Every key starting with KEY.")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="At most this many.")
@click.option("--keys-only", is_flag=True)
@client_options
def kv_range(
    opts: ClientOptions, key: str, range_end: str, prefix: bool, limit: int, keys_only: bool
) -> None:
    """List KEY, the keys in [KEY, RANGE_END), or those under a prefix."""
    with opts.client() as client:
        result = client.range(key, range_end, prefix=prefix, limit=limit, keys_only=keys_only)
    if opts.json:
        print_json(
            {"kvs": [k.to_json() for k in result.kvs], "more": result.more, "count": result.count}
        )
        return
    table = Table(caption=f"{result.count} keys" + (" (more)" if result.more else ""))
    for column in ("KEY", "VALUE", "VERSION", "MOD REV", "LEASE"):
        table.add_column(column)
    for item in result.kvs:
        lease = str(item.lease) if item.lease else ""
        table.add_row(
            escape(item.key), escape(item.value), str(item.version), str(item.mod_revision), lease
        )
    out_console.print(table)


@kv.command("cas")
@click.argument("key")
@click.argument("expected")
@click.argument("new")
@click.option("--absent", is_flag=True, help="Expect KEY not to exist (EXPECTED is ignored).")
@client_options
def kv_cas(opts: ClientOptions, key: str, expected: str, new: str, absent: bool) -> None:
    """Set KEY to NEW only if its value is EXPECTED (exit code 4 otherwise)."""
    with opts.client() as client:
        result = client.cas(key, None if absent else expected, new)
    if opts.json:
        print_json({"revision": result.revision})
    else:
        out_console.print(f"OK (revision {result.revision})")


@kv.command("watch")
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Watch every key starting with KEY.")
@click.option("--rev", "start_revision", type=int, default=0, help="Start at this revision.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N events.")
@client_options
def kv_watch(
    opts: ClientOptions, key: str, prefix: bool, start_revision: int, count: int | None
) -> None:
    """Print changes of KEY as they happen (resumes by itself after failures)."""
    seen = 0
    with opts.client() as client:
        for event in client.watch(key, prefix=prefix, start_revision=start_revision):
            _print_event(opts, event)
            seen += 1
            if count is not None and seen >= count:
                return


def _print_event(opts: ClientOptions, event: WatchEvent) -> None:
    """Raises nothing."""
    if opts.json:
        print_json(
            {
                "type": event.type,
                "key": event.kv.key,
                "value": event.kv.value,
                "revision": event.revision,
                "prev_kv": kv_json(event.prev_kv),
            }
        )
        return
    if event.type == "put":
        line = f"[green]PUT[/]    {escape(event.kv.key)} = {escape(event.kv.value)}"
    else:
        line = f"[red]DELETE[/] {escape(event.kv.key)}"
    out_console.print(f"{line}  [dim](revision {event.revision})[/]")


# -- lease ------------------------------------------------------------------------


@cli.group(epilog=EXIT_CODES_HELP)
def lease() -> None:
    """Leases: attached keys vanish when they expire."""


@lease.command("grant")
@click.argument("ttl")
@client_options
def lease_grant(opts: ClientOptions, ttl: str) -> None:
    """Grant a lease of TTL (10s, 1500ms, 2m; bare numbers are seconds)."""
    ttl_ms = parse_duration_ms(ttl)
    with opts.client() as client:
        grant = client.lease_grant(ttl_ms)
    if opts.json:
        print_json({"id": grant.id, "ttl_ms": grant.ttl_ms})
    else:
        out_console.print(f"lease {grant.id} granted with TTL {grant.ttl_ms / 1000:g}s")


@lease.command("keepalive")
@click.argument("lease_id", type=int)
@click.option("--once", is_flag=True, help="Renew once and exit.")
@client_options
def lease_keepalive(opts: ClientOptions, lease_id: int, once: bool) -> None:
    """Keep LEASE_ID alive until Ctrl-C (exit code 7 if it expires meanwhile)."""
    with opts.client() as client:
        if once:
            ttl_ms = client.lease_keepalive(lease_id)
            if opts.json:
                print_json({"id": lease_id, "ttl_ms": ttl_ms})
            else:
                out_console.print(f"lease {lease_id} renewed, TTL {ttl_ms / 1000:g}s")
            return
        info = client.lease_timetolive(lease_id)
        keeper = client.keep_alive(lease_id, info.granted_ttl_ms or info.ttl_ms)
        if not opts.json:
            out_console.print(
                f"keeping lease {lease_id} alive (TTL {info.granted_ttl_ms / 1000:g}s); "
                "Ctrl-C to stop"
            )
        error = keeper.wait()
        if error is not None:
            raise error


@lease.command("revoke")
@click.argument("lease_id", type=int)
@client_options
def lease_revoke(opts: ClientOptions, lease_id: int) -> None:
    """Revoke LEASE_ID, deleting its keys."""
    with opts.client() as client:
        deleted = client.lease_revoke(lease_id)
    if opts.json:
        print_json({"id": lease_id, "keys_deleted": deleted})
    else:
        out_console.print(f"lease {lease_id} revoked, {deleted} keys deleted")


@lease.command("ttl")
@click.argument("lease_id", type=int)
@client_options
def lease_ttl(opts: ClientOptions, lease_id: int) -> None:
    """Remaining and granted TTL of LEASE_ID and its keys."""
    with opts.client() as client:
        info = client.lease_timetolive(lease_id)
    if opts.json:
        print_json(
            {
                "id": info.id,
                "ttl_ms": info.ttl_ms,
                "granted_ttl_ms": info.granted_ttl_ms,
                "keys": info.keys,
            }
        )
        return
    keys = ", ".join(info.keys) or "none"
    out_console.print(
        f"lease {info.id}: {info.ttl_ms / 1000:g}s left of {info.granted_ttl_ms / 1000:g}s; "
        f"keys: {escape(keys)}"
    )


# -- admin ------------------------------------------------------------------------


def _admin_done(opts: ClientOptions, result: dict[str, Any], message: str) -> None:
    """Print what the call did; a no-op (`"changed": false`) says why nothing changed
    rather than claiming the change. Raises nothing."""
    if opts.json:
        print_json({k: v for k, v in result.items() if k != "header"})
    elif result.get("changed") is False:
        out_console.print(f"nothing to do: {escape(str(result.get('message') or message))}")
    else:
        out_console.print(message)


@cli.group(epilog=EXIT_CODES_HELP)
def member() -> None:
    """Membership changes (one at a time, idempotent)."""


@member.command("add-learner")
@click.argument("member_id", type=click.IntRange(min=1))
@click.argument("peer_url")
@click.option("--client-url", default="", help="Its client URL, for clients and status.")
@client_options
def member_add_learner(opts: ClientOptions, member_id: int, peer_url: str, client_url: str) -> None:
    """Add MEMBER_ID (reachable at PEER_URL host:port) as a non-voting learner."""
    with opts.client() as client:
        result = client.add_learner(member_id, peer_url, client_url)
    _admin_done(opts, result, f"member {member_id} added as a learner")


@member.command("promote")
@click.argument("member_id", type=click.IntRange(min=1))
@client_options
def member_promote(opts: ClientOptions, member_id: int) -> None:
    """Make learner MEMBER_ID a voter once it has caught up (exit 4 if not yet)."""
    with opts.client() as client:
        result = client.promote(member_id)
    _admin_done(opts, result, f"member {member_id} is a voter")


@member.command("remove")
@click.argument("member_id", type=click.IntRange(min=1))
@client_options
def member_remove(opts: ClientOptions, member_id: int) -> None:
    """Remove MEMBER_ID (leadership moves away first if it leads)."""
    with opts.client() as client:
        result = client.remove_member(member_id)
    _admin_done(opts, result, f"member {member_id} removed")


@cli.group(epilog=EXIT_CODES_HELP)
def leader() -> None:
    """Leadership."""


@leader.command("transfer")
@click.option(
    "--to",
    "to",
    type=click.IntRange(min=1),
    default=None,
    help="Target member [default: the most caught-up voter].",
)
@client_options
def leader_transfer(opts: ClientOptions, to: int | None) -> None:
    """Move leadership to another voter."""
    with opts.client() as client:
        result = client.transfer_leadership(to)
    target = result.get("leader_id") or result.get("to") or to or "the most caught-up voter"
    _admin_done(opts, result, f"leadership transferred to {target}")


@cli.command(epilog=EXIT_CODES_HELP)
@client_options
def snapshot(opts: ClientOptions) -> None:
    """Take a snapshot on the leader now (followers forward it)."""
    with opts.client() as client:
        index = client.snapshot()
    _admin_done(opts, {"snapshot_index": index}, f"snapshot taken at index {index}")


@cli.command(epilog=EXIT_CODES_HELP)
@click.option(
    "--keys-max", type=click.IntRange(min=1), default=None, help="Live keys the store may hold."
)
@click.option("--leases-max", type=click.IntRange(min=1), default=None, help="Live leases.")
@click.option(
    "--history-bytes-max",
    type=click.IntRange(min=1),
    default=None,
    help="Bytes of history kept for old reads and watch catch-up.",
)
@client_options
def limits(
    opts: ClientOptions, keys_max: int | None, leases_max: int | None,
    history_bytes_max: int | None,
) -> None:  # fmt: skip
    """Show the settable replicated bounds, or change them through the log."""
    changes = {name: value for name, value in (
        ("keys_max", keys_max), ("leases_max", leases_max),
        ("history_bytes_max", history_bytes_max)) if value is not None}  # fmt: skip
    with opts.client() as client:
        applied = client.set_limits(**changes) if changes else client.status().limits
    if opts.json:
        print_json(applied)
        return
    for name, value in applied.items():
        out_console.print(f"{name} = {value}")


register_locks(cli, client_options, parse_duration_ms)
register_chaos(cli)
register_ratelimit(cli, client_options)


# -- id ---------------------------------------------------------------------------


@cli.group("id", epilog=EXIT_CODES_HELP)
def id_() -> None:
    """Unique IDs: snowflake generators, segments, UUIDv7 (docs/ids.md)."""


@id_.command("next")
@click.argument("generator")
@click.option("-n", "count", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many IDs.")  # fmt: skip
@client_options
def id_next(opts: ClientOptions, generator: str, count: int) -> None:
    """Issue IDs of GENERATOR from a node (one per line)."""
    with opts.client() as client:
        ids = client.ids_next(generator, count)
    if opts.json:
        print_json({"generator": generator, "ids": ids})
    else:
        out_console.print("\n".join(str(value) for value in ids))


@id_.command("decode")
@click.argument("value", metavar="ID")
@click.option("--generator", "-g", default=None,
              help="Decode with this generator's layout (asks the cluster) [default: the "
                   "default layout, offline; a UUID is decoded as UUIDv7].")  # fmt: skip
@client_options
def id_decode(opts: ClientOptions, value: str, generator: str | None) -> None:
    """The time, worker and sequence of a snowflake ID (or the parts of a UUIDv7)."""
    from synod.ids import decode

    if generator is not None:
        if not value.isdigit():
            raise Failure(f"{value!r} is not a snowflake ID (a decimal integer)", EXIT_USAGE)
        with opts.client() as client:
            parts: dict[str, Any] = client.ids_decode(generator, int(value))
    else:
        try:
            parts = dict(decode(value).to_dict())
        except ValueError as error:
            raise Failure(str(error), EXIT_USAGE) from None
    if opts.json:
        print_json(parts)
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(parts["timestamp_ms"] / 1000))
    parts["time"] = f"{stamp}.{parts['timestamp_ms'] % 1000:03d}Z"
    out_console.print("  ".join(f"{key}={escape(str(val))}" for key, val in parts.items()))


@id_.command("list")
@client_options
def id_list(opts: ClientOptions) -> None:
    """Every generator (layout, worker leases, high-water mark) and segment tag."""
    with opts.client() as client:
        listing = client.ids_list()
    if opts.json:
        print_json(listing)
        return
    table = Table("generator", "bits t/w/s", "epoch_ms", "workers leased", "hwm_ms")
    for gen in listing["generators"]:
        bits = f"{gen['time_bits']}/{gen['worker_bits']}/{gen['sequence_bits']}"
        table.add_row(escape(gen["name"]), bits, str(gen["epoch_ms"]),
                      str(gen["workers_leased"]), str(gen["hwm_ms"]))  # fmt: skip
    out_console.print(table)
    tags = Table("tag", "max_id")
    for tag in listing["tags"]:
        tags.add_row(escape(tag["tag"]), str(tag["max_id"]))
    out_console.print(tags)


if __name__ == "__main__":
    main()
