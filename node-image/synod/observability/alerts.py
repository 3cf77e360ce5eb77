"""Prometheus alert rules of a Synod cluster, generated from the node's metric catalog.

One rule group, written as a plain rules file (promtool, a bare Prometheus) and
shipped unchanged as the `spec` of the chart's PrometheusRule. Every alert carries a
`runbook_url` into docs/runbooks.md (anchor = the alert name in lower case).

Alerts group by ``namespace, job``: the chart's PodMonitor takes the job name from the
pods' ``app.kubernetes.io/instance`` label (the ConsensusCluster's name), the
operator's ServiceMonitor from the client Service, and a bare scrape config names its
job itself; a missing ``namespace`` label (no Kubernetes) groups as empty.

Lessons from etcd's mixin (etcd#13147: its failed-gRPC alert fired at 100 % on
cancelled watches): errors are 5xx answers only (a watch stream its client closes is
counted with the 200 it started with, a forwarded stream cut mid-way 499: never an
error), and problem answers are picked by their
stable code (not-leader is routing, not a failure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from synod.observability.catalog import series_names
from synod.observability.dashboards import check_expr

__all__ = ["ALERTS", "GROUP_NAME", "RUNBOOK_BASE", "Alert", "rules"]

GROUP_NAME = "synod"
RUNBOOK_BASE = "https://synod.dev/docs/runbooks.md"
ALERTS_MAX = 32
BY = "namespace, job"
# A target that exported synod metrics within this window counts as a Synod member.
MEMBER_MEMORY = "10m"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alerting rule."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str

    def __post_init__(self) -> None:
        assert self.name.startswith("Synod") and self.name.isalnum(), self.name
        assert self.severity in ("critical", "warning", "info"), self.severity

    @property
    def runbook_url(self) -> str:
        return f"{RUNBOOK_BASE}#{self.name.lower()}"


ALERTS: tuple[Alert, ...] = (
    Alert(
        "SynodMemberDown",
        f"up == 0 and on (job, instance) max_over_time(synod_member_id[{MEMBER_MEMORY}])",
        "1m",
        "warning",
        "Synod member {{ $labels.instance }} of {{ $labels.job }} is down.",
        "Prometheus cannot scrape member {{ $labels.instance }}, which exported Synod "
        "metrics in the last " + MEMBER_MEMORY + ".",
    ),
    Alert(
        "SynodInsufficientMembers",
        f"count by ({BY}) (synod_member_id) "
        f"< on ({BY}) (floor(max by ({BY}) (synod_raft_voters) / 2) + 1)",
        "2m",
        "critical",
        "Synod cluster {{ $labels.job }} has fewer live members than a quorum.",
        "{{ $value | humanize }} members answer scrapes: fewer than a majority of the voters. "
        "Writes cannot commit.",
    ),
    Alert(
        "SynodNoLeader",
        f"max by ({BY}) (synod_raft_is_leader) < 1",
        "1m",
        "critical",
        "Synod cluster {{ $labels.job }} has no leader.",
        "No live member has led for a minute: every write and linearizable read fails.",
    ),
    Alert(
        "SynodFrequentLeaderChanges",
        f"max by ({BY}) (increase(synod_raft_leader_changes_total[15m])) > 3",
        "5m",
        "warning",
        "Synod cluster {{ $labels.job }} changed leaders often.",
        "A member saw {{ $value | humanize }} leader changes within 15 minutes.",
    ),
    Alert(
        "SynodSlowFsync",
        "histogram_quantile(0.99, sum by (namespace, job, instance, le) "
        "(rate(synod_wal_fsync_duration_seconds_bucket[5m]))) > 0.5",
        "10m",
        "warning",
        "Synod member {{ $labels.instance }} fsyncs its WAL slowly.",
        "The 99th percentile of WAL write + fsync is {{ $value | humanizeDuration }} (over 0.5 s).",
    ),
    Alert(
        "SynodSlowApply",
        "histogram_quantile(0.99, sum by (namespace, job, instance, le) "
        "(rate(synod_apply_duration_seconds_bucket[5m]))) > 0.25",
        "10m",
        "warning",
        "Synod member {{ $labels.instance }} applies committed entries slowly.",
        "The 99th percentile of applying a committed batch is "
        "{{ $value | humanizeDuration }} (over 0.25 s).",
    ),
    Alert(
        "SynodProposalsFailing",
        "sum by (namespace, job, instance) (increase(synod_raft_proposals_failed_total[15m])) > 5",
        "15m",
        "warning",
        "Synod member {{ $labels.instance }} has failing proposals.",
        "{{ $value | humanize }} proposals failed (dropped, timed out, no leader) "
        "within 15 minutes.",
    ),
    Alert(
        "SynodPeerRoundTripSlow",
        "histogram_quantile(0.99, sum by (namespace, job, instance, peer, le) "
        "(rate(synod_peer_round_trip_seconds_bucket[5m]))) > 0.5",
        "10m",
        "warning",
        "Synod member {{ $labels.instance }} reaches peer {{ $labels.peer }} slowly.",
        "The 99th percentile of heartbeat round trips is "
        "{{ $value | humanizeDuration }} (over 0.5 s, half the default election timeout).",
    ),
    Alert(
        "SynodHighServerErrorRate",
        f'sum by ({BY}) (rate(synod_http_requests_total{{code=~"5.."}}[5m])) '
        f"/ sum by ({BY}) (rate(synod_http_requests_total[5m])) > 0.05",
        "10m",
        "warning",
        "Synod cluster {{ $labels.job }} answers many server errors.",
        "{{ $value | humanizePercentage }} of answers are 5xx. Cancelled watches and "
        "clients that went away (200 or 499) are not counted.",
    ),
    Alert(
        "SynodLockFencingRejections",
        f"sum by ({BY}) "
        f'(increase(synod_http_problems_total{{code="fencing-token-stale"}}[10m])) > 3',
        "0m",
        "warning",
        "Synod cluster {{ $labels.job }} refuses stale fencing tokens.",
        "{{ $value | humanize }} writes or validations within 10 minutes carried a fencing token "
        "of a lock their client no longer holds.",
    ),
    Alert(
        "SynodLeaseKeepaliveFailures",
        f"sum by ({BY}) (increase(synod_http_problems_total"
        f'{{route="/v1/lease/keepalive", code!="not-leader"}}[10m])) > 3',
        "0m",
        "warning",
        "Synod cluster {{ $labels.job }} refuses lease keepalives.",
        "{{ $value | humanize }} keepalives failed within 10 minutes (mostly not-found: the "
        "lease had expired before its renewal).",
    ),
    Alert(
        "SynodIdClockRollback",
        "sum by (namespace, job, instance) (increase(synod_ids_rollbacks_total[10m])) > 0",
        "0m",
        "warning",
        "Synod member {{ $labels.instance }} saw its clock run backwards.",
        "ID generation on this member refused {{ $value | humanize }} requests within 10 minutes "
        "because the wall clock went back.",
    ),
    Alert(
        "SynodGossipFlapping",
        "sum by (namespace, job, instance) (increase(synod_gossip_dead_revived_total[15m])) > 2",
        "0m",
        "warning",
        "Synod gossip on {{ $labels.instance }} declares live members dead.",
        "{{ $value | humanize }} members held dead came back alive within 15 minutes: false "
        "positives of failure detection.",
    ),
)


def rules(known: frozenset[str] | None = None) -> dict[str, Any]:
    """The rules file (``groups:``), every expression checked against the catalog."""
    known = known if known is not None else series_names()
    assert 1 <= len(ALERTS) <= ALERTS_MAX
    assert len({a.name for a in ALERTS}) == len(ALERTS), "alert names must be unique"
    group: list[dict[str, Any]] = []
    for alert in ALERTS:
        check_expr(alert.expr, known)
        rule: dict[str, Any] = {"alert": alert.name, "expr": alert.expr}
        if alert.for_ != "0m":
            rule["for"] = alert.for_
        group.append(
            {
                **rule,
                "labels": {"severity": alert.severity},
                "annotations": {
                    "summary": alert.summary,
                    "description": alert.description,
                    "runbook_url": alert.runbook_url,
                },
            }
        )
    return {"groups": [{"name": GROUP_NAME, "rules": group}]}
