"""The generated alert rules under `promtool test rules` (Debian's prometheus package).

Every alert has a case in which it fires (labels and rendered annotations checked by
promtool) and most have a benign look-alike in which it must not: the lesson of
etcd#13147, whose failed-request alert fired at 100 % on cancelled watches.
`make test-tools` installs promtool; without it this module skips (a failure under CI).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from synod.observability.alerts import ALERTS

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "synod" / "files" / "prometheus" / "synod-alerts.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
PROMTOOL_TIMEOUT_S = 120
C = 'job="c1"'  # the cluster (job) of every case


@dataclass(frozen=True)
class Case:
    """Input series, then at ``at`` the alerts that fire (label sets) or none."""

    alert: str
    series: dict[str, str]
    at: str
    fires: list[dict[str, str]] = field(default_factory=list)
    shown: str = ""  # how the alert's {{ $value | ... }} renders


def _three(metric: str, values: list[str]) -> dict[str, str]:
    return {f'{metric}{{{C}, instance="n{i}"}}': v for i, v in enumerate(values, start=1)}


def _histogram(metric: str, below: str, at: str, extra: str = "") -> dict[str, str]:
    """All observations (60 a minute) in the bucket that ends at ``at``."""
    labels = f'{C}, instance="n1"{extra}'
    return {
        f'{metric}_bucket{{{labels}, le="{below}"}}': "0+0x20",
        f'{metric}_bucket{{{labels}, le="{at}"}}': "0+60x20",
        f'{metric}_bucket{{{labels}, le="+Inf"}}': "0+60x20",
    }


N1 = {"job": "c1", "instance": "n1"}
CASES = [
    # A member that exported Synod metrics stops answering; another job's down target
    # (no synod_member_id ever) is not a Synod member.
    Case("SynodMemberDown",
         {f'up{{{C}, instance="n1"}}': "1 1 1 0 0 0 0 0",
          f'synod_member_id{{{C}, instance="n1"}}': "1 1 1 _ _ _ _ _",
          f'up{{{C}, instance="n2"}}': "1x7", f'synod_member_id{{{C}, instance="n2"}}': "2x7",
          'up{job="other", instance="x"}': "0x7"},
         "6m", [N1]),
    Case("SynodMemberDown", {'up{job="other", instance="x"}': "0x7"}, "6m"),
    # One of three voters left: below the quorum of two.
    Case("SynodInsufficientMembers",
         {f'synod_member_id{{{C}, instance="n1"}}': "1x5",
          f'synod_raft_voters{{{C}, instance="n1"}}': "3x5"},
         "4m", [{"job": "c1"}], "1"),
    # Two of three is a quorum: no alert.
    Case("SynodInsufficientMembers",
         {**_three("synod_member_id", ["1x5", "2x5"]),
          **_three("synod_raft_voters", ["3x5", "3x5"])}, "4m"),
    Case("SynodNoLeader", _three("synod_raft_is_leader", ["0x5", "0x5", "0x5"]), "3m",
         [{"job": "c1"}]),
    # An election (a second without leader between scrapes) is not an outage.
    Case("SynodNoLeader", _three("synod_raft_is_leader", ["1 0 0 0 0", "0 0 1 1 1", "0x4"]),
         "4m"),
    Case("SynodFrequentLeaderChanges", _three("synod_raft_leader_changes_total", ["0+1x30"]),
         "25m", [{"job": "c1"}], "15"),
    # One election (a kill) every few hours is the protocol working.
    Case("SynodFrequentLeaderChanges",
         _three("synod_raft_leader_changes_total", ["1x5 2x25", "1x5 2x25", "1x5 2x25"]), "25m"),
    Case("SynodSlowFsync", _histogram("synod_wal_fsync_duration_seconds", "0.512", "1.0"),
         "15m", [N1], "995.1ms"),
    Case("SynodSlowFsync", _histogram("synod_wal_fsync_duration_seconds", "0.001", "0.002"),
         "15m"),
    Case("SynodSlowApply", _histogram("synod_apply_duration_seconds", "0.512", "1.0"),
         "15m", [N1], "995.1ms"),
    Case("SynodProposalsFailing", _three("synod_raft_proposals_failed_total", ["0+1x40"]),
         "35m", [N1], "15"),
    # A few proposals lost in one election are not a trend.
    Case("SynodProposalsFailing",
         _three("synod_raft_proposals_failed_total", ["0x5 3x35"]), "35m"),
    Case("SynodPeerRoundTripSlow",
         _histogram("synod_peer_round_trip_seconds", "0.256", "0.512", ', peer="2"'),
         "15m", [{**N1, "peer": "2"}], "509.4ms"),
    Case("SynodHighServerErrorRate",
         {f'synod_http_requests_total{{{C}, instance="n1", route="/v1/kv/put", code="200"}}':
          "0+54x20",
          f'synod_http_requests_total{{{C}, instance="n1", route="/v1/kv/put", code="503"}}':
          "0+6x20"},
         "15m", [{"job": "c1"}], "10%"),
    # etcd#13147: every watch stream ending because its client went away (499 for a cut
    # forwarded stream; a direct one keeps its 200), and
    # a stream of 4xx problems, are not server errors.
    Case("SynodHighServerErrorRate",
         {f'synod_http_requests_total{{{C}, instance="n1", route="/v1/watch", code="499"}}':
          "0+60x20",
          f'synod_http_requests_total{{{C}, instance="n1", route="/v1/kv/put", code="409"}}':
          "0+60x20"},
         "15m"),
    Case("SynodLockFencingRejections",
         {f'synod_http_problems_total{{{C}, instance="n1", route="/v1/locks/validate", '
          f'code="fencing-token-stale"}}': "0+1x20"},
         "15m", [{"job": "c1"}], "10"),
    # Lock waits that time out are the client's choice, not fencing.
    Case("SynodLockFencingRejections",
         {f'synod_http_problems_total{{{C}, instance="n1", route="/v1/locks/wait", '
          f'code="lock-wait-timeout"}}': "0+1x20"}, "15m"),
    Case("SynodLeaseKeepaliveFailures",
         {f'synod_http_problems_total{{{C}, instance="n1", route="/v1/lease/keepalive", '
          f'code="not-found"}}': "0+1x20"},
         "15m", [{"job": "c1"}], "10"),
    # A follower redirecting keepalives to the leader (not-leader) is routing.
    Case("SynodLeaseKeepaliveFailures",
         {f'synod_http_problems_total{{{C}, instance="n1", route="/v1/lease/keepalive", '
          f'code="not-leader"}}': "0+10x20"}, "15m"),
    Case("SynodIdClockRollback",
         {f'synod_ids_rollbacks_total{{{C}, instance="n1", generator="orders"}}': "0 0 1x10"},
         "5m", [N1], "1"),
    Case("SynodIdClockRollback",
         {f'synod_ids_rollbacks_total{{{C}, instance="n1", generator="orders"}}': "1x30"},
         "25m"),
    Case("SynodGossipFlapping",
         {f'synod_gossip_dead_revived_total{{{C}, instance="n1"}}': "0+1x20"},
         "16m", [N1], "15"),
    # One member that really died and was restarted once is not flapping.
    Case("SynodGossipFlapping",
         {f'synod_gossip_dead_revived_total{{{C}, instance="n1"}}': "0x5 1x20"}, "16m"),
]  # fmt: skip

_VALUE = re.compile(r"\{\{ \$value[^}]*\}\}")
_LABEL = re.compile(r"\{\{ \$labels\.(\w+) \}\}")


def _annotations(alert: str, labels: dict[str, str], shown: str) -> dict[str, str]:
    rule = next(a for a in ALERTS if a.name == alert)
    texts = {"summary": rule.summary, "description": rule.description}
    rendered = {
        key: _VALUE.sub(shown, _LABEL.sub(lambda m: labels.get(m.group(1), ""), text))
        for key, text in texts.items()
    }
    return {**rendered, "runbook_url": rule.runbook_url}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], check=False, capture_output=True, text=True,
                          timeout=PROMTOOL_TIMEOUT_S)  # fmt: skip


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not found: `make test-tools` installs Debian's prometheus")
    return found


def _test_file(tmp_path: Path, cases: list[Case]) -> Path:
    tests: list[dict[str, Any]] = []
    for case in cases:
        severity = next(a.severity for a in ALERTS if a.name == case.alert)
        expected = [
            {"exp_labels": {**labels, "severity": severity},
             "exp_annotations": _annotations(case.alert, labels, case.shown)}
            for labels in case.fires
        ]  # fmt: skip
        tests.append({
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
            "alert_rule_test": [
                {"eval_time": case.at, "alertname": case.alert, "exp_alerts": expected}
            ],
        })  # fmt: skip
    path = tmp_path / "synod-alerts.test.yaml"
    document = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_rules_file_is_valid() -> None:
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_every_alert_fires_and_benign_signals_do_not(tmp_path: Path) -> None:
    firing = {case.alert for case in CASES if case.fires}
    assert firing == {a.name for a in ALERTS}, "every alert needs a case in which it fires"
    result = _run("test", "rules", str(_test_file(tmp_path, CASES)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """The harness can fail: a benign case claimed to fire is reported by promtool."""
    wrong = Case("SynodMemberDown", {'up{job="other", instance="x"}': "0x7"}, "6m",
                 [{"job": "other", "instance": "x"}])  # fmt: skip
    result = _run("test", "rules", str(_test_file(tmp_path, [wrong])))
    assert result.returncode != 0
    assert "SynodMemberDown" in result.stdout + result.stderr


def test_every_alert_has_a_runbook_section() -> None:
    headings = {m.group(1).lower() for m in re.finditer(r"^## (\w+)", RUNBOOKS.read_text(), re.M)}
    for alert in ALERTS:
        assert alert.runbook_url.endswith("#" + alert.name.lower())
        assert alert.name.lower() in headings, f"docs/runbooks.md lacks ## {alert.name}"
