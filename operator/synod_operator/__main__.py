"""`python -m synod_operator`: run the operator (what the chart's Deployment runs).

Environment:
  SYNOD_OPERATOR_NAMESPACES   comma-separated namespaces to watch; empty = cluster-wide
  SYNOD_OPERATOR_HEALTH_PORT  port of the liveness endpoint (/healthz), default 8080; 0 = none
  SYNOD_OPERATOR_CLUSTER_URLS member URLs per "ns/cluster" (JSON) for an operator running
                              outside the cluster (development, control-plane tests)
"""

from __future__ import annotations

import asyncio
import os

import kopf

from . import (
    chaos_handlers,
    handlers,
    idgenerator_handlers,
    lockservice_handlers,
    ratelimitpolicy_handlers,
)

DEFAULT_HEALTH_PORT = 8080


def main() -> None:
    namespaces = [ns.strip() for ns in os.environ.get("SYNOD_OPERATOR_NAMESPACES", "").split(",")]
    namespaces = [ns for ns in namespaces if ns]
    port = int(os.environ.get("SYNOD_OPERATOR_HEALTH_PORT", DEFAULT_HEALTH_PORT))
    assert handlers.RECONCILE_INTERVAL_S > 0
    assert lockservice_handlers.LOCK_RECONCILE_INTERVAL_S > 0
    assert idgenerator_handlers.ID_RECONCILE_INTERVAL_S > 0
    assert ratelimitpolicy_handlers.RATELIMIT_RECONCILE_INTERVAL_S > 0
    assert chaos_handlers.CHAOS_FOLLOW_INTERVAL_S > 0
    assert 0 <= port < 65536, "SYNOD_OPERATOR_HEALTH_PORT is a TCP port (0: no endpoint)"
    kopf.configure(verbose=os.environ.get("SYNOD_OPERATOR_VERBOSE") == "1")
    asyncio.run(
        kopf.operator(
            # One replica with the Recreate strategy: no peering CRDs needed.
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=f"http://0.0.0.0:{port}/healthz" if port else None,
        )
    )


if __name__ == "__main__":
    main()
