"""HTTPS on the client API (issue 15): the real app behind a TLS listener, the SDK and
the CLI with `ca`/`cert`/`key`, client certificates, and certificate files rotated
while clients keep working."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner

from synod.cli.main import cli
from synod.client import AsyncClient, Unavailable
from synod.node.config import ConfigError, load_config
from synod.node.http import build_app
from synod.tls import ReloadingServerContext, TlsFiles, client_context
from tests.ports import free_port
from tests.tls_helpers import Authority, Leaf
from tests.unit.http_helpers import async_test
from tests.unit.memory_node import MemoryNode

ROTATION_REQUESTS = 20
WATCH_WAIT_S = 10.0  # generous: the watch checks every 10 ms here


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Authority, Leaf, Leaf, Leaf]:
    """(CA, server certificate, second server certificate, client certificate)."""
    ca = Authority.create(tmp_path / "pki")
    return ca, ca.issue("node"), ca.issue("node-next"), ca.issue("alice", client=True)


@contextlib.asynccontextmanager
async def https_node(files: TlsFiles) -> AsyncIterator[tuple[str, ReloadingServerContext]]:
    """A memory node's real app on a TLS listener; yields (host:port, its context)."""
    tls = ReloadingServerContext(files)
    node = MemoryNode()
    runner = web.AppRunner(build_app(node, registry=node.registry), access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls.context)
    await site.start()
    try:
        yield f"127.0.0.1:{port}", tls
    finally:
        await runner.cleanup()


async def _served_serial(address: str, ca: Path) -> int:
    """The serial of the certificate a new connection to ``address`` is shown."""
    host, port = address.rsplit(":", 1)
    context = client_context(str(ca))
    _reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
    try:
        sslobj = writer.get_extra_info("ssl_object")
        assert sslobj is not None
        der = sslobj.getpeercert(binary_form=True)
        assert der is not None
        pem = ssl.DER_cert_to_PEM_cert(der)
    finally:
        writer.close()
    proc = await asyncio.create_subprocess_exec(
        "openssl", "x509", "-noout", "-serial", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate(pem.encode())
    return int(out.decode().strip().split("=", 1)[1], 16)


def test_sdk_speaks_https_with_the_ca_and_plain_http_is_refused(
    pki: tuple[Authority, Leaf, Leaf, Leaf],
) -> None:
    ca, server, _next, _alice = pki

    @async_test
    async def run() -> None:
        async with https_node(TlsFiles(str(server.cert), str(server.key))) as (address, _):
            async with AsyncClient(address, ca=str(ca.cert)) as client:
                assert client.endpoints == [f"https://{address}"]
                await client.put("k", "v")
                assert (await client.get("k")).value == "v"
            async with AsyncClient(f"http://{address}", attempts_max=1) as plain:
                with pytest.raises(Unavailable):
                    await plain.get("k")
            async with aiohttp.ClientSession() as http:  # no CA: the chain is unknown
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await http.get(f"https://{address}/healthz")

    run()


def test_client_certificates_are_required_with_a_client_ca(
    pki: tuple[Authority, Leaf, Leaf, Leaf],
) -> None:
    ca, server, _next, alice = pki
    stranger = Authority.create(ca.directory / "other", "other").issue("mallory", client=True)

    @async_test
    async def run() -> None:
        files = TlsFiles(str(server.cert), str(server.key), client_ca=str(ca.cert))
        async with https_node(files) as (address, _):
            async with AsyncClient(address, ca=str(ca.cert),
                                   cert=str(alice.cert), key=str(alice.key)) as client:  # fmt: skip
                await client.put("k", "v")
            for cert in (None, stranger):
                options = {"cert": str(cert.cert), "key": str(cert.key)} if cert else {}
                async with AsyncClient(address, ca=str(ca.cert), attempts_max=1,
                                       **options) as refused:  # fmt: skip
                    with pytest.raises(Unavailable):
                        await refused.get("k")

    run()


def test_rotated_certificate_files_are_served_without_a_restart(
    pki: tuple[Authority, Leaf, Leaf, Leaf],
) -> None:
    ca, server, new, _alice = pki
    live = TlsFiles(str(ca.directory / "live.pem"), str(ca.directory / "live.key"))
    Path(live.cert).write_bytes(server.cert.read_bytes())
    Path(live.key).write_bytes(server.key.read_bytes())

    @async_test
    async def run() -> None:
        async with (
            https_node(live) as (address, tls),
            AsyncClient(address, ca=str(ca.cert)) as client,
        ):
            assert await _served_serial(address, ca.cert) == server.serial()
            assert tls.reload_if_changed() is False  # nothing changed yet
            for i in range(ROTATION_REQUESTS):
                if i == ROTATION_REQUESTS // 2:
                    # Rotate as cert-manager or the operator would: new files in place.
                    Path(live.key).write_bytes(new.key.read_bytes())
                    Path(live.cert).write_bytes(new.cert.read_bytes())
                    assert tls.reload_if_changed() is True
                await client.put(f"k{i}", "v")  # every request served across the rotation
            assert await _served_serial(address, ca.cert) == new.serial()
            assert tls.reloads == 1
            # Half-written files do not load: the certificate in use stays.
            Path(live.cert).write_text("-----BEGIN CERTIFICATE-----\n")
            assert tls.reload_if_changed() is False
            assert await _served_serial(address, ca.cert) == new.serial()
            await client.put("after", "v")

    run()


def test_cli_takes_ca_cert_and_key(pki: tuple[Authority, Leaf, Leaf, Leaf]) -> None:
    ca, server, _next, alice = pki

    @async_test
    async def run() -> None:
        files = TlsFiles(str(server.cert), str(server.key), client_ca=str(ca.cert))
        async with https_node(files) as (address, _):
            args = ["kv", "put", "greeting", "hello", "--endpoints", address, "--ca", str(ca.cert),
                    "--cert", str(alice.cert), "--key", str(alice.key)]  # fmt: skip
            result = await asyncio.to_thread(CliRunner().invoke, cli, args)
            assert result.exit_code == 0, result.output
            missing = await asyncio.to_thread(
                CliRunner().invoke, cli, [*args[:7], "--cert", str(alice.cert)]
            )
            assert missing.exit_code == 2 and "cert" in missing.output

    run()


def test_node_tls_settings() -> None:
    base = ["--id", "1", "--initial-cluster", "1=127.0.0.1:2380@https://127.0.0.1:2379"]
    config = load_config([*base, "--tls-cert", "c.pem", "--tls-key", "k.pem",
                          "--tls-client-ca", "ca.pem"], {})  # fmt: skip
    assert config.advertise_client == "https://127.0.0.1:2379"
    assert config.tls_ca == "ca.pem"  # forwarding trusts the client CA by default
    for bad in (["--tls-cert", "c.pem"], ["--tls-client-ca", "ca.pem"]):
        with pytest.raises(ConfigError, match="tls_"):
            load_config([*base, *bad], {})
    with pytest.raises(ValueError, match="both cert and key"):
        client_context(cert="c.pem")


def test_the_watch_task_reloads_changed_files(pki: tuple[Authority, Leaf, Leaf, Leaf]) -> None:
    ca, server, new, _alice = pki
    live = TlsFiles(str(ca.directory / "w.pem"), str(ca.directory / "w.key"))
    Path(live.cert).write_bytes(server.cert.read_bytes())
    Path(live.key).write_bytes(server.key.read_bytes())

    @async_test
    async def run() -> None:
        tls = ReloadingServerContext(live)
        watcher = asyncio.create_task(tls.watch(interval_ms=10))
        try:
            Path(live.key).write_bytes(new.key.read_bytes())
            Path(live.cert).write_bytes(new.cert.read_bytes())
            async with asyncio.timeout(WATCH_WAIT_S):
                while tls.reloads == 0:
                    await asyncio.sleep(0.01)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        assert tls.reloads == 1

    run()
