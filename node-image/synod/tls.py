"""TLS for the client API (docs/security.md): server and client contexts built with the
standard ssl module, and certificate files reloaded when they change.

``ReloadingServerContext`` owns one ``ssl.SSLContext``; ``reload_if_changed`` loads the
certificate chain (and client CA) again into that same context when a file's size or
modification time changed, so new connections get the new certificate while open ones
keep theirs: rotation without a restart and without refusing anyone. A file caught half
written fails to load; the old certificate then stays and the next check tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from dataclasses import dataclass

__all__ = [
    "TLS_RELOAD_INTERVAL_MS",
    "ReloadingServerContext",
    "TlsFiles",
    "client_context",
]

log = logging.getLogger("synod.tls")

TLS_RELOAD_INTERVAL_MS = 1_000  # How often certificate files are checked for changes.


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The files of a server context: certificate chain, key, optional client CA."""

    cert: str
    key: str
    client_ca: str = ""  # Set: clients must present a certificate this CA signed.

    def paths(self) -> tuple[str, ...]:
        """The files to watch. Raises nothing."""
        return tuple(p for p in (self.cert, self.key, self.client_ca) if p)


def _stamp(paths: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """(mtime_ns, size) of each path; (0, 0) for one that cannot be read now."""
    stamps = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            stamps.append((0, 0))
            continue
        stamps.append((info.st_mtime_ns, info.st_size))
    assert len(stamps) == len(paths)
    return tuple(stamps)


class ReloadingServerContext:
    """A server SSLContext whose certificate follows its files."""

    def __init__(self, files: TlsFiles) -> None:
        """Load the files. Raises OSError / ssl.SSLError if they cannot be loaded."""
        assert files.cert and files.key
        self.files = files
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.reloads = 0
        self._stamps = _stamp(files.paths())
        self._load()

    def _load(self) -> None:
        files = self.files
        self.context.load_cert_chain(files.cert, files.key)
        if files.client_ca:
            self.context.load_verify_locations(cafile=files.client_ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        assert self.context.verify_mode in (ssl.CERT_NONE, ssl.CERT_REQUIRED)

    def reload_if_changed(self) -> bool:
        """Load the files again if one changed; True if the new ones are in use.
        Raises nothing: files that do not load yet leave the old certificate in use."""
        stamps = _stamp(self.files.paths())
        if stamps == self._stamps:
            return False
        try:
            self._load()
        except (OSError, ssl.SSLError, ValueError) as error:
            log.warning("TLS files changed but do not load (yet); keeping the old: %s", error)
            return False
        self._stamps = stamps
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.files.cert)
        return True

    async def watch(self, interval_ms: int = TLS_RELOAD_INTERVAL_MS) -> None:
        """Check the files every ``interval_ms`` until cancelled. Raises CancelledError."""
        assert interval_ms >= 1
        while True:
            await asyncio.sleep(interval_ms / 1000)
            # On the loop's thread: the context is not changed under a handshake (the
            # files are a few KB; stat and load take well under a millisecond).
            with contextlib.suppress(Exception):
                self.reload_if_changed()


def client_context(ca: str = "", cert: str = "", key: str = "") -> ssl.SSLContext:
    """A client context: trusts ``ca`` (else the system's CAs) and presents ``cert``/
    ``key`` when both are given (servers asking for client certificates). Raises
    ValueError (cert without key), OSError / ssl.SSLError (unreadable files)."""
    if bool(cert) != bool(key):
        raise ValueError("a client certificate needs both cert and key")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        context.load_cert_chain(cert, key)
    assert context.check_hostname
    return context
