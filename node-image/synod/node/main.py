"""`synod node`: run one member until SIGTERM or SIGINT.

Exit codes: 0 after a clean stop, 2 for a configuration error, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from synod.node.config import ConfigError, NodeConfig, load_config
from synod.node.forward import HttpForwarder
from synod.node.gossip_node import start_gossip, stop_gossip
from synod.node.guard import HostAllowList
from synod.node.http import HttpLimits, build_app, server_options
from synod.node.rls_grpc import RlsServer
from synod.node.server import RaftServer
from synod.node.tracing import configure_tracing
from synod.node.transport import split_host_port
from synod.tls import ReloadingServerContext, TlsFiles, client_context

if TYPE_CHECKING:
    from synod.etcdapi.server import EtcdApiServer

log = logging.getLogger("synod.node")


async def serve(config: NodeConfig, stop: asyncio.Event) -> None:
    """Start the member and its HTTP API; return after `stop` is set and all is closed."""
    configure_tracing(f"synod-node-{config.node_id}")
    server = RaftServer(config)
    await server.start()
    try:
        gossip = await start_gossip(config, server.node_metrics.registry)
    except OSError:
        await server.stop(transfer_leadership=False)
        raise
    limits = HttpLimits(service=server.state.limits)  # One set of limits for both layers.
    tls: ReloadingServerContext | None = None
    forward_ssl = None
    if config.tls_cert:
        tls = ReloadingServerContext(TlsFiles(config.tls_cert, config.tls_key,
                                              config.tls_client_ca))  # fmt: skip
        forward_ssl = client_context(config.tls_ca, config.tls_cert, config.tls_key)
    app = build_app(
        server,
        limits=limits,
        forwarder=HttpForwarder(limits.forward_timeout_ms, forward_ssl),
        registry=server.node_metrics.registry,
        gossip=gossip.core if gossip else None,
        host_allow=HostAllowList.parse(config.host_allow),
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **server_options(limits))
    await runner.setup()
    host, port = split_host_port(config.listen_client)
    site = web.TCPSite(runner, host, port, reuse_address=True,
                       ssl_context=tls.context if tls else None)  # fmt: skip
    await site.start()
    reloader = asyncio.create_task(tls.watch()) if tls else None
    log.info("node %d serving clients on %s", config.node_id, config.listen_client)
    rls = RlsServer(app, server, config.listen_rls) if config.listen_rls else None
    if rls is not None:
        await rls.start()
    print(f"synod node {config.node_id}: clients {config.advertise_client}", flush=True)
    etcd = await _start_etcd_api(config, server)
    try:
        await stop.wait()
    finally:
        if rls is not None:
            await rls.stop()
        # Hand leadership over while still answering (forwarded) requests, then close.
        if reloader is not None:
            reloader.cancel()
        await stop_gossip(gossip)  # Others see it leave rather than suspect it.
        await server.stop(transfer_leadership=True)
        if etcd is not None:
            await etcd.stop()
        await runner.cleanup()
    log.info("node %d stopped", config.node_id)


async def _start_etcd_api(config: NodeConfig, server: RaftServer) -> EtcdApiServer | None:
    """Serve etcd's v3 gRPC API when --listen-etcd is given. Raises OSError."""
    if not config.listen_etcd:
        return None
    from synod.etcdapi.server import EtcdApiServer

    etcd = EtcdApiServer(
        server,
        cluster_id=int.from_bytes(config.cluster_id[:8], "big"),
        listen=config.listen_etcd,
        advertise=config.advertise_etcd,
        limits=lambda: server.state.limits,
        lease_ids=lambda: sorted(server.state.leases.ttls_ms()),
        registry=server.node_metrics.registry,
    )
    await etcd.start()
    print(f"synod node {config.node_id}: etcd clients {config.advertise_etcd}", flush=True)
    return etcd


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the configuration and run. Returns the exit code."""
    try:
        config = load_config(list(sys.argv[1:] if argv is None else argv), os.environ)
    except ConfigError as error:
        print(f"synod node: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop
    except ImportError:  # uvloop is optional: plain asyncio works, only slower.
        return asyncio.run(_main(config))
    return uvloop.run(_main(config))


async def _main(config: NodeConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await serve(config, stop)
    except ConfigError as error:  # E.g. the data dir belongs to another cluster id.
        print(f"synod node: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"synod node: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
