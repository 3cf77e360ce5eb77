"""Keeping a lease alive from a background task."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from synod.client.errors import LeaseExpired, NotFound, SynodError

if TYPE_CHECKING:
    from synod.client.aio import AsyncClient

__all__ = ["LeaseKeepAlive"]

# Renew three times per TTL: one lost renewal still leaves two chances before expiry.
RENEWALS_PER_TTL = 3


class LeaseKeepAlive:
    """Renews a lease every ttl/3 until stopped, revoked or expired.

    Once the lease is gone (the cluster answers not-found, or no renewal succeeded for a
    whole TTL) the keeper stops and ``error`` holds a LeaseExpired; `check()` raises it
    and `wait()` returns it, so the holder learns that its keys are gone.
    """

    def __init__(self, client: AsyncClient, lease_id: int, ttl_ms: int) -> None:
        """Prepare (call `start()` from a running loop). Raises ValueError on ttl_ms <= 0."""
        if ttl_ms <= 0:
            raise ValueError("ttl_ms must be positive")
        self.client = client
        self.id = lease_id
        self.ttl_ms = ttl_ms
        self.renewals = 0
        self.error: SynodError | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_renewed_s = time.monotonic()

    @property
    def alive(self) -> bool:
        """True while the keeper runs and the lease is believed alive. Raises nothing."""
        return self._task is not None and not self._task.done() and self.error is None

    def __repr__(self) -> str:
        """`<LeaseKeepAlive id=7587 ttl=10s alive renewals=3>`. Raises nothing."""
        state = "alive" if self.alive else f"stopped ({self.error or 'by the holder'})"
        return (f"<LeaseKeepAlive id={self.id} ttl={self.ttl_ms / 1000:g}s {state} "
                f"renewals={self.renewals}>")  # fmt: skip

    def start(self) -> None:
        """Start renewing in a task of the running loop. Raises RuntimeError without one."""
        if self._task is None:
            self._last_renewed_s = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def check(self) -> None:
        """Raise LeaseExpired (or the error that stopped the keeper) if the lease is gone."""
        if self.error is not None:
            raise self.error

    async def wait(self) -> SynodError | None:
        """Wait until the keeper stops; returns why (None when stopped by `stop()`).

        Raises CancelledError only when the waiting itself is cancelled."""
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task})
        return self.error

    async def stop(self, *, revoke: bool = False) -> None:
        """Stop renewing, and revoke the lease (deleting its keys) when ``revoke``.

        Raises nothing: a failed revoke leaves the lease to expire by its TTL."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if revoke and self.error is None:
            with contextlib.suppress(SynodError):
                await self.client.lease_revoke(self.id)
            self.error = LeaseExpired(f"lease {self.id} was revoked", {"id": self.id})

    async def _run(self) -> None:
        """Renew until the lease is gone. Raises nothing (errors go to ``error``)."""
        interval_s = self.ttl_ms / 1000 / RENEWALS_PER_TTL
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.ttl_ms = await self.client.lease_keepalive(self.id) or self.ttl_ms
            except NotFound as exc:
                self.error = LeaseExpired(f"lease {self.id} expired or was revoked", exc.problem)
                return
            except SynodError as exc:
                # The client already retried; only a whole TTL without renewal is fatal.
                if time.monotonic() - self._last_renewed_s >= self.ttl_ms / 1000:
                    detail = f"lease {self.id} not renewed for its whole TTL: {exc.detail}"
                    self.error = LeaseExpired(detail, exc.problem)
                    return
                continue
            self.renewals += 1
            self._last_renewed_s = time.monotonic()
