"""Grafana dashboards of a Synod cluster, generated from the node's metric catalog.

Plain dicts in Grafana's dashboard JSON model (schemaVersion 39) rather than
grafana-foundation-sdk: the model is a stable, documented JSON document, the generator
uses a dozen of its fields, and the SDK would be one more pinned dependency (and a venv
rebuild for everyone) for a build step whose output is checked into the chart anyway.

Every query names its metrics through :func:`metric`, which refuses a name the node
does not export: renaming a metric in code fails the generation (and the test that
compares the chart's JSON with this module's output), not a dashboard at 3 a.m.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from synod.observability.catalog import series_names

__all__ = [
    "DASHBOARDS",
    "JOB",
    "RATE",
    "Dashboard",
    "Panel",
    "Query",
    "check_expr",
    "render_all",
]

SCHEMA_VERSION = 39
PANELS_PER_DASHBOARD_MAX = 24
QUERIES_PER_PANEL_MAX = 4
GRID_WIDTH = 24  # Grafana's grid is 24 columns wide.
PANEL_HEIGHT = 8
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
JOB = 'job=~"$job"'  # Every query is scoped to the selected clusters (job label).
RATE = "$__rate_interval"
_METRIC_NAME = re.compile(r"\b(synod_[a-z0-9_]+|up)\b(?!\s*[=!]~?)")


def check_expr(expr: str, known: frozenset[str]) -> tuple[str, ...]:
    """The metric names ``expr`` uses; raises ValueError naming any the node does not
    export (label names and values are not metric names: ``le``, ``route`` ...)."""
    assert expr.strip(), "an empty query"
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    names = tuple(sorted(set(_METRIC_NAME.findall(without_strings))))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"query names metrics the node does not export {unknown}: {expr}")
    return names


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL target of a panel."""

    expr: str
    legend: str = ""


@dataclass(frozen=True, slots=True)
class Panel:
    """A panel; ``empty_reason`` is set when its queries may rightly return no series."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    empty_reason: str = ""

    def __post_init__(self) -> None:
        assert 1 <= len(self.queries) <= QUERIES_PER_PANEL_MAX, self.title
        assert self.kind in ("timeseries", "stat"), self.kind


@dataclass(frozen=True, slots=True)
class Dashboard:
    """A dashboard: uid, title, description and panels (laid out two per row)."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        assert 1 <= len(self.panels) <= PANELS_PER_DASHBOARD_MAX, self.uid
        assert re.fullmatch(r"synod-[a-z-]+", self.uid), self.uid


def _q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def _p99(bucket: str, by: str, selector: str = JOB) -> str:
    return (
        f"histogram_quantile(0.99, sum by ({by}, le) (rate({bucket}_bucket{{{selector}}}[{RATE}])))"
    )


def _rate(counter: str, by: str, selector: str = JOB) -> str:
    return f"sum by ({by}) (rate({counter}_total{{{selector}}}[{RATE}]))"


def _applied(counter: str) -> str:
    """A counter of the applied state: every member counts the same events."""
    return f"max by (job) (rate({counter}_total{{{JOB}}}[{RATE}]))"


def _overview() -> Dashboard:
    return Dashboard(
        "synod-overview",
        "Synod / Overview",
        "Members, leader and term; requests, errors and latency by route.",
        (
            Panel("Members exporting", "Members whose /metrics Prometheus scrapes now.",
                  (_q(f"count by (job) (synod_member_id{{{JOB}}})", "{{job}}"),), kind="stat"),
            Panel("Voters", "Voting members in the Raft configuration.",
                  (_q(f"max by (job) (synod_raft_voters{{{JOB}}})", "{{job}}"),), kind="stat"),
            Panel("Leader member id", "The member id of the current leader (0: none).",
                  (_q(f"max by (job) (synod_raft_is_leader{{{JOB}}} * "
                      f"synod_member_id{{{JOB}}})", "{{job}}"),), kind="stat"),
            Panel("Term", "The Raft term; it grows by one per election.",
                  (_q(f"max by (job) (synod_raft_term{{{JOB}}})", "{{job}}"),), kind="stat"),
            Panel("Targets up", "Prometheus' own scrape health of each member.",
                  (_q(f"up{{{JOB}}}", "{{instance}}"),)),
            Panel("Requests by route", "HTTP requests answered per second, by route.",
                  (_q(_rate("synod_http_requests", "route"), "{{route}}"),), unit="reqps"),
            Panel("Server errors (5xx) by route",
                  "Answers with status 5xx. Streams their client closed (a cancelled "
                  "watch: 200, or 499 when a forwarded stream is cut) are not errors.",
                  (_q(_rate("synod_http_requests", "route, code", f'{JOB}, code=~"5.."'),
                      "{{route}} {{code}}"),),
                  unit="reqps", empty_reason="a healthy cluster answers no 5xx"),
            Panel("Problem answers by code",
                  "Problem documents by their stable code (docs/api.md): not-leader is "
                  "routing, not-found and fencing-token-stale are the client's news.",
                  (_q(_rate("synod_http_problems", "code"), "{{code}}"),), unit="reqps"),
            Panel("Request latency p99 by route", "99th percentile of answer time.",
                  (_q(_p99("synod_http_request_duration_seconds", "route"), "{{route}}"),),
                  unit="s"),
            Panel("Event loop lag p99", "How late each node's event loop runs due work.",
                  (_q(_p99("synod_event_loop_lag_seconds", "instance"), "{{instance}}"),),
                  unit="s"),
        ),
    )  # fmt: skip


def _raft() -> Dashboard:
    return Dashboard(
        "synod-raft",
        "Synod / Raft and storage",
        "Consensus and the write-ahead log: terms, leadership, indexes, proposals, fsync.",
        (
            Panel("Term", "The Raft term each member is in.",
                  (_q(f"synod_raft_term{{{JOB}}}", "{{instance}}"),)),
            Panel("Leader", "1 on the member that leads.",
                  (_q(f"synod_raft_is_leader{{{JOB}}}", "{{instance}}"),)),
            Panel("Leader changes", "Leader or role changes each member saw in the window.",
                  (_q(f"increase(synod_raft_leader_changes_total{{{JOB}}}[{RATE}])",
                      "{{instance}}"),)),
            Panel("Commit and applied index", "Raft log indexes per member.",
                  (_q(f"synod_raft_commit_index{{{JOB}}}", "commit {{instance}}"),
                   _q(f"synod_raft_applied_index{{{JOB}}}", "applied {{instance}}"))),
            Panel("Apply backlog", "Committed entries not applied yet.",
                  (_q(f"synod_raft_commit_index{{{JOB}}} - synod_raft_applied_index{{{JOB}}}",
                      "{{instance}}"),)),
            Panel("Proposals applied", "Entries applied per second.",
                  (_q(_rate("synod_raft_proposals_applied", "instance"), "{{instance}}"),),
                  unit="ops"),
            Panel("Proposals pending", "Proposals waiting to commit.",
                  (_q(f"synod_raft_proposals_pending{{{JOB}}}", "{{instance}}"),)),
            Panel("Proposals failed", "Proposals dropped, timed out or left without leader.",
                  (_q(_rate("synod_raft_proposals_failed", "instance"), "{{instance}}"),),
                  unit="ops"),
            Panel("WAL fsync p99", "Write + fsync of one WAL batch.",
                  (_q(_p99("synod_wal_fsync_duration_seconds", "instance"), "{{instance}}"),),
                  unit="s"),
            Panel("Apply p99", "Applying one batch of committed entries.",
                  (_q(_p99("synod_apply_duration_seconds", "instance"), "{{instance}}"),),
                  unit="s"),
            Panel("Snapshot save p99", "Saving a snapshot (NaN until the first one).",
                  (_q(_p99("synod_snapshot_save_duration_seconds", "instance"),
                      "{{instance}}"),), unit="s"),
            Panel("Peer round trip p99", "Heartbeat round trip to each peer.",
                  (_q(_p99("synod_peer_round_trip_seconds", "instance, peer"),
                      "{{instance}} to {{peer}}"),), unit="s"),
            Panel("Event loop lag max", "The largest event-loop lag since start.",
                  (_q(f"synod_event_loop_lag_max_seconds{{{JOB}}}", "{{instance}}"),),
                  unit="s"),
        ),
    )  # fmt: skip


def _kv() -> Dashboard:
    kv, lease, watch = (
        f'{JOB}, route=~"/v1/kv.*"',
        f'{JOB}, route=~"/v1/lease/.*"',
        (f'{JOB}, route="/v1/watch"'),
    )
    keepalive = f'{JOB}, route="/v1/lease/keepalive", code!="not-leader"'
    return Dashboard(
        "synod-kv",
        "Synod / KV, leases and watches",
        "The key-value store, its leases and its watch streams.",
        (
            Panel("KV requests by route and code", "KV answers per second.",
                  (_q(_rate("synod_http_requests", "route, code", kv), "{{route}} {{code}}"),),
                  unit="reqps"),
            Panel("KV latency p99 by route", "99th percentile of KV answer time.",
                  (_q(_p99("synod_http_request_duration_seconds", "route", kv), "{{route}}"),),
                  unit="s"),
            Panel("Live leases", "Leases in the applied state of each member.",
                  (_q(f"synod_leases{{{JOB}}}", "{{instance}}"),)),
            Panel("Lease requests by route", "Grant, keepalive, revoke, time-to-live.",
                  (_q(_rate("synod_http_requests", "route, code", lease),
                      "{{route}} {{code}}"),), unit="reqps"),
            Panel("Lease keepalive failures by code",
                  "Keepalives answered with a problem (not-found: the lease had expired). "
                  "not-leader is routing, followed by the SDK, and not counted.",
                  (_q(_rate("synod_http_problems", "code", keepalive), "{{code}}"),),
                  unit="reqps"),
            Panel("Live watchers", "Watchers registered on each member.",
                  (_q(f"synod_watchers{{{JOB}}}", "{{instance}}"),)),
            Panel("Watch streams ended by code",
                  "Watch streams by code, counted when they end: a stream its client "
                  "cancels keeps its 200 (499: a forwarded stream cut); never an error.",
                  (_q(_rate("synod_http_requests", "code", watch), "{{code}}"),),
                  unit="reqps"),
        ),
    )  # fmt: skip


def _locks() -> Dashboard:
    locks = f'{JOB}, route=~"/v1/(locks|election)/.*"'
    return Dashboard(
        "synod-locks",
        "Synod / Locks",
        "Fair fenced locks and elections: holders, waiters, latency, fencing rejections.",
        (
            Panel("Locks held", "Lock holds in the applied state.",
                  (_q(f"max by (job) (synod_lock_held{{{JOB}}})", "{{job}}"),)),
            Panel("Lock waiters", "Queued waiters in the applied state.",
                  (_q(f"max by (job) (synod_lock_waiters{{{JOB}}})", "{{job}}"),)),
            Panel("Lock requests by route and code", "Acquire, wait, renew, release ...",
                  (_q(_rate("synod_http_requests", "route, code", locks),
                      "{{route}} {{code}}"),), unit="reqps"),
            Panel("Lock latency p99 by route", "99th percentile of lock answer time.",
                  (_q(_p99("synod_http_request_duration_seconds", "route", locks),
                      "{{route}}"),), unit="s"),
            Panel("Fencing rejections",
                  "Writes or validations refused because their fencing token is stale: "
                  "a former holder acted after losing its lock (answers by route, and the "
                  "applied state's count).",
                  (_q(_rate("synod_http_problems", "route",
                            f'{JOB}, code="fencing-token-stale"'), "{{route}}"),
                   _q(_applied("synod_lock_fencing_rejections"), "applied {{job}}")),
                  unit="reqps"),
            Panel("Locks", "Locks held or waited for (applied state).",
                  (_q(f"max by (job) (synod_locks{{{JOB}}})", "{{job}}"),)),
            Panel("Acquisitions", "Grants at once or from the queue (hand-overs), per second.",
                  (_q(f"max by (job, via) (rate(synod_lock_acquisitions_total{{{JOB}}}[{RATE}]))",
                      "{{via}}"),), unit="ops"),
            Panel("Hold endings", "Holds released, expired (lease gone) or revoked, per second.",
                  (_q(_applied("synod_lock_releases"), "released"),
                   _q(_applied("synod_lock_expirations"), "expired"),
                   _q(_applied("synod_lock_revocations"), "revoked")), unit="ops"),
            Panel("Waiters leaving", "Waiters dropped by their wait bound or cancelled.",
                  (_q(_applied("synod_lock_wait_timeouts"), "timed out"),
                   _q(_applied("synod_lock_cancellations"), "cancelled")), unit="ops"),
            Panel("Wait and hand-over p99",
                  "From an acquire queued on a node to its grant answered there; from a "
                  "release to the answer of the waiter it made holder (NaN until one).",
                  (_q(_p99("synod_lock_wait_duration_seconds", "instance"), "wait {{instance}}"),
                   _q(_p99("synod_lock_handover_duration_seconds", "instance"),
                      "hand-over {{instance}}")), unit="s"),
        ),
    )  # fmt: skip


def _ids() -> Dashboard:
    ids = f'{JOB}, route=~"/v1/ids.*"'
    return Dashboard(
        "synod-ids",
        "Synod / IDs",
        "Snowflake generators and segments: IDs issued, batch sizes, worker leases.",
        (
            Panel("IDs issued by generator", "IDs per second.",
                  (_q(_rate("synod_ids_issued", "generator"), "{{generator}}"),),
                  unit="ops"),
            Panel("Batch size", "IDs per /next request, median and 99th percentile.",
                  (_q(f"histogram_quantile(0.5, sum by (le) "
                      f"(rate(synod_ids_batch_size_bucket{{{JOB}}}[{RATE}])))", "p50"),
                   _q(f"histogram_quantile(0.99, sum by (le) "
                      f"(rate(synod_ids_batch_size_bucket{{{JOB}}}[{RATE}])))", "p99"))),
            Panel("Worker leases acquired", "Worker ids acquired by generator.",
                  (_q(f"sum by (generator) "
                      f"(increase(synod_ids_worker_leases_total{{{JOB}}}[{RATE}]))",
                      "{{generator}}"),)),
            Panel("Clock rollbacks refused", "Requests refused as the clock ran backwards.",
                  (_q(f"sum by (instance, generator) "
                      f"(increase(synod_ids_rollbacks_total{{{JOB}}}[{RATE}]))",
                      "{{instance}} {{generator}}"),),
                  empty_reason="a generator's series exists only after its first rollback"),
            Panel("ID requests by route and code", "Generators, next, segments, workers.",
                  (_q(_rate("synod_http_requests", "route, code", ids),
                      "{{route}} {{code}}"),), unit="reqps"),
            Panel("ID latency p99 by route", "99th percentile of ID answer time.",
                  (_q(_p99("synod_http_request_duration_seconds", "route", ids),
                      "{{route}}"),), unit="s"),
        ),
    )  # fmt: skip


def _gossip() -> Dashboard:
    def per_s(counter: str) -> str:
        return _rate(counter, "instance")

    return Dashboard(
        "synod-gossip",
        "Synod / Gossip",
        "SWIM + Lifeguard membership: views, probes, suspicions, false positives.",
        (
            Panel("Members by state", "Each member's view: alive, suspect, dead, left.",
                  (_q(f"sum by (instance, state) (synod_gossip_members{{{JOB}}})",
                      "{{instance}} {{state}}"),)),
            Panel("Health score", "Lifeguard local health (0 healthy).",
                  (_q(f"synod_gossip_health_score{{{JOB}}}", "{{instance}}"),)),
            Panel("Probes", "Direct probes sent and probes that failed, per second.",
                  (_q(per_s("synod_gossip_probes_sent"), "sent {{instance}}"),
                   _q(per_s("synod_gossip_probes_failed"), "failed {{instance}}"),
                   _q(per_s("synod_gossip_indirect_probes_sent"), "indirect {{instance}}"))),
            Panel("Suspicions", "Raised, refuted by their target, and self-refutations.",
                  (_q(per_s("synod_gossip_suspicions_raised"), "raised {{instance}}"),
                   _q(per_s("synod_gossip_suspicions_refuted"), "refuted {{instance}}"),
                   _q(per_s("synod_gossip_self_refutations"), "self {{instance}}"))),
            Panel("Deaths and revivals", "Deaths declared; dead members that came back "
                  "(false positives: flapping).",
                  (_q(per_s("synod_gossip_deaths_declared"), "declared {{instance}}"),
                   _q(per_s("synod_gossip_dead_revived"), "revived {{instance}}"))),
            Panel("Drops and refusals", "Packets dropped or refused by a bound.",
                  (_q(per_s("synod_gossip_packets_dropped"), "packets {{instance}}"),
                   _q(per_s("synod_gossip_decode_errors"), "decode {{instance}}"),
                   _q(per_s("synod_gossip_relays_dropped"), "relays {{instance}}"),
                   _q(per_s("synod_gossip_members_refused"), "members {{instance}}"))),
            Panel("Push-pull exchanges", "Full-state exchanges handled per second.",
                  (_q(per_s("synod_gossip_push_pulls"), "{{instance}}"),), unit="ops"),
        ),
    )  # fmt: skip


DASHBOARDS: tuple[Dashboard, ...] = (_overview(), _raft(), _kv(), _locks(), _ids(), _gossip())
# The query of the `job` variable (also checked against the catalog).
JOB_VARIABLE_QUERY = "label_values(synod_member_id, job)"


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    width = GRID_WIDTH // 4 if panel.kind == "stat" else GRID_WIDTH // 2
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": PANEL_HEIGHT if panel.kind != "stat" else 4, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if panel.kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [
            {
                "datasource": DATASOURCE,
                "expr": q.expr,
                "legendFormat": q.legend,
                "refId": chr(ord("A") + i),
            }
            for i, q in enumerate(panel.queries)
        ],
    }


def render(dashboard: Dashboard, known: frozenset[str]) -> dict[str, Any]:
    """The Grafana JSON model of ``dashboard``; raises ValueError if a query names a
    metric outside ``known``."""
    check_expr(JOB_VARIABLE_QUERY, known)
    panels = []
    x = y = 0
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        for query in panel.queries:
            check_expr(query.expr, known)
        body = _panel_json(panel, panel_id, x, y)
        width, height = body["gridPos"]["w"], body["gridPos"]["h"]
        x += width
        if x >= GRID_WIDTH:
            x, y = 0, y + height
        panels.append(body)
    assert len(panels) == len(dashboard.panels)
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["synod"],
        "editable": True,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "job",
                    "label": "Cluster (job)",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "definition": JOB_VARIABLE_QUERY,
                    "query": {"query": JOB_VARIABLE_QUERY, "refId": "job"},
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "refresh": 2,
                    "current": {},
                    "hide": 0,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render_all(known: frozenset[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every dashboard's JSON model by uid, checked against the node's catalog."""
    known = known if known is not None else series_names()
    rendered = {d.uid: render(d, known) for d in DASHBOARDS}
    assert len(rendered) == len(DASHBOARDS), "dashboard uids must be unique"
    return rendered
