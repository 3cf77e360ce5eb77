"""Found when tried from outside (issue 15): bodies a browser may send without a
preflight, a Host of another origin (DNS rebinding) and floods of admin calls are all
refused before the node is called."""

from __future__ import annotations

import pytest

from synod.node.api import NotCaughtUp, Timeout
from synod.node.config import ConfigError, load_config
from synod.node.guard import HostAllowList, default_host_allow, host_name
from synod.node.http_state import HttpLimits
from tests.unit.http_helpers import async_test, ok, problem, serve
from tests.unit.memory_node import MemoryNode

PUT = "/v1/kv/put"
TRANSFER = "/v1/admin/leadership/transfer"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/jsonx", "application/octet-stream"],
)  # fmt: skip
def test_a_body_not_declared_json_is_415_and_changes_nothing(content_type: str) -> None:
    @async_test
    async def run() -> None:
        node = MemoryNode()
        async with serve(node) as client:
            headers = {"Content-Type": content_type}
            body = b'{"key": "k", "value": "v"}'
            refused = await client.post(PUT, data=body, headers=headers)
            got = await problem(refused, 415, "unsupported-media-type")
            assert got["content_type"] == content_type
            # Even an empty body: a page could otherwise move leadership with one POST.
            await problem(await client.post(TRANSFER, data=b"", headers=headers), 415,
                          "unsupported-media-type")  # fmt: skip
            answer = await client.post("/v1/kv/range", json={"key": "k"})
            assert (await ok(answer))["count"] == 0
        assert node.admin_calls == []

    run()


@async_test
async def test_json_with_parameters_is_accepted() -> None:
    async with serve(MemoryNode()) as client:
        headers = {"Content-Type": "Application/JSON; charset=utf-8"}
        await ok(await client.post(PUT, data=b'{"key": "k", "value": "v"}', headers=headers))


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("127.0.0.1:2379", True), ("localhost", True), ("LOCALHOST.:80", True), ("[::1]:2379", True),
     ("10.1.2.3", True), ("[fe80::1]", True), ("evil.example:2379", False),
     ("localhost.evil.example", False), ("127.0.0.1.nip.io", False)],
)  # fmt: skip
def test_host_outside_the_allow_list_is_403(host: str, allowed: bool) -> None:
    @async_test
    async def run() -> None:
        node = MemoryNode()
        async with serve(node) as client:
            answer = await client.post(PUT, json={"key": "k", "value": "v"},
                                       headers={"Host": host})  # fmt: skip
            if allowed:
                await ok(answer)
            else:
                got = await problem(answer, 403, "host-not-allowed")
                assert got["host"] == host
                status = await client.get("/v1/cluster/status", headers={"Host": host})
                await problem(status, 403, "host-not-allowed")
                # Probes stay open whatever Host they carry.
                assert (await client.get("/healthz", headers={"Host": host})).status == 200
                assert (await client.get("/readyz", headers={"Host": host})).status == 200
        assert bool(node.writes) == allowed

    run()


@async_test
async def test_allow_list_entries_and_star() -> None:
    allow = HostAllowList.parse(["db.ns.svc", "*.peers.ns.svc"])
    async with serve(MemoryNode(), host_allow=allow) as client:
        cases = [("db.ns.svc:2379", 200), ("db-0.peers.ns.svc", 200), ("peers.ns.svc", 403),
                 ("localhost", 403), ("x.db.ns.svc", 403)]  # fmt: skip
        for host, status in cases:
            answer = await client.get("/v1/cluster/status", headers={"Host": host})
            assert answer.status == status, host
    async with serve(MemoryNode(), host_allow=HostAllowList.parse(["*"])) as client:
        await ok(await client.get("/v1/cluster/status", headers={"Host": "any.example"}))


def test_allow_list_parsing_refuses_bad_entries() -> None:
    for bad in ["*.", "a*.example", "*.*.x", "", "x" * 300]:
        with pytest.raises(ValueError, match="host_allow"):
            HostAllowList.parse([bad])
    with pytest.raises(ValueError, match="more than 256"):
        HostAllowList.parse([f"h{i}" for i in range(257)])
    assert host_name("[::1]:80") == "::1" and host_name("Example.COM.:8") == "example.com"
    assert HostAllowList.parse(["x"]).allows(None)  # HTTP/1.0: no Host, nothing rebound


def test_node_config_default_allow_list_names_the_node() -> None:
    static = load_config(["--id", "1", "--initial-cluster", "1=node-1.lan:2380@http://node-1.lan:2379",
                          "--advertise-client", "http://node-1.lan:2379",
                          "--advertise-peer", "node-1.lan:2380"], {})  # fmt: skip
    assert static.host_allow == ("localhost", "node-1.lan")
    dns = load_config(["--id", "1", "--peer-dns", "db.db-peers.ns.svc"], {})
    allow = HostAllowList.parse(dns.host_allow)
    for host in ["db-2.db-peers.ns.svc:2379", "db-0.db-peers.ns.svc.cluster.local", "db",
                 "db.ns", "db.ns.svc", "db.ns.svc.cluster.local", "localhost"]:  # fmt: skip
        assert allow.allows(host), host
    for host in ["db.ns.svc.evil.example", "other", "db-peers.ns.svc.example"]:
        assert not allow.allows(host), host
    flagged = load_config(["--id", "1", "--peer-dns", "db.p.ns.svc", "--host-allow", "*"], {})
    assert flagged.host_allow == ("*",)
    with pytest.raises(ConfigError, match="host_allow entry"):
        load_config(["--id", "1", "--peer-dns", "db.p.ns.svc", "--host-allow", "a*b"], {})
    assert default_host_allow(["http://[::1]:2379"]) == ["localhost", "::1"]


@async_test
async def test_admin_calls_are_rate_bounded_with_a_named_bound() -> None:
    now = [0.0]
    node = MemoryNode()
    limits = HttpLimits(admin_calls_burst_max=3, admin_call_interval_ms_min=1000)
    async with serve(node, limits=limits, clock_ms=lambda: now[0]) as client:
        for _ in range(3):
            await ok(await client.post(TRANSFER, json={}))
        refused = await problem(await client.post(TRANSFER, json={}), 429, "limit-exceeded")
        assert refused["limit"] == "admin_calls_burst_max" and refused["max"] == 3
        assert refused["retry_after_ms"] == 1001
        snapshot = await client.post("/v1/admin/snapshot", json={})
        await problem(snapshot, 429, "limit-exceeded")
        assert len(node.admin_calls) == 3  # the refused calls never reached the node
        await ok(await client.post(PUT, json={"key": "k", "value": "v"}))  # not admin
        now[0] += 1000  # one interval: one more call
        await ok(await client.post(TRANSFER, json={}))
        await problem(await client.post(TRANSFER, json={}), 429, "limit-exceeded")
        now[0] += 10_000_000  # a long quiet time refills the burst, no more
        for _ in range(3):
            await ok(await client.post(TRANSFER, json={}))
        await problem(await client.post(TRANSFER, json={}), 429, "limit-exceeded")
    assert len(node.admin_calls) == 7


@async_test
async def test_refused_admin_calls_spend_nothing() -> None:
    # A client polling promote until its learner has caught up is not a flood.
    node = MemoryNode()
    limits = HttpLimits(admin_calls_burst_max=2, admin_call_interval_ms_min=1000)
    async with serve(node, limits=limits, clock_ms=lambda: 0.0) as client:
        node.fail_with = NotCaughtUp("learner 4 is 99 entries behind", lag_entries=99)
        for _ in range(5):
            refused = await client.post("/v1/admin/members/promote", json={"id": 4})
            await problem(refused, 409, "not-caught-up")
        node.fail_with = None
        await ok(await client.post(TRANSFER, json={}))
        await ok(await client.post(TRANSFER, json={}))
        await problem(await client.post(TRANSFER, json={}), 429, "limit-exceeded")


@async_test
async def test_an_admin_call_that_may_have_acted_keeps_its_token() -> None:
    # A transfer that timed out may have moved leadership: it is not refunded.
    node = MemoryNode()
    limits = HttpLimits(admin_calls_burst_max=1, admin_call_interval_ms_min=1000)
    async with serve(node, limits=limits, clock_ms=lambda: 0.0) as client:
        node.fail_with = Timeout("leadership did not move in time")
        await problem(await client.post(TRANSFER, json={}), 503, "timeout")
        node.fail_with = None
        await problem(await client.post(TRANSFER, json={}), 429, "limit-exceeded")
