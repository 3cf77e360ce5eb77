"""`synod chaos run|list|show|history` (docs/chaos.md): ChaosExperiment resources through
the Kubernetes API (the kubeconfig, as kubectl finds it: $KUBECONFIG or ~/.kube/config).

`run` creates an experiment and follows it until its verdict: exit 0 Passed, 1 Failed,
5 Unknown or could not run. The manifest and the progress lines are pure functions
(`experiment_manifest`, `progress_lines`), tested without a cluster.
"""

from __future__ import annotations

import base64
import gzip
import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import click
from rich.markup import escape
from rich.table import Table

from synod.cli.output import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Failure,
    handle_errors,
    out_console,
    print_json,
)

__all__ = ["experiment_manifest", "progress_lines", "register"]

API: Final = "/apis/synod.dev/v1alpha1"
REQUEST_TIMEOUT_S: Final = 30.0
FOLLOW_POLL_S: Final = 2.0
# `run` follows at most this long past the workload's duration (then exits 5).
FOLLOW_GRACE_S: Final = 900.0
LIST_LIMIT_ITEMS: Final = 500
HISTORY_KEY: Final = "history.jsonl.gz"
# --fault shorthands: (type, shape or member).
FAULTS: Final[dict[str, tuple[str, str]]] = {
    "none": ("", ""),
    "partition-leader": ("partition", "isolate-leader"),
    "partition-member": ("partition", "isolate-member"),
    "partition-halves": ("partition", "halves"),
    "partition-one-way": ("partition", "one-way"),
    "partition-bridge": ("partition", "bridge"),
    "partition-ring": ("partition", "ring"),
    "kill-leader": ("kill", "leader"),
    "pause-leader": ("pause", "leader"),
    "latency-leader": ("netem", "leader"),
}
TARGET_KINDS: Final = {
    "kv": "ConsensusCluster",
    "cluster": "ConsensusCluster",
    "lockservice": "LockService",
    "idgenerator": "IdGenerator",
}
WORKLOAD_FOR_KIND: Final = {"ConsensusCluster": "kv", "LockService": "locks", "IdGenerator": "ids"}


def experiment_manifest(
    name: str,
    target: str,
    *,
    target_kind: str = "ConsensusCluster",
    fault: str = "partition-leader",
    duration: str = "60s",
    fault_start: str = "10s",
    fault_duration: str = "20s",
    workload: str = "",
    clients: int = 3,
    seed: int = 0,
    unsafe: str = "",
) -> dict[str, Any]:
    """The ChaosExperiment `run` creates. Raises ValueError for an unknown fault."""
    if fault not in FAULTS:
        raise ValueError(f"--fault must be one of {', '.join(FAULTS)}")
    kind, what = FAULTS[fault]
    work: dict[str, Any] = {
        "kind": workload or WORKLOAD_FOR_KIND[target_kind],
        "clients": clients,
        "duration": duration,
    }
    if unsafe:
        work["unsafe"] = unsafe
    spec: dict[str, Any] = {
        "target": {"kind": target_kind, "name": target},
        "workload": work,
        "seed": seed,
    }
    if kind:
        entry: dict[str, Any] = {
            "type": kind,
            "startAfter": fault_start,
            "duration": fault_duration,
        }
        if kind == "partition":
            entry["shape"] = what
        else:
            entry["member"] = what
        if kind == "netem":
            entry["delayMs"] = 200
        spec["faults"] = [entry]
    manifest: dict[str, Any] = {
        "apiVersion": "synod.dev/v1alpha1",
        "kind": "ChaosExperiment",
        "metadata": {"name": name},
        "spec": spec,
    }
    assert manifest["spec"]["target"]["name"] == target
    return manifest


def progress_lines(previous: dict[str, Any], status: dict[str, Any]) -> list[str]:
    """What changed between two statuses, as lines for the progress display."""
    lines = []
    if status.get("phase") != previous.get("phase") and status.get("phase"):
        lines.append(f"phase {status['phase']}: {status.get('message', '')}".rstrip(": "))
    seen = len(previous.get("timeline") or [])
    for event in (status.get("timeline") or [])[seen:]:  # bound: the status's timeline
        lines.append(f"{event.get('time', '?')} {event.get('event', '')}")
    if status.get("verdict") and not previous.get("verdict"):
        lines.append(f"verdict {status['verdict']} {json.dumps(status.get('counts') or {})}")
        for anomaly in status.get("anomalies") or []:  # bound: the operator keeps 10
            lines.append(f"  [{anomaly.get('kind')}] {anomaly.get('message')}")
    return lines


# -- a small Kubernetes client --------------------------------------------------------------


@dataclass
class Kube:
    server: str
    headers: dict[str, str]
    context: ssl.SSLContext | None
    namespace: str

    @classmethod
    def login(cls, namespace: str | None) -> Kube:
        """From the kubeconfig (kopf's loader). Raises Failure when there is none."""
        import kopf

        try:
            info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
        except Exception as error:  # kopf raises its own LoginError and file errors
            raise Failure(f"cannot read the kubeconfig: {error}", EXIT_USAGE) from error
        if info is None:
            raise Failure("no kubeconfig found ($KUBECONFIG or ~/.kube/config)", EXIT_USAGE)
        context = info.as_ssl_context() if info.server.startswith("https") else None
        return cls(
            info.server.rstrip("/"),
            dict(info.as_http_headers()),
            context,
            namespace or info.default_namespace or "default",
        )

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Raises Failure (not found: EXIT_NOT_FOUND; unreachable: EXIT_UNAVAILABLE)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={
                **self.headers,
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(
                req, timeout=REQUEST_TIMEOUT_S, context=self.context
            ) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            code = (
                EXIT_NOT_FOUND
                if error.code == 404
                else EXIT_USAGE
                if error.code in (400, 409, 422)
                else EXIT_ERROR
            )
            raise Failure(f"{method} {path}: {error.code} {message}", code) from error
        except OSError as error:
            raise Failure(f"{self.server}: {error}", EXIT_UNAVAILABLE) from error

    def path(self, plural: str = "chaosexperiments", name: str = "", base: str = API) -> str:
        path = f"{base}/namespaces/{quote(self.namespace)}/{plural}"
        return path + (f"/{quote(name)}" if name else "")


def _follow(kube: Kube, name: str, deadline_s: float) -> int:
    previous: dict[str, Any] = {}
    deadline = time.monotonic() + deadline_s
    for _poll in range(int(deadline_s / FOLLOW_POLL_S) + 1):  # bound: the deadline
        status = kube.request("GET", kube.path(name=name)).get("status") or {}
        for line in progress_lines(previous, status):
            out_console.print(escape(line))
        previous = status
        if status.get("phase") in ("Completed", "Failed"):
            return {"Passed": 0, "Failed": EXIT_ERROR}.get(
                status.get("verdict", ""), EXIT_UNAVAILABLE
            )
        if time.monotonic() >= deadline:
            break
        time.sleep(FOLLOW_POLL_S)  # a CLI's poll interval, not a test's wait
    out_console.print(f"gave up following {name} after {deadline_s:.0f}s")
    return EXIT_UNAVAILABLE


def register(cli: click.Group) -> None:
    """Add the `chaos` group to ``cli``. Raises nothing."""

    @cli.group(epilog=EXIT_CODES_HELP)
    def chaos() -> None:
        """Chaos experiments on Kubernetes: faults + a recorded workload + a verdict."""

    namespace_option = click.option(
        "-n", "--namespace", default=None, help="Namespace [default: the kubeconfig's]."
    )
    json_option = click.option(
        "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
    )

    @chaos.command("run")
    @click.option("--target", required=True, help="Name of the target resource.")
    @click.option(
        "--target-kind",
        type=click.Choice(sorted(TARGET_KINDS)),
        default="kv",
        show_default=True,
        help="kv/cluster = ConsensusCluster.",
    )
    @click.option(
        "--fault", type=click.Choice(list(FAULTS)), default="partition-leader", show_default=True
    )
    @click.option("--duration", default="60s", show_default=True, help="Workload duration.")
    @click.option("--fault-start", default="10s", show_default=True)
    @click.option("--fault-duration", default="20s", show_default=True)
    @click.option(
        "--workload",
        type=click.Choice(["", "kv", "locks", "ids"]),
        default="",
        help="Default: the target's (kv, locks or ids).",
    )
    @click.option("--clients", type=int, default=3, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option(
        "--unsafe",
        type=click.Choice(["", "serializable-reads", "ignore-fencing"]),
        default="",
        help="A deliberately unsafe client (the checkers must bite).",
    )
    @click.option("--name", default=None, help="Default: <target>-<fault>-<time>.")
    @click.option("--follow/--no-follow", default=True, show_default=True)
    @namespace_option
    @handle_errors
    def run(
        target: str,
        target_kind: str,
        fault: str,
        duration: str,
        fault_start: str,
        fault_duration: str,
        workload: str,
        clients: int,
        seed: int,
        unsafe: str,
        name: str | None,
        follow: bool,
        namespace: str | None,
    ) -> None:
        """Create a ChaosExperiment and follow it to its verdict."""
        from synod.chaos.recorder import parse_duration_s

        try:
            run_s = parse_duration_s(duration)
        except ValueError as error:
            raise Failure(f"--duration: {error}", EXIT_USAGE) from error
        name = name or f"{target}-{fault}-{time.strftime('%H%M%S')}".lower()
        manifest = experiment_manifest(
            name,
            target,
            target_kind=TARGET_KINDS[target_kind],
            fault=fault,
            duration=duration,
            fault_start=fault_start,
            fault_duration=fault_duration,
            workload=workload,
            clients=clients,
            seed=seed,
            unsafe=unsafe,
        )
        kube = Kube.login(namespace)
        kube.request("POST", kube.path(), manifest)
        out_console.print(f"chaosexperiment {escape(name)} created in {escape(kube.namespace)}")
        if follow:
            raise SystemExit(_follow(kube, name, run_s + FOLLOW_GRACE_S))

    @chaos.command("list")
    @namespace_option
    @json_option
    @handle_errors
    def list_(namespace: str | None, output: str) -> None:
        """Experiments with their target, fault, phase and verdict."""
        kube = Kube.login(namespace)
        items = kube.request("GET", kube.path() + f"?limit={LIST_LIMIT_ITEMS}")["items"]
        rows = [
            {
                "name": i["metadata"]["name"],
                "target": i["spec"]["target"]["name"],
                "fault": (i.get("status") or {}).get("fault", ""),
                "phase": (i.get("status") or {}).get("phase", "Pending"),
                "verdict": (i.get("status") or {}).get("verdict", ""),
            }
            for i in items
        ]
        if output == "json":
            print_json(rows)
            return
        table = Table("NAME", "TARGET", "FAULT", "PHASE", "VERDICT", box=None)
        for row in rows:
            table.add_row(
                *(escape(str(row[k])) for k in ("name", "target", "fault", "phase", "verdict"))
            )
        out_console.print(table)

    @chaos.command("show")
    @click.argument("name")
    @namespace_option
    @json_option
    @handle_errors
    def show(name: str, namespace: str | None, output: str) -> None:
        """An experiment's status: verdict, counts, anomalies, fault timeline."""
        kube = Kube.login(namespace)
        status = kube.request("GET", kube.path(name=name)).get("status") or {}
        if output == "json":
            print_json(status)
            return
        for line in progress_lines({}, status):
            out_console.print(escape(line))
        if status.get("historyConfigMap"):
            out_console.print(f"history: synod chaos history {escape(name)}")

    @chaos.command("history")
    @click.argument("name")
    @click.option(
        "--out",
        "out_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Write the gzip'd JSON lines here instead of printing them.",
    )
    @namespace_option
    @handle_errors
    def history(name: str, out_path: Path | None, namespace: str | None) -> None:
        """The recorded history of an experiment (JSON lines, one per operation)."""
        kube = Kube.login(namespace)
        status = kube.request("GET", kube.path(name=name)).get("status") or {}
        configmap = status.get("historyConfigMap")
        if not configmap:
            raise Failure(f"{name} has no stored history (yet)", EXIT_NOT_FOUND)
        doc = kube.request("GET", kube.path("configmaps", configmap, base="/api/v1"))
        data = base64.b64decode((doc.get("binaryData") or {}).get(HISTORY_KEY, ""))
        if out_path is not None:
            out_path.write_bytes(data)
            return
        click.echo(gzip.decompress(data).decode(), nl=False)
