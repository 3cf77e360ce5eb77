"""The chart's dashboards, PodMonitor and PrometheusRule under `helm template`.

Dashboards are ConfigMaps labelled grafana_dashboard "1", each switchable; the
PodMonitor and PrometheusRule appear when asked for, or ("auto", the default) when the
Prometheus operator's API is known to the cluster (`--api-versions` here, as
`.Capabilities.APIVersions` on a real install). Needs helm (tests/unit/test_operator_chart).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from synod.observability import __main__ as generator
from synod_operator.builders import Owner, build_all
from synod_operator.spec import parse_spec
from tests.unit.test_operator_chart import CHART, helm, render

MONITORING_APIS = (
    "--api-versions=monitoring.coreos.com/v1/PodMonitor",
    "--api-versions=monitoring.coreos.com/v1/PrometheusRule",
)


def _render(*sets: str, apis: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    if not apis:
        return render(*sets)
    flags = [f"--set={s}" for s in sets]
    out = helm("template", "rel", str(CHART), "--namespace=synod-system", *apis, *flags).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _dashboard_keys() -> set[str]:
    return {
        p.stem.removeprefix("synod-") for p in (CHART / generator.DASHBOARDS_DIR).glob("*.json")
    }


def test_every_dashboard_ships_as_a_labelled_config_map_by_default() -> None:
    docs = render()
    maps = {d["metadata"]["name"]: d for d in _of(docs, "ConfigMap")}
    assert set(maps) == {f"rel-dashboard-{key}" for key in _dashboard_keys()}
    assert len(maps) == 6
    for key in _dashboard_keys():
        config_map = maps[f"rel-dashboard-{key}"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "synod-system"
        (name, body), = config_map["data"].items()  # fmt: skip
        on_disk = (CHART / generator.DASHBOARDS_DIR / name).read_text()
        assert json.loads(body) == json.loads(on_disk)
    # Without the Prometheus operator's API, "auto" renders neither object.
    assert not _of(docs, "PodMonitor") and not _of(docs, "PrometheusRule")


def test_each_dashboard_can_be_switched_off() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]["dashboards"]
    assert _dashboard_keys() <= set(values), "every generated dashboard needs a values key"
    maps = [d["metadata"]["name"] for d in _of(render("monitoring.dashboards.locks=false"),
                                                    "ConfigMap")]  # fmt: skip
    assert "rel-dashboard-locks" not in maps and "rel-dashboard-overview" in maps
    assert not _of(render("monitoring.dashboards.enabled=false"), "ConfigMap")
    moved = _of(render("monitoring.dashboards.namespace=grafana"), "ConfigMap")
    assert {d["metadata"]["namespace"] for d in moved} == {"grafana"}


def test_monitors_and_rules_follow_the_crds_unless_forced() -> None:
    auto = _render(apis=MONITORING_APIS)
    assert len(_of(auto, "PodMonitor")) == 1 and len(_of(auto, "PrometheusRule")) == 1
    off = _render("monitoring.podMonitor.enabled=false", "monitoring.prometheusRule.enabled=false",
                  apis=MONITORING_APIS)  # fmt: skip
    assert not _of(off, "PodMonitor") and not _of(off, "PrometheusRule")
    forced = render("monitoring.podMonitor.enabled=true", "monitoring.prometheusRule.enabled=true")
    assert len(_of(forced, "PodMonitor")) == 1 and len(_of(forced, "PrometheusRule")) == 1
    bad = helm("template", "rel", str(CHART), "--set=monitoring.podMonitor.enabled=maybe",
               check=False)  # fmt: skip
    assert bad.returncode != 0


def test_pod_monitor_selects_the_operators_node_pods() -> None:
    (monitor,) = _of(_render("monitoring.podMonitor.labels.release=kps", apis=MONITORING_APIS),
                     "PodMonitor")  # fmt: skip
    assert monitor["metadata"]["labels"]["release"] == "kps"
    spec = monitor["spec"]
    cluster = parse_spec("orders", "team-a", {})
    built = build_all(cluster, Owner("orders", "uid-1"), initial_replicas=3, bootstrapped=False,
                      statefulset_replicas=3)  # fmt: skip
    sts = next(o for o in built if o["kind"] == "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    # job = the cluster's name: the alerts group by (namespace, job).
    assert pod_labels[spec["jobLabel"]] == "orders"
    ports = {p["name"] for c in sts["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert spec["namespaceSelector"] == {"any": True}


def test_prometheus_rule_is_the_rules_file_with_the_runbook_base() -> None:
    rules_file = yaml.safe_load((CHART / generator.RULES_FILE).read_text())
    (rule,) = _of(_render(apis=MONITORING_APIS), "PrometheusRule")
    assert rule["spec"] == rules_file
    base = "https://wiki.example/synod/runbooks"
    (moved,) = _of(_render(f"monitoring.prometheusRule.runbookBaseUrl={base}",
                           apis=MONITORING_APIS), "PrometheusRule")  # fmt: skip
    urls = [r["annotations"]["runbook_url"] for r in moved["spec"]["groups"][0]["rules"]]
    assert urls and all(u.startswith(base + "#synod") for u in urls)


def test_lint_with_everything_on() -> None:
    result = helm("lint", str(CHART), "--set=monitoring.podMonitor.enabled=true",
                  "--set=monitoring.prometheusRule.enabled=true", check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
