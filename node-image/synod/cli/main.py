"""The `synod` command: a local dev cluster, a demo, and a client for any cluster."""

from __future__ import annotations

import base64
import functools
import os
import re
import signal
import subprocess
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

from synod.cli.chaos import register as register_chaos
from synod.cli.dev import DevCluster, DevClusterError
from synod.cli.locks import register as register_locks
from synod.cli.output import (
    EXIT_CODES_HELP,
    EXIT_CODES_TABLE,
    EXIT_COMPARE_FAILED,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    OUTPUT_FORMATS,
    Failure,
    err_console,
    handle_errors,
    out_console,
    print_json,
    print_rows,
    resolve_output,
    safe_text,
    stdout_is_terminal,
)
from synod.cli.ratelimit import register as register_ratelimit
from synod.cli.txn import TXN_GRAMMAR, parse_txn, read_txn_interactive, txn_response_lines
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
RESTARTS_PER_NODE_MAX = 5  # `synod dev --restart`: a member that keeps crashing is left down
DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
MEMBERS_SHOWN_MAX = 1024  # Rows of `synod members` (GossipSettings.members_max); -o json has all.
DURATION_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, None: 1000}


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """The options every client command takes (``output`` resolved: table/plain/json)."""

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

    @property
    def plain(self) -> bool:
        """True for `--output plain` (the default in a pipe). Raises nothing."""
        return self.output == "plain"

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


# The client flags are accepted before the subcommand (`synod --endpoints X kv get k`,
# like etcdctl's globals) and after it (`synod kv get k --endpoints X`); after wins.
# Defaults and environment variables live on the top-level group only.
TIMEOUT_S_DEFAULT = 5.0
ATTEMPTS_DEFAULT = 8


def _endpoints_option(**defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--endpoints",
        metavar="URLS",
        help="Comma-separated client URLs or host:port [env SYNOD_ENDPOINTS; "
        "default: the `synod dev` addresses 127.0.0.1:2379,2479,2579].",
        **defaults,
    )


def _output_option(**defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "-o",
        "--output",
        type=click.Choice(OUTPUT_FORMATS),
        help="table (boxes, for people), plain (one tab-separated line per row, for "
        "grep), json (one document per line); auto: table on a terminal, plain in a "
        "pipe [env SYNOD_OUTPUT; default: auto; text is auto's old name].",
        **defaults,
    )


def _timeout_option(**defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--timeout",
        "timeout_s",
        type=click.FloatRange(min=0.05),
        help=f"Seconds per attempt (each call retries with backoff) [default: "
        f"{TIMEOUT_S_DEFAULT:g}].",
        **defaults,
    )


def _attempts_option(**defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--attempts",
        "attempts_max",
        type=click.IntRange(min=1),
        help=f"Attempts per call before giving up (exit code 5) [default: {ATTEMPTS_DEFAULT}].",
        **defaults,
    )


# (flag, parameter, environment variable, help) of the TLS client flags (docs/security.md).
_TLS_FLAGS = (
    ("--ca", "tls_ca", "SYNOD_CA", "CA bundle of the nodes' certificates (HTTPS)"),
    ("--cert", "tls_cert", "SYNOD_CERT", "Client certificate, for nodes that ask for one"),
    ("--key", "tls_key", "SYNOD_KEY", "Private key of --cert"),
)


def _tls_options(*, root: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--ca/--cert/--key: with their environment variables on the group (``root``),
    unset (None: the group's value) on a subcommand."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for flag, name, env, text in _TLS_FLAGS:
            extra: dict[str, Any] = {"envvar": env, "default": ""} if root else {"default": None}
            func = click.option(flag, name, metavar="PEM", help=f"{text} [env {env}].",
                                **extra)(func)  # fmt: skip
        return func

    return decorate


def _global(name: str) -> Any:
    """The value of a client flag given before the subcommand (or its env/default).

    Raises nothing."""
    context = click.get_current_context(silent=True)
    return None if context is None else context.find_root().params.get(name)


def client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --endpoints/--output/--timeout/--attempts/--ca/--cert/--key and pass them as
    ``opts``; report errors. The same flags before the subcommand are the fallback."""

    @_endpoints_option(default=None)
    @_output_option(default=None)
    @_timeout_option(default=None)
    @_attempts_option(default=None)
    @_tls_options(root=False)
    @functools.wraps(func)
    @handle_errors
    def wrapper(
        endpoints: str | None,
        output: str | None,
        timeout_s: float | None,
        attempts_max: int | None,
        tls_ca: str | None,
        tls_cert: str | None,
        tls_key: str | None,
        **kwargs: Any,
    ) -> Any:
        def pick(value: Any, name: str, default: Any) -> Any:
            if value is not None:
                return value
            inherited = _global(name)
            return default if inherited is None else inherited

        opts = ClientOptions(
            pick(endpoints, "endpoints", None),
            resolve_output(pick(output, "output", "auto")),
            pick(timeout_s, "timeout_s", TIMEOUT_S_DEFAULT),
            pick(attempts_max, "attempts_max", ATTEMPTS_DEFAULT),
            pick(tls_ca, "tls_ca", ""),
            pick(tls_cert, "tls_cert", ""),
            pick(tls_key, "tls_key", ""),
        )
        return func(opts, **kwargs)

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


TOP_EPILOG = f"""\b
Examples:
  synod dev                                   # a local 3-node cluster (another terminal)
  synod kv put greeting hello
  synod kv get greeting
  synod kv range --prefix app/ -o json        # every key under app/, for scripts
  synod --endpoints 10.0.0.4:2379 status      # global flags go before or after
  synod kv watch --prefix app/ -- ./on-change.sh

\b
Shell completion (bash; zsh and fish alike, see docs/cli.md):
  eval "$(_SYNOD_COMPLETE=bash_source synod)"

{EXIT_CODES_TABLE}"""


@click.group(context_settings=CONTEXT_SETTINGS, epilog=TOP_EPILOG)
@click.version_option(package_name="synod", prog_name="synod")
@_endpoints_option(envvar="SYNOD_ENDPOINTS", default=None)
@_output_option(envvar="SYNOD_OUTPUT", default="auto")
@_timeout_option(default=TIMEOUT_S_DEFAULT)
@_attempts_option(default=ATTEMPTS_DEFAULT)
@_tls_options(root=True)
def cli(
    endpoints: str | None, output: str, timeout_s: float, attempts_max: int, tls_ca: str,
    tls_cert: str, tls_key: str,
) -> None:  # fmt: skip
    """Synod: a Raft-backed key-value store with leases and watches.

    Start a local cluster with `synod dev`, take the tour with `synod demo`, and talk
    to any cluster with the other commands. The client flags (--endpoints, -o,
    --timeout, --attempts, --ca, --cert, --key) go before or after the subcommand.
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
@click.option(
    "--restart",
    is_flag=True,
    help=f"Restart a member that exits (at most {RESTARTS_PER_NODE_MAX} times each).",
)
@handle_errors
def dev(
    nodes: int | None,
    data_dir: Path,
    base_port: int | None,
    node_args: tuple[str, ...],
    leader_wait_s: float,
    restart: bool,
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
        _run_dev(cluster, leader_wait_s, restart)
    except DevClusterError as exc:
        raise Failure(str(exc)) from exc
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_dev(cluster: DevCluster, leader_wait_s: float, restart: bool = False) -> None:
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
        _supervise(cluster, restart)
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


def _supervise(cluster: DevCluster, restart: bool) -> None:
    """Report (and with ``restart`` restart) nodes that exit until interrupted.

    Raises KeyboardInterrupt, _Terminated."""
    restarts: dict[int, int] = {}
    while True:
        handle_exits(cluster, restart, restarts)
        time.sleep(DEV_POLL_INTERVAL_S)


def handle_exits(cluster: DevCluster, restart: bool, restarts: dict[int, int]) -> list[int]:
    """One look at the nodes: report each that exited, restart it when ``restart`` (at
    most RESTARTS_PER_NODE_MAX times; ``restarts`` counts them), else say how to.
    Returns the restarted node ids. Raises nothing (a failed start is reported)."""
    restarted = []
    for node_id, code in cluster.exited():
        err_console.print(f"[yellow]node {node_id} exited with code {code}[/]")
        tail = cluster.tail_log(node_id)
        if tail:
            err_console.print(escape(tail), style="dim")
        if not restart:
            err_console.print("to have it restarted, run `synod dev --restart` (Ctrl-C "
                              "here first; the data is kept)")  # fmt: skip
            continue
        if restarts.get(node_id, 0) >= RESTARTS_PER_NODE_MAX:
            err_console.print(f"node {node_id} restarted {RESTARTS_PER_NODE_MAX} times "
                              "already: not again (see its log)")  # fmt: skip
            continue
        restarts[node_id] = restarts.get(node_id, 0) + 1
        try:
            cluster.start_node(node_id)
        except OSError as exc:
            err_console.print(f"[red]node {node_id} could not restart: {escape(str(exc))}[/]")
            continue
        restarted.append(node_id)
        out_console.print(f"node {node_id} restarted ({restarts[node_id]} of "
                          f"{RESTARTS_PER_NODE_MAX})")  # fmt: skip
    assert len(restarted) <= len(cluster.nodes)
    return restarted


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
        _print_status(opts.output, first, rows)


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


def _print_status(
    output: str, first: ClusterStatus, rows: list[tuple[Any, ClusterStatus | None, str]]
) -> None:
    """Raises nothing."""
    term = max([first.term] + [n.term for _, n, _ in rows if n])
    cells: list[list[str]] = []
    styles: list[str] = []
    for member, node, error in rows:
        contact = "" if member.last_contact_ms is None else f"{member.last_contact_ms} ms"
        endpoint = member.client_url.removeprefix("http://")
        if node is None:
            cells.append([str(member.id), endpoint, f"unreachable {error}", "", "", "",
                          str(member.match_index or ""), contact])  # fmt: skip
            styles.append("red")
            continue
        role = node.role + ("" if member.role != "learner" else " (learner)")
        cells.append([str(member.id), endpoint, role, str(node.term), str(node.commit_index),
                      str(node.applied_index), str(member.match_index or ""), contact])  # fmt: skip
        styles.append("bold green" if node.role == "leader" else "")
    columns = ("ID", "ENDPOINT", "ROLE", "TERM", "COMMIT", "APPLIED", "MATCH", "CONTACT")
    title = f"leader: {first.leader_id or 'none'}   term: {term}"
    print_rows(output, columns, cells, title=title, styles=styles)


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
    colours = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}
    shown = view["members"][:MEMBERS_SHOWN_MAX]
    rows = [[str(m.get(name, "")) for name in ("name", "state", "incarnation", "address",
                                               "client_url")] for m in shown]  # fmt: skip
    print_rows(opts.output, ("NAME", "STATE", "INCARNATION", "ADDRESS", "CLIENT URL"), rows,
               title=f"gossip view of {view.get('self')}   health score: "
                     f"{view.get('health_score')}",
               styles=[colours.get(str(m.get("state", "")), "") for m in shown])  # fmt: skip
    if len(view["members"]) > MEMBERS_SHOWN_MAX:
        out_console.print(f"{len(view['members']) - MEMBERS_SHOWN_MAX} more: use -o json")


# -- kv ---------------------------------------------------------------------------


@cli.group(epilog=EXIT_CODES_HELP)
def kv() -> None:
    """Keys and values: put, get, del, range, cas, watch."""


def _read_value(value: str) -> str | bytes:
    """VALUE, or stdin for `-` (as text if it is UTF-8, else as bytes). Raises nothing."""
    if value != "-":
        return value
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


@kv.command(
    "put",
    epilog="""\b
Examples:
  synod kv put app/config v1
  synod kv put app/config - < config.yaml     # the value from stdin
  synod kv put session/42 alive --lease 7587""",
)
@click.argument("key")
@click.argument("value")
@click.option("--lease", type=int, default=0, help="Attach to this lease id.")
@click.option("--prev-kv", is_flag=True, help="Show the previous value.")
@client_options
def kv_put(opts: ClientOptions, key: str, value: str, lease: int, prev_kv: bool) -> None:
    """Set KEY to VALUE (`-` reads the value from stdin)."""
    with opts.client() as client:
        result = client.put(key, _read_value(value), lease=lease, prev_kv=prev_kv)
    if opts.json:
        print_json({"revision": result.revision, "prev_kv": kv_json(result.prev_kv)})
        return
    out_console.print(f"OK (revision {result.revision})")
    if result.prev_kv is not None:
        out_console.print(f"previous: {escape(safe_text(result.prev_kv.value))}")


def _revision_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--revision, with etcdctl's --rev as an alias. Raises nothing."""
    return click.option(
        "--revision", "--rev", "revision", type=click.IntRange(min=0), default=0, help=help_text
    )


@kv.command(
    "get",
    epilog="""\b
Examples:
  synod kv get app/config
  synod kv get app/config --revision 12       # as it was at revision 12
  synod kv get app/config -o json | jq .version""",
)
@click.argument("key")
@_revision_option("Read at this revision.")
@click.option("--serializable", is_flag=True, help="Read from the node asked (may be stale).")
@client_options
def kv_get(opts: ClientOptions, key: str, revision: int, serializable: bool) -> None:
    """Print the value of KEY (exit code 3 when absent).

    On a terminal control characters are shown escaped; in a pipe the value is
    written as stored.
    """
    with opts.client() as client:
        found = client.get(key, revision=revision, serializable=serializable)
    if found is None:
        raise Failure(f"key {key!r} not found", EXIT_NOT_FOUND)
    if opts.json:
        print_json(found.to_json())
    elif opts.plain and not stdout_is_terminal():
        stdout = sys.stdout.buffer
        stdout.write(found.value_bytes + b"\n")
        stdout.flush()
    else:
        click.echo(safe_text(found.value))


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


RANGE_PAGE_SIZE_DEFAULT = 1000
RANGE_PAGES_MAX = 1_000_000  # bounds the paging loop (a billion keys at the default size)
EVERY_KEY = "\x00"  # the lowest key: [EVERY_KEY, "\x00") is the whole keyspace


def prefix_end(prefix: str) -> str:
    """The first key after every key starting with ``prefix`` ("\x00" = no end): the
    last character that can grow, grown (UTF-8 keeps code point order). Raises nothing."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF and not 0xD7FF <= last < 0xDFFF:
            return "".join(chars) + chr(last + 1)
    return "\x00"


def _range_pages(
    client: Client,
    key: str,
    range_end: str,
    limit: int,
    page_size: int,
    keys_only: bool,
    revision: int,
) -> Iterator[tuple[list[KV], bool, int]]:
    """Pages of [key, range_end) at one revision: (kvs, more, count) until ``limit``
    keys (0: all). Raises SynodError."""  # fmt: skip
    delivered = 0
    for _ in range(RANGE_PAGES_MAX):
        want = page_size if not limit else min(page_size, limit - delivered)
        page = client.range(key, range_end, limit=want, keys_only=keys_only, revision=revision)
        revision = revision or page.header.revision  # later pages read the same snapshot
        delivered += len(page.kvs)
        more = page.more and bool(page.kvs)
        done = not more or (limit and delivered >= limit)
        yield page.kvs, more, page.count
        if done:
            return
        key = page.kvs[-1].key + "\x00"
    raise Failure(f"more than {RANGE_PAGES_MAX} pages: use a larger --page-size")


@kv.command(
    "range",
    epilog="""\b
Examples:
  synod kv range app/ --prefix                # every key under app/
  synod kv range a c                          # keys in [a, c)
  synod kv range --from-key                   # the whole keyspace, paged
  synod kv range app/b --from-key --limit 10  # ten keys from app/b on
  synod kv range app/ --prefix --keys-only | wc -l""",
)
@click.argument("key", required=False, default="")
@click.argument("range_end", required=False, default="")
@click.option("--prefix", is_flag=True, help="Every key starting with KEY (all keys if KEY is '').")
@click.option("--from-key", is_flag=True, help="Every key >= KEY (all keys without KEY).")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="At most this many.")
@click.option(
    "--page-size",
    type=click.IntRange(min=1),
    default=RANGE_PAGE_SIZE_DEFAULT,
    show_default=True,
    help="Keys per request; pages read one revision.",
)
@_revision_option("Read at this revision [default: now].")
@click.option("--keys-only", is_flag=True, help="Keys without values.")
@client_options
def kv_range(
    opts: ClientOptions, key: str, range_end: str, prefix: bool, from_key: bool, limit: int,
    page_size: int, revision: int, keys_only: bool,
) -> None:  # fmt: skip
    """List KEY, the keys in [KEY, RANGE_END), those under a prefix or from a key."""
    if sum((prefix, from_key, bool(range_end))) > 1:
        raise Failure("give one of RANGE_END, --prefix and --from-key", EXIT_USAGE)
    if from_key or (prefix and not key):
        key, range_end = key or EVERY_KEY, "\x00"
    elif prefix:
        range_end = prefix_end(key)
    elif not key:
        raise Failure("KEY is required (or --from-key / --prefix for every key)", EXIT_USAGE)
    kvs: list[KV] = []
    more, count = False, 0
    with opts.client() as client:
        for page, page_more, page_count in _range_pages(client, key, range_end, limit, page_size,
                                                   keys_only, revision):  # fmt: skip
            count = count or page_count  # the first page counts the whole range
            more = page_more
            if opts.plain:  # stream: a large range does not wait for its last page
                _print_plain_kvs(page, keys_only)
            else:
                kvs.extend(page)
    if opts.json:
        print_json({"kvs": [k.to_json() for k in kvs], "more": more, "count": count})
    elif opts.plain:
        if more:
            err_console.print(f"{count} keys in the range; more than shown (raise --limit)")
    else:
        _print_kv_table(kvs, keys_only, count, more)


def _print_plain_kvs(kvs: list[KV], keys_only: bool) -> None:
    """One line per key: `KEY<TAB>VALUE` (or `KEY`), escaped. Raises nothing."""
    if not kvs:
        return
    if keys_only:
        click.echo("\n".join(safe_text(item.key) for item in kvs))
    else:
        click.echo("\n".join(f"{safe_text(item.key)}\t{safe_text(item.value)}" for item in kvs))


def _print_kv_table(kvs: list[KV], keys_only: bool, count: int, more: bool) -> None:
    """Raises nothing."""
    columns: tuple[str, ...] = ("KEY", "VERSION", "MOD REV", "LEASE")
    if not keys_only:
        columns = ("KEY", "VALUE", "VERSION", "MOD REV", "LEASE")
    rows = []
    for item in kvs:
        values = [] if keys_only else [item.value]
        lease = str(item.lease) if item.lease else ""
        rows.append([item.key, *values, str(item.version), str(item.mod_revision), lease])
    caption = f"{count} keys" + (" (more)" if more else "")
    print_rows("table", columns, rows, caption=caption)


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


WATCH_ENV_PREFIX = "SYNOD_WATCH_"


@kv.command(
    "watch",
    epilog="""\b
Examples:
  synod kv watch app/config
  synod kv watch app/ --prefix --revision 1   # replay the history first
  synod kv watch app/ --prefix -- sh -c 'echo "$SYNOD_WATCH_EVENT_TYPE $SYNOD_WATCH_KEY"'

\b
With `-- CMD`, CMD runs once per event (one at a time) with SYNOD_WATCH_EVENT_TYPE
(PUT or DELETE), SYNOD_WATCH_KEY, SYNOD_WATCH_VALUE, SYNOD_WATCH_REVISION and
SYNOD_WATCH_PREV_VALUE (when known) in its environment; a value holding a NUL byte
comes as SYNOD_WATCH_VALUE_BASE64 instead.""",
)
@click.argument("key")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD...]")
@click.option("--prefix", is_flag=True, help="Watch every key starting with KEY.")
@_revision_option("Start at this revision [default: now].")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N events.")
@client_options
def kv_watch(
    opts: ClientOptions, key: str, command: tuple[str, ...], prefix: bool, revision: int,
    count: int | None,
) -> None:  # fmt: skip
    """Print changes of KEY as they happen, or run CMD per change (resumes by itself
    after failures)."""
    seen = 0
    with opts.client() as client, client.watch(key, prefix=prefix,
                                               start_revision=revision) as events:  # fmt: skip
        for event in events:
            if command:
                _run_for_event(command, event)
            else:
                _print_event(opts, event)
            seen += 1
            if count is not None and seen >= count:
                return


def watch_env(event: WatchEvent) -> dict[str, str]:
    """The SYNOD_WATCH_* variables describing ``event``. Raises nothing."""
    env = {
        "EVENT_TYPE": event.type.upper(),
        "KEY": event.kv.key,
        "REVISION": str(event.revision),
    }
    values = {"VALUE": event.kv.value_bytes}
    if event.prev_kv is not None:
        values["PREV_VALUE"] = event.prev_kv.value_bytes
    for name, data in values.items():
        if b"\x00" in data:  # an environment string cannot hold NUL
            env[f"{name}_BASE64"] = base64.b64encode(data).decode("ascii")
        else:
            env[name] = data.decode("utf-8", errors="surrogateescape")
    return {WATCH_ENV_PREFIX + name: value for name, value in env.items()}


def _run_for_event(command: tuple[str, ...], event: WatchEvent) -> None:
    """Run CMD for one event and wait for it; a failure is reported, the watch goes on.

    Raises Failure when CMD cannot be started at all."""
    env = {**os.environ, **watch_env(event)}
    try:
        done = subprocess.run(list(command), env=env, check=False)
    except OSError as exc:
        raise Failure(f"cannot run {command[0]!r}: {exc}") from exc
    if done.returncode != 0:
        err_console.print(
            f"[yellow]{escape(command[0])} exited with {done.returncode} "
            f"(revision {event.revision})[/]"
        )


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
    key, value = safe_text(event.kv.key), safe_text(event.kv.value)
    if opts.plain:
        shown = value if event.type == "put" else ""  # four columns either way
        click.echo("\t".join([event.type.upper(), key, shown, str(event.revision)]))
        return
    if event.type == "put":
        line = f"[green]PUT[/]    {escape(key)} = {escape(value)}"
    else:
        line = f"[red]DELETE[/] {escape(key)}"
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


@lease.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=None,
              help="At most this many [default: 10000].")  # fmt: skip
@client_options
def lease_list(opts: ClientOptions, limit: int | None) -> None:
    """Every live lease: id, remaining and granted TTL."""
    with opts.client() as client:
        found = client.lease_list(limit or 0)
    if opts.json:
        print_json({"leases": [{"id": info.id, "ttl_ms": info.ttl_ms,
                                "granted_ttl_ms": info.granted_ttl_ms} for info in found.leases],
                    "count": found.count, "more": found.more})  # fmt: skip
        return
    rows = [[str(info.id), f"{info.ttl_ms / 1000:g}s", f"{info.granted_ttl_ms / 1000:g}s"]
            for info in found.leases]  # fmt: skip
    more = f"{found.count} leases; more than shown (raise --limit)" if found.more else ""
    print_rows(opts.output, ("ID", "TTL", "GRANTED"), rows, caption=more)


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


@member.command("list")
@client_options
def member_list(opts: ClientOptions) -> None:
    """Every member: id, role, peer and client URL (as the cluster's configuration has
    them; `synod endpoint status` asks each one)."""
    with opts.client() as client:
        first = client.status()
    if opts.json:
        print_json({"leader_id": first.leader_id, "members": first.raw.get("members", [])})
        return
    rows = [[str(m.id), "leader" if m.id == first.leader_id else m.role, m.peer_url,
             m.client_url] for m in first.members]  # fmt: skip
    print_rows(opts.output, ("ID", "ROLE", "PEER URL", "CLIENT URL"), rows)


@member.command(
    "add",
    epilog="""\b
Examples:
  synod member add 4 10.0.0.4:2380 --client-url http://10.0.0.4:2379
  # start the member, wait until `synod status` shows it caught up, then:
  synod member promote 4""",
)
@click.argument("member_id", type=click.IntRange(min=1))
@click.argument("peer_url")
@click.option("--client-url", default="", help="Its client URL, for clients and status.")
@client_options
def member_add(opts: ClientOptions, member_id: int, peer_url: str, client_url: str) -> None:
    """Add MEMBER_ID at PEER_URL (host:port). It joins as a learner (safe: it cannot
    stall the quorum while it catches up); `synod member promote` makes it a voter."""
    with opts.client() as client:
        result = client.add_learner(member_id, peer_url, client_url)
    _admin_done(opts, result, f"member {member_id} added as a learner; once it has "
                f"caught up: synod member promote {member_id}")  # fmt: skip


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
def endpoint() -> None:
    """Ask each endpoint (or, with --cluster, each member) on its own."""


def _endpoint_urls(client: Client, cluster: bool) -> list[str]:
    """The endpoints given, or every member's client URL. Raises SynodError."""
    if not cluster:
        return list(client.endpoints)
    return [m.client_url for m in client.status().members if m.client_url]


def _probe(client: Client, url: str) -> tuple[ClusterStatus | None, str, float]:
    """(status or None, error, milliseconds taken) of one endpoint, one attempt.

    Raises nothing."""
    started = time.monotonic()
    try:
        found: ClusterStatus | None = client.status(url)
        error = ""
    except SynodError as exc:
        found, error = None, exc.detail
    return found, error, (time.monotonic() - started) * 1000


_CLUSTER_OPTION = click.option(
    "--cluster", is_flag=True, help="Every member's client URL, not just --endpoints."
)


@endpoint.command("health")
@_CLUSTER_OPTION
@client_options
def endpoint_health(opts: ClientOptions, cluster: bool) -> None:
    """Whether each endpoint answers and knows a leader (exit 5 if one does not)."""
    with opts.client() as client:
        urls = _endpoint_urls(client, cluster)
        probes = [(url, *_probe(client, url)) for url in urls]
    docs: list[dict[str, Any]] = []
    for url, found, failed, took_ms in probes:
        healthy = found is not None and bool(found.leader_id)
        error = "no leader" if found is not None and not healthy else failed
        docs.append({"endpoint": url, "health": healthy, "took_ms": round(took_ms, 1),
                     "error": error or None})  # fmt: skip
    if opts.json:
        print_json(docs)
    else:
        rows = [[str(d["endpoint"]), "healthy" if d["health"] else "unhealthy",
                 f"{d['took_ms']:.1f} ms", str(d["error"] or "")] for d in docs]  # fmt: skip
        styles = ["green" if d["health"] else "red" for d in docs]
        print_rows(opts.output, ("ENDPOINT", "HEALTH", "TOOK", "ERROR"), rows, styles=styles)
    if not all(d["health"] for d in docs):
        sys.exit(EXIT_UNAVAILABLE)


@endpoint.command("status")
@_CLUSTER_OPTION
@client_options
def endpoint_status(opts: ClientOptions, cluster: bool) -> None:
    """Member id, role, leader, term and indexes of each endpoint (exit 5 if one does
    not answer)."""
    with opts.client() as client:
        urls = _endpoint_urls(client, cluster)
        probes = [(url, *_probe(client, url)) for url in urls]
    if opts.json:
        print_json([{"endpoint": url, "status": found.raw if found else None,
                     "error": error or None} for url, found, error, _ in probes])  # fmt: skip
    else:
        rows = []
        for url, found, error, _ in probes:
            if found is None:
                rows.append([url, "", f"unreachable {error}", "", "", "", ""])
                continue
            rows.append([url, str(found.member_id), found.role, str(found.leader_id),
                         str(found.term), str(found.commit_index),
                         str(found.applied_index)])  # fmt: skip
        columns = ("ENDPOINT", "ID", "ROLE", "LEADER", "TERM", "COMMIT", "APPLIED")
        print_rows(opts.output, columns, rows)
    if any(found is None for _, found, _, _ in probes):
        sys.exit(EXIT_UNAVAILABLE)


@cli.command(
    epilog="""\b
Examples:
  synod compaction 1200        # history below revision 1200 is dropped"""
)
@click.argument("revision", type=click.IntRange(min=1))
@client_options
def compaction(opts: ClientOptions, revision: int) -> None:
    """Drop the history below REVISION (reads and watches from before it then exit 6)."""
    with opts.client() as client:
        kept = client.compact(revision)
    if opts.json:
        print_json({"compact_revision": kept})
    else:
        out_console.print(f"compacted: history from revision {kept} kept")


@cli.command(
    epilog=f"""\b
Examples:
  synod txn                    # prompts for the three parts
  synod txn -f txn.txt         # or < txn.txt

\b
{TXN_GRAMMAR}"""
)
@click.option("-f", "--file", "source", type=click.File("r"), default=None,
              help="Read the transaction from FILE ('-' or a pipe: stdin).")  # fmt: skip
@client_options
def txn(opts: ClientOptions, source: Any) -> None:
    """Run a transaction: compares, then the success or the failure ops (as etcdctl's
    `txn`). Exit code 4 when the compares did not hold (the failure ops ran)."""
    if source is None:
        text = read_txn_interactive() if sys.stdin.isatty() else sys.stdin.read()
    else:
        text = source.read()
    try:
        parsed = parse_txn(text)
    except ValueError as exc:
        raise Failure(f"txn: {exc}", EXIT_USAGE) from exc
    with opts.client() as client:
        result = client.txn(parsed)
    if opts.json:
        print_json({"succeeded": result.succeeded, "revision": result.header.revision,
                    "responses": result.responses})  # fmt: skip
    else:
        click.echo("SUCCESS" if result.succeeded else "FAILURE")
        for line in txn_response_lines(result):
            click.echo(line)
    if not result.succeeded:
        sys.exit(EXIT_COMPARE_FAILED)


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


@cli.group(
    epilog=f"""\b
Examples:
  synod snapshot                          # take one now (log compaction)
  synod snapshot save backup.snap         # take one and download it
  synod snapshot status backup.snap       # what a file holds (offline)

{EXIT_CODES_HELP}""",
    invoke_without_command=True,
)
@client_options
def snapshot(opts: ClientOptions) -> None:
    """Take a snapshot on the leader now (followers forward it); save or inspect one."""
    if click.get_current_context().invoked_subcommand is not None:
        return
    with opts.client() as client:
        index = client.snapshot()
    _admin_done(opts, {"snapshot_index": index}, f"snapshot taken at index {index}")


@snapshot.command("save")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@client_options
def snapshot_save(opts: ClientOptions, path: Path) -> None:
    """Take a snapshot on the leader and write it to PATH (atomically)."""
    from synod.cli.snapshots import snapshot_status, write_atomically

    with opts.client() as client:
        index, term, content = client.snapshot_download()
    write_atomically(path, content)
    facts = snapshot_status(path)  # verifies what was written
    if opts.json:
        print_json({"path": str(path), **facts})
    else:
        out_console.print(f"snapshot saved to {escape(str(path))}: index {index}, term {term}, "
                          f"revision {facts['revision']}, {facts['keys']} keys, "
                          f"{facts['bytes']} bytes")  # fmt: skip


@snapshot.command(
    "restore",
    epilog="""\b
Examples:
  # the three data directories of a new `synod dev` cluster, then start it:
  synod snapshot restore backup.snap --data-dir .synod/new \\
    --initial-cluster 1=127.0.0.1:2380@http://127.0.0.1:2379,2=...,3=...
  synod dev --data-dir .synod/new
  # one member's directory (each host restores its own):
  synod snapshot restore backup.snap --id 2 --data-dir /var/lib/synod \\
    --initial-cluster 1=10.0.0.1:2380@http://10.0.0.1:2379,2=...""",
)
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--initial-cluster", required=True, metavar="ID=HOST:PORT@URL,...",
              help="The new cluster's members, as `synod node --initial-cluster`.")  # fmt: skip
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="With --id: that member's data directory; without: DIR/node-<id> "
                   "for every member (the `synod dev` layout).")  # fmt: skip
@click.option("--id", "member_id", type=click.IntRange(min=1), default=None,
              help="Write only this member's directory.")  # fmt: skip
@handle_errors
def snapshot_restore(path: Path, initial_cluster: str, data_dir: Path,
                     member_id: int | None) -> None:  # fmt: skip
    """Build a new cluster's data directories from the snapshot file PATH (offline, as
    `etcdutl snapshot restore`): the keys, leases, locks and IDs of the snapshot, the
    members of --initial-cluster. Directories must be empty or absent."""
    from synod.cli.snapshots import restore_snapshot
    from synod.node.config import ConfigError, parse_initial_cluster

    try:
        ids = [member.node_id for member in parse_initial_cluster(initial_cluster)]
        targets = ({member_id: data_dir} if member_id is not None
                   else {node_id: data_dir / f"node-{node_id}" for node_id in ids})  # fmt: skip
        index = restore_snapshot(path, initial_cluster, targets)
    except (ValueError, ConfigError) as exc:
        raise Failure(str(exc), EXIT_USAGE) from exc
    for node_id, directory in sorted(targets.items()):
        out_console.print(f"member {node_id}: {escape(str(directory))}")
    out_console.print(
        f"restored at index {index}; start each member on its directory "
        "(`synod node --initial-cluster ...`, or `synod dev` on the parent)"
    )


@snapshot.command("status")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Choice(OUTPUT_FORMATS), default=None,
              help="table, plain or json (as the client commands).")  # fmt: skip
@handle_errors
def snapshot_status_command(path: Path, output: str | None) -> None:
    """What the snapshot file PATH holds: index, term, members, revision, keys, leases
    (offline: no cluster needed; exit 2 if it does not verify)."""
    from synod.cli.snapshots import snapshot_status

    try:
        facts = snapshot_status(path)
    except ValueError as exc:
        raise Failure(str(exc), EXIT_USAGE) from exc
    shown = resolve_output(output or _global("output") or "auto")
    if shown == "json":
        print_json(facts)
        return
    members = ", ".join(f"{m['id']}={m['peer_url']}" for m in facts["members"])
    rows = [[name, str(facts[name])] for name in ("index", "term", "revision", "keys",
                                                   "leases", "bytes", "crc32c")]  # fmt: skip
    rows.append(["members", members])
    print_rows(shown, ("FIELD", "VALUE"), rows)


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


@cli.command(
    epilog="""\b
Examples:
  synod shell
  synod> kv put app/config v1
  synod> kv get app/<Tab>                 # completes key names from the cluster
  printf 'kv put a 1\\nkv get a\\n' | synod shell"""
)
@click.option(
    "--history",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("~/.synod_history").expanduser(),
    show_default=True,
    help="History file (interactive only).",
)
@client_options
def shell(opts: ClientOptions, history: Path) -> None:
    """Run synod commands in a REPL with history and Tab completion of commands and
    key names; from a pipe, one command per line (exit 1 if one failed)."""
    from synod.cli.shell import run_shell

    global_args = ["-o", opts.output, "--timeout", str(opts.timeout_s),
                   "--attempts", str(opts.attempts_max)]  # fmt: skip
    if opts.endpoints:
        global_args += ["--endpoints", opts.endpoints]
    interactive = sys.stdin.isatty()
    if interactive:
        out_console.print("synod shell: commands without `synod`; help, exit or Ctrl-D.")
    with opts.client() as client:
        failures = run_shell(cli, global_args, client, history if interactive else None,
                             interactive)  # fmt: skip
    if failures and not interactive:
        sys.exit(EXIT_ERROR)


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
    rows = [[gen["name"], f"{gen['time_bits']}/{gen['worker_bits']}/{gen['sequence_bits']}",
             str(gen["epoch_ms"]), str(gen["workers_leased"]), str(gen["hwm_ms"])]
            for gen in listing["generators"]]  # fmt: skip
    print_rows(opts.output, ("generator", "bits t/w/s", "epoch_ms", "workers leased", "hwm_ms"),
               rows)  # fmt: skip
    tag_rows = [[tag["tag"], str(tag["max_id"])] for tag in listing["tags"]]
    print_rows(opts.output, ("tag", "max_id"), tag_rows)


if __name__ == "__main__":
    main()
