"""Tier 4: talk to a real kube-apiserver (started by the control_plane fixture)."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from .conftest import ControlPlane

pytestmark = pytest.mark.slow


def test_namespace_and_configmap_round_trip(control_plane: ControlPlane) -> None:
    namespace = f"synod-test-{uuid.uuid4().hex[:8]}"

    status, created = control_plane.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    assert status == 201, created
    assert created["metadata"]["name"] == namespace

    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "synod-config", "labels": {"app.kubernetes.io/name": "synod"}},
        "data": {"election_timeout_ticks": "10"},
    }
    status, created = control_plane.request(
        "POST", f"/api/v1/namespaces/{namespace}/configmaps", configmap
    )
    assert status == 201, created
    assert created["metadata"]["resourceVersion"]

    # Creating it again is a conflict, as the API promises.
    status, problem = control_plane.request(
        "POST", f"/api/v1/namespaces/{namespace}/configmaps", configmap
    )
    assert status == 409, problem
    assert problem["reason"] == "AlreadyExists"

    status, fetched = control_plane.request(
        "GET", f"/api/v1/namespaces/{namespace}/configmaps/synod-config"
    )
    assert status == 200
    assert fetched["data"] == {"election_timeout_ticks": "10"}

    if control_plane.kubectl is not None:
        out = subprocess.run(
            [
                str(control_plane.kubectl),
                f"--kubeconfig={control_plane.kubeconfig_path}",
                "-n",
                namespace,
                "get",
                "configmap",
                "-l",
                "app.kubernetes.io/name=synod",
                "-o",
                "json",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        items = json.loads(out)["items"]
        assert [item["metadata"]["name"] for item in items] == ["synod-config"]
