"""Dashboards and alert rules of a Synod cluster, generated from the node's metrics.

`python -m synod.observability` writes them into the chart (charts/synod/files);
docs/observability.md describes them and docs/runbooks.md answers the alerts.
"""
