"""kopf handlers for IdGenerator: thin shells over idgenerator.py and service_handlers.py.

* create/update/resume and a level-triggered timer (service_handlers.py, shared by every
  service resource): make the dedicated cluster if asked for, write the snowflake
  generator's definition through the cluster's API, refresh the status;
* delete: nothing is removed from the cluster (kopf's finalizer only stops the timer). The ids
  service keeps a generator's definition and its time high-water marks for good (it has
  no delete route, on purpose: forgetting the marks would let a re-created generator
  issue IDs again). An owned dedicated cluster goes by garbage collection, and with it
  the history (docs/operator.md).

Loaded by `python -m synod_operator` next to the ConsensusCluster handlers.
"""

from __future__ import annotations

from typing import Any

import kopf

from .admin import AdminClient
from .handlers import CLIENTS, Logger
from .idgenerator import (
    IDGENERATOR_PLURAL,
    IdGeneratorSpec,
    build_id_status,
    dedicated_cluster_manifest,
    definition_document,
    parse_idgenerator,
)
from .service_handlers import ServiceResource, register
from .spec import GROUP, VERSION

ID_RECONCILE_INTERVAL_S = 5.0


async def _write(admin: AdminClient, spec: IdGeneratorSpec) -> None:
    document = definition_document(spec)
    if document is not None:  # only snowflake generators keep a definition
        await admin.ids_define(spec.generator, document)


async def _read(admin: AdminClient, spec: IdGeneratorSpec) -> dict[str, Any] | None:
    return await admin.ids_list()


IDGENERATOR = ServiceResource(
    kind="IdGenerator",
    plural=IDGENERATOR_PLURAL,
    parse=parse_idgenerator,
    attachment=lambda spec: spec.attachment,
    cluster_manifest=dedicated_cluster_manifest,
    write=_write,
    read=_read,
    build_status=build_id_status,
    describe=lambda spec: f"{spec.mode} generator {spec.generator!r}",
    ready_reason="Ready",
    # Another definition under this name is kept by the cluster for good: retrying
    # cannot help; the status says so and the timer keeps looking.
    final_refusals={"already-exists": "DefinitionConflict"},
)
register(IDGENERATOR, ID_RECONCILE_INTERVAL_S)


@kopf.on.delete(GROUP, VERSION, IDGENERATOR_PLURAL, optional=True)
async def forget_idgenerator(name: str, uid: str, logger: Logger, **_: Any) -> None:
    """Optional (never blocks deletion): the cluster keeps the definition and its marks."""
    CLIENTS.locks.pop(uid, None)
    logger.info("IdGenerator %s deleted; the cluster keeps its definition and marks", name)
