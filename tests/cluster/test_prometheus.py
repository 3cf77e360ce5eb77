"""The dashboards and alerts against a real Prometheus scraping a real cluster.

Debian's `prometheus` (installed by `make test-tools`) scrapes three `synod node`
processes (gossip on) every second with the chart's rules file loaded, while a bounded
workload touches KV, leases, watches, locks and IDs. Then every panel query of every
dashboard must return series (a few may be empty, each for a stated reason), every alert
expression must evaluate, and no alert may be pending or firing on the healthy cluster
(cancelled watches and a couple of refused keepalives and stale tokens included: the
etcd#13147 lesson). Killing the leader makes SynodMemberDown go pending for it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from synod.client import Client
from synod.client.errors import SynodError
from synod.observability.alerts import ALERTS
from synod.observability.dashboards import DASHBOARDS, JOB, RATE, Dashboard, Panel, Query
from tests.cluster.harness import Cluster
from tests.ports import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "synod" / "files" / "prometheus" / "synod-alerts.yaml"
SIZE = 3
JOB_NAME = "synod"
SCRAPE_INTERVAL = "1s"
RATE_WINDOW = "15s"  # $__rate_interval: enough scrapes at 1 s for rate() to answer
ROUNDS = 20  # workload rounds; each touches every primitive once
SCRAPED_WAIT_S = 90.0
PROMETHEUS_WAIT_S = 60.0
ALERT_WAIT_S = 60.0
# Latency alerts compare durations with thresholds: on a shared test machine they may
# hold (pending) without a fault, so the test evaluates them but does not assert silence
# (wall-clock thresholds belong to benchmarks). promtool tests them on fixed series.
LATENCY_ALERTS = frozenset({"SynodSlowFsync", "SynodSlowApply", "SynodPeerRoundTripSlow"})
# What an election does (a stalled process on a loaded machine can cause one): these
# may hold then, and only then. The alerts refused keepalives and stale tokens could
# trip are never excused; for cancelled watches the test checks that they are counted
# (with the 200 their stream started with) and that none is a 5xx, which is what
# SynodHighServerErrorRate counts.
ELECTION_ALERTS = frozenset(
    {"SynodNoLeader", "SynodFrequentLeaderChanges", "SynodProposalsFailing",
     "SynodHighServerErrorRate"}
)  # fmt: skip
NEVER_EXCUSED = frozenset(
    {"SynodLockFencingRejections", "SynodLeaseKeepaliveFailures", "SynodMemberDown",
     "SynodInsufficientMembers", "SynodIdClockRollback", "SynodGossipFlapping"}
)  # fmt: skip
HTTP_TIMEOUT_S = 5.0
# Failures the workload causes on purpose, below the alerts' thresholds (> 3 in 10 min).
STALE_TOKENS = 2
EXPIRED_KEEPALIVES = 2


def _prometheus() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("prometheus not found: `make test-tools` installs Debian's prometheus")
    return found


class Prometheus:
    """One Prometheus process with its own config, data dir and port."""

    def __init__(self, root: Path, targets: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": "1s",
                       "scrape_timeout": "900ms"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": JOB_NAME, "static_configs": [{"targets": targets}]}
            ],
        }  # fmt: skip
        self.config = root / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = root / "prometheus.log"
        self.args = [
            _prometheus(), f"--config.file={self.config}",
            f"--storage.tsdb.path={root / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._ready, PROMETHEUS_WAIT_S, f"prometheus ready (log {self.log})", 0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    def _ready(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=HTTP_TIMEOUT_S) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), data
        return list(data["result"]) if data["resultType"] == "vector" else [data["result"]]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["alerts"])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, SIZE)
    gossip_ports = {node_id: free_port() for node_id in made.nodes}
    try:
        for node_id in made.nodes:
            seeds = ",".join(f"127.0.0.1:{p}" for n, p in gossip_ports.items() if n != node_id)
            made.extra_args = [
                "--listen-gossip", f"127.0.0.1:{gossip_ports[node_id]}",
                "--gossip-join", seeds,
            ]  # fmt: skip
            made.start(node_id)
        made.wait_for_leader()
        yield made
    finally:
        made.stop_all()


@pytest.fixture
def prometheus(tmp_path: Path, cluster: Cluster) -> Iterator[Prometheus]:
    targets = [f"127.0.0.1:{node.client_port}" for node in cluster.nodes.values()]
    server = Prometheus(tmp_path, targets)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _workload(cluster: Cluster) -> None:
    """Every primitive, ROUNDS times; a few refusals on purpose (below alert bounds)."""
    urls = [node.url for node in cluster.nodes.values()]
    with Client(urls, timeout_s=3.0, attempts_max=20) as client:
        client.ids_define("obs-orders")
        token = 0
        for i in range(ROUNDS):
            put = client.put(f"obs/k{i % 4}", f"v{i}")
            assert client.get(f"obs/k{i % 4}") is not None
            # A watch opened, one event read, then cancelled by the client.
            stream = client.watch(f"obs/k{i % 4}", start_revision=put.revision)
            assert next(stream).kv.key == f"obs/k{i % 4}"
            stream.close()
            grant = client.lease_grant(5_000)
            client.lease_keepalive(grant.id)
            client.put(f"obs/leased{i}", "x", lease=grant.id)
            client.lease_revoke(grant.id)
            if i < EXPIRED_KEEPALIVES:
                with pytest.raises(SynodError):
                    client.lease_keepalive(grant.id)  # revoked: not-found
            lock = client.lock("obs/lock", ttl_ms=5_000)
            lock.acquire()
            token = lock.token
            assert client.validate_token("obs/lock", token)
            lock.release()
            if i < STALE_TOKENS:
                assert not client.validate_token("obs/lock", token)  # fencing-token-stale
            assert len(client.ids_next("obs-orders", 5)) == 5
        assert token > 0


def _instant(expr: str) -> str:
    return expr.replace(JOB, f'job="{JOB_NAME}"').replace(RATE, RATE_WINDOW)


def _empty_panels(
    prometheus: Prometheus, dashboards: tuple[Dashboard, ...] = DASHBOARDS
) -> list[str]:
    """Titles of panels with an empty query and no stated reason to be empty."""
    empty = []
    for dashboard in dashboards:
        for panel in dashboard.panels:
            if panel.empty_reason:
                continue
            for query in panel.queries:
                if not prometheus.query(_instant(query.expr)):
                    empty.append(f"{dashboard.uid}: {panel.title}: {query.expr}")
    return empty


def test_panels_and_alerts_against_a_real_prometheus(
    cluster: Cluster, prometheus: Prometheus
) -> None:
    _workload(cluster)
    # Every panel answers once Prometheus has scraped the workload (rate windows need
    # two scrapes of each new series).
    last: list[list[str]] = []

    def all_answer() -> bool:
        last[:] = [_empty_panels(prometheus)]
        return not last[0]

    try:
        wait_until(all_answer, SCRAPED_WAIT_S, "every panel query to return series", 0.5)
    except AssertionError as error:
        raise AssertionError(f"empty panel queries: {last}") from error
    # The check sees an empty panel (a cluster Prometheus does not scrape).
    elsewhere = Panel("Term elsewhere", "", (Query('synod_raft_term{job="nope"}'),))
    assert _empty_panels(prometheus, (Dashboard("synod-bad", "bad", "", (elsewhere,)),)) == [
        'synod-bad: Term elsewhere: synod_raft_term{job="nope"}'
    ]
    # Panels allowed to be empty still evaluate.
    for dashboard in DASHBOARDS:
        for panel in dashboard.panels:
            for query in panel.queries:
                prometheus.query(_instant(query.expr))
    # Every alert expression evaluates, and none holds on the healthy cluster even
    # though its watches were cancelled and a few tokens and keepalives were refused.
    elections = prometheus.query(
        f'max(increase(synod_raft_leader_changes_total{{job="{JOB_NAME}"}}[5m])) > 0'
    )
    excused = LATENCY_ALERTS | (ELECTION_ALERTS if elections else frozenset())
    assert {a.name for a in ALERTS} == NEVER_EXCUSED | LATENCY_ALERTS | ELECTION_ALERTS
    for alert in ALERTS:
        held = prometheus.query(alert.expr)
        assert alert.name in excused or held == [], (alert.name, held, elections)
    assert len(prometheus.api("rules")["groups"][0]["rules"]) == len(ALERTS)
    active = [a for a in prometheus.alerts() if a["labels"]["alertname"] not in excused]
    assert active == [], (active, elections)
    watch = f'job="{JOB_NAME}", route="/v1/watch"'
    assert prometheus.query(f'sum(synod_http_requests_total{{{watch}, code="200"}}) > 0')
    assert not prometheus.query(f'synod_http_requests_total{{{watch}, code=~"5.."}}')
    problems = prometheus.query(f'synod_http_problems_total{{job="{JOB_NAME}"}}')
    codes = {p["metric"]["code"] for p in problems}
    assert {"fencing-token-stale", "not-found"} <= codes, codes

    # The fault: the leader is killed; its member goes down and the alert goes pending.
    leader = cluster.wait_for_leader()
    cluster.kill(leader)
    instance = f"127.0.0.1:{cluster.nodes[leader].client_port}"

    def member_down() -> list[dict[str, Any]]:
        return [a for a in prometheus.alerts()
                if a["labels"]["alertname"] == "SynodMemberDown"
                and a["labels"]["instance"] == instance]  # fmt: skip

    (alert,) = wait_until(member_down, ALERT_WAIT_S, "SynodMemberDown for the killed leader", 0.5)
    assert alert["state"] == "pending"  # for: 1m
    assert alert["annotations"]["runbook_url"].endswith("#synodmemberdown")
    new_leader = cluster.wait_for_leader(exclude={leader})
    assert new_leader != leader
    # Two of three answer: a quorum, so SynodInsufficientMembers stays silent.
    names = {a["labels"]["alertname"] for a in prometheus.alerts()}
    assert "SynodInsufficientMembers" not in names, names
