"""Dashboards and alert rules come from one source, checked against the node's metrics.

The chart's files equal the generator's output (a hand edit or a stale file fails), and
every metric a panel or an alert names is one the node's registry exports (a metric
renamed in code fails generation, shown here on a catalog without that metric).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from synod.observability import __main__ as generator
from synod.observability.alerts import ALERTS, rules
from synod.observability.catalog import PROMETHEUS_SERIES, families, series_names
from synod.observability.dashboards import DASHBOARDS, check_expr, render_all

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "synod"


def _all_exprs() -> list[str]:
    exprs = [q.expr for d in DASHBOARDS for p in d.panels for q in p.queries]
    return exprs + [a.expr for a in ALERTS]


def test_chart_files_equal_the_generator_output() -> None:
    files = generator.generated()
    for relative, text in files.items():
        path = CHART / relative
        assert path.exists(), f"{path} missing: run `python -m synod.observability`"
        assert path.read_text() == text, f"{path} is stale: run `python -m synod.observability`"
    on_disk = {p.name for p in (CHART / generator.DASHBOARDS_DIR).glob("*.json")}
    assert on_disk == {p.name for p in files if p.suffix == ".json"}
    assert generator.main(["--check", "--chart", str(CHART)]) == 0


def test_check_mode_reports_a_stale_chart(tmp_path: Path) -> None:
    assert generator.main(["--check", "--chart", str(tmp_path)]) == 1
    assert generator.main(["--chart", str(tmp_path)]) == 0
    assert generator.main(["--check", "--chart", str(tmp_path)]) == 0
    (tmp_path / generator.DASHBOARDS_DIR / "synod-overview.json").write_text("{}")
    assert generator.main(["--check", "--chart", str(tmp_path)]) == 1


def test_every_query_names_only_exported_metrics() -> None:
    known = series_names()
    named: set[str] = set()
    for expr in _all_exprs():
        found = set(re.findall(r"\bsynod_[a-z0-9_]+", re.sub(r'"[^"]*"', '""', expr)))
        assert found <= known, (expr, found - known)
        named |= found
    # Every family the dashboards promise is exported by one of the node's sources.
    for prefix in ("synod_raft_", "synod_http_", "synod_ids_", "synod_gossip_", "synod_lock"):
        assert any(n.startswith(prefix) for n in named), prefix
    assert "synod_raft_leader_changes" in families()


def test_a_renamed_metric_breaks_generation() -> None:
    known = series_names()
    without = frozenset(known - {"synod_wal_fsync_duration_seconds_bucket"})
    with pytest.raises(ValueError, match="synod_wal_fsync_duration_seconds_bucket"):
        render_all(without)
    with pytest.raises(ValueError, match="synod_wal_fsync_duration_seconds_bucket"):
        rules(without)
    assert render_all(known) and rules(known)["groups"][0]["rules"]


def test_check_expr_reads_metric_names_not_labels() -> None:
    known = series_names()
    assert check_expr('up{job=~"$job", route="/v1/synod_x"}', known) == ("up",)
    assert check_expr('sum by (le) (rate(synod_http_requests_total{code="5"}[1m]))', known) == (
        "synod_http_requests_total",
    )
    with pytest.raises(ValueError, match="synod_nope"):
        check_expr("synod_nope", known)
    assert "up" in PROMETHEUS_SERIES


def test_dashboards_are_grafana_json_with_unique_ids() -> None:
    for path in sorted((CHART / generator.DASHBOARDS_DIR).glob("*.json")):
        body = json.loads(path.read_text())
        assert body["uid"] == path.stem and body["title"].startswith("Synod / ")
        ids = [p["id"] for p in body["panels"]]
        assert len(ids) == len(set(ids)) and all(p["targets"] for p in body["panels"])
        for panel in body["panels"]:
            assert 0 <= panel["gridPos"]["x"] < 24 and panel["gridPos"]["w"] > 0
            assert all(t["expr"] and t["refId"] for t in panel["targets"])
        names = [v["name"] for v in body["templating"]["list"]]
        assert names == ["datasource", "job"]


def test_rules_file_carries_every_alert_with_a_runbook() -> None:
    document = yaml.safe_load((CHART / generator.RULES_FILE).read_text())
    group = document["groups"][0]["rules"]
    assert [r["alert"] for r in group] == [a.name for a in ALERTS]
    for rule in group:
        assert rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())
        assert rule["labels"]["severity"] in ("critical", "warning")


def test_docs_describe_every_dashboard_panel_and_alert() -> None:
    text = (ROOT / "docs" / "observability.md").read_text()
    for dashboard in DASHBOARDS:
        assert f"`{dashboard.uid}`" in text, dashboard.uid
        for panel in dashboard.panels:
            assert f"| {panel.title} |" in text, (dashboard.uid, panel.title)
    for alert in ALERTS:
        assert f"[{alert.name}](runbooks.md#{alert.name.lower()})" in text, alert.name
