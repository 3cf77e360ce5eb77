"""kopf handlers for RateLimitPolicy: thin shells over ratelimitpolicy.py and
service_handlers.py.

* create/update/resume and a level-triggered timer (service_handlers.py, shared by every
  service resource): make the dedicated cluster if asked for, write the domain's policy
  through the cluster's API when it differs from the spec (an unchanged policy is not
  written again, so the policy generation stays still), read every member's applied
  generation and ring, refresh the status;
* delete (behind the operator's finalizer): remove the domain's policy from the cluster
  (its checks then answer `404 not-found`); an owned cluster then goes by garbage
  collection.

Loaded by `python -m synod_operator` next to the ConsensusCluster handlers.
"""

from __future__ import annotations

from typing import Any

import kopf

from .admin import AdminClient
from .handlers import Logger
from .ratelimitpolicy import (
    RATELIMITPOLICY_PLURAL,
    RateLimitPolicySpec,
    build_ratelimit_status,
    dedicated_cluster_manifest,
    needs_write,
    parse_ratelimitpolicy,
    policy_document,
)
from .service_handlers import (
    ServiceResource,
    parse,
    register,
    remove,
)
from .spec import GROUP, VERSION

RATELIMIT_RECONCILE_INTERVAL_S = 5.0


async def _write(admin: AdminClient, spec: RateLimitPolicySpec) -> None:
    stored, _generation = await admin.ratelimit_policy_get(spec.domain)
    if needs_write(stored, spec):
        await admin.ratelimit_policy_put(policy_document(spec))


async def _read(admin: AdminClient, spec: RateLimitPolicySpec) -> dict[str, Any] | None:
    stored, generation = await admin.ratelimit_policy_get(spec.domain)
    members = await admin.ratelimit_member_status()
    urls = admin.client_urls
    return {
        "policy": stored,
        "generation": generation,
        "members": [{"url": url, "status": s} for url, s in zip(urls, members, strict=True)],
    }


RATELIMITPOLICY = ServiceResource(
    kind="RateLimitPolicy",
    plural=RATELIMITPOLICY_PLURAL,
    parse=parse_ratelimitpolicy,
    attachment=lambda spec: spec.attachment,
    cluster_manifest=dedicated_cluster_manifest,
    write=_write,
    read=_read,
    build_status=build_ratelimit_status,
    describe=lambda spec: f"rate-limit domain {spec.domain!r} in {spec.attachment.cluster}",
    ready_reason="PolicyApplied",
    # The node's parser is the operator's: a refusal means a node of another version;
    # retrying cannot help (the status says so, the timer keeps looking).
    final_refusals={"invalid-argument": "PolicyRefused"},
)
register(RATELIMITPOLICY, RATELIMIT_RECONCILE_INTERVAL_S)


@kopf.on.delete(GROUP, VERSION, RATELIMITPOLICY_PLURAL)
async def delete_ratelimitpolicy(
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    body: kopf.Body,
    retry: int,
    logger: Logger,
    **_: Any,
) -> None:
    """Remove the domain's policy from the cluster, then let the resource go."""
    parsed = parse(RATELIMITPOLICY, name, namespace, spec)
    await remove(
        RATELIMITPOLICY, parsed, uid, lambda admin: admin.ratelimit_policy_delete(parsed.domain),
        retry=retry, body=body, logger=logger, failure_reason="PolicyNotRemoved",
    )  # fmt: skip
