"""A real Kubernetes control plane (etcd + kube-apiserver) on loopback.

The binaries come from ``make envtest`` (built from the Go module proxy by
``e2e/toolchain``), found the way controller-runtime's envtest finds them: the
directory named by ``KUBEBUILDER_ASSETS``; without that variable the default
cache location ``/var/cache/synod-toolchain/envtest`` is tried. Tests using
the ``control_plane`` fixture are skipped, with the reason, only when the
binaries are absent.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port

ASSETS_ENV = "KUBEBUILDER_ASSETS"
DEFAULT_ASSETS_DIR = Path("/var/cache/synod-toolchain/envtest")
REQUIRED_BINARIES = ("etcd", "kube-apiserver")
STARTUP_TIMEOUT_S = 90.0
REQUEST_TIMEOUT_S = 10.0
LOOPBACK = "127.0.0.1"


def find_assets_dir() -> Path | None:
    """The directory holding the envtest binaries, or None when absent."""
    configured = os.environ.get(ASSETS_ENV)
    candidates = [Path(configured)] if configured else [DEFAULT_ASSETS_DIR]
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in REQUIRED_BINARIES):
            return directory
    return None


def _free_port() -> int:
    return free_port(LOOPBACK)


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver pair and how to talk to it."""

    server_url: str
    token: str
    kubeconfig_path: Path
    assets_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def kubectl(self) -> Path | None:
        path = self.assets_dir / "kubectl"
        return path if os.access(path, os.X_OK) else None

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """One HTTP request to the apiserver; returns (status, decoded body)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server_url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        # The serving certificate is self-signed by kube-apiserver for loopback.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S, context=context) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, _decode(err.read())


def _decode(payload: bytes) -> Any:
    """JSON bodies decoded; plain-text ones (``/readyz`` says ``ok``) as text."""
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")


def _wait_ready(plane: ControlPlane, log_paths: list[Path]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error = ""
    while time.monotonic() < deadline:
        for proc in plane.processes:
            if proc.poll() is not None:
                tails = "\n".join(p.read_text(errors="replace")[-3000:] for p in log_paths)
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{tails}")
        try:
            status, _ = plane.request("GET", "/readyz")
            if status == 200:
                return
            last_error = f"/readyz answered {status}"
        except OSError as err:
            last_error = str(err)
        time.sleep(0.5)
    tails = "\n".join(p.read_text(errors="replace")[-3000:] for p in log_paths)
    raise RuntimeError(
        f"control plane not ready after {STARTUP_TIMEOUT_S}s ({last_error}):\n{tails}"
    )


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(processes):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """Start etcd and kube-apiserver on loopback; yield how to reach them."""
    assets = find_assets_dir()
    if assets is None:
        pytest.skip(
            f"envtest binaries (etcd, kube-apiserver) not found in ${ASSETS_ENV} "
            f"or {DEFAULT_ASSETS_DIR}: run `make envtest` and export the variable it prints"
        )
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the service-account signing key")
    workdir = Path(tempfile.mkdtemp(prefix="synod-controlplane-"))
    etcd_client_port, etcd_peer_port, api_port = _free_port(), _free_port(), _free_port()
    token = "synod-test-admin-token"
    (workdir / "tokens.csv").write_text(f'{token},synod-admin,synod-admin,"system:masters"\n')
    key = workdir / "sa.key"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True, timeout=60
    )
    etcd_log, api_log = workdir / "etcd.log", workdir / "kube-apiserver.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with etcd_log.open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [
                        str(assets / "etcd"),
                        f"--data-dir={workdir / 'etcd'}",
                        f"--listen-client-urls=http://{LOOPBACK}:{etcd_client_port}",
                        f"--advertise-client-urls=http://{LOOPBACK}:{etcd_client_port}",
                        f"--listen-peer-urls=http://{LOOPBACK}:{etcd_peer_port}",
                        f"--initial-advertise-peer-urls=http://{LOOPBACK}:{etcd_peer_port}",
                        f"--initial-cluster=default=http://{LOOPBACK}:{etcd_peer_port}",
                        "--unsafe-no-fsync=true",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        with api_log.open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [
                        str(assets / "kube-apiserver"),
                        f"--etcd-servers=http://{LOOPBACK}:{etcd_client_port}",
                        f"--bind-address={LOOPBACK}",
                        f"--advertise-address={LOOPBACK}",
                        f"--secure-port={api_port}",
                        f"--cert-dir={workdir / 'certs'}",
                        f"--token-auth-file={workdir / 'tokens.csv'}",
                        "--authorization-mode=RBAC",
                        "--service-cluster-ip-range=10.0.0.0/24",
                        "--service-account-issuer=https://kubernetes.default.svc",
                        f"--service-account-key-file={key}",
                        f"--service-account-signing-key-file={key}",
                        "--allow-privileged=true",
                        "--disable-admission-plugins=ServiceAccount",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        server = f"https://{LOOPBACK}:{api_port}"
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "envtest",
                            "cluster": {"server": server, "insecure-skip-tls-verify": True},
                        }
                    ],
                    "users": [{"name": "admin", "user": {"token": token}}],
                    "contexts": [
                        {"name": "envtest", "context": {"cluster": "envtest", "user": "admin"}}
                    ],
                    "current-context": "envtest",
                }
            )
        )
        plane = ControlPlane(server, token, kubeconfig, assets, processes)
        _wait_ready(plane, [etcd_log, api_log])
        yield plane
    finally:
        _stop(processes)
        shutil.rmtree(workdir, ignore_errors=True)
