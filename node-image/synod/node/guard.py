"""Defences of the HTTP API against callers it never meant to serve (docs/security.md).

* ``HostAllowList``: the ``Host`` header must name this node (or be an IP literal), as
  etcd's ``--host-whitelist``: a web page on another origin that rebinds its DNS name to
  127.0.0.1 sends its own name as ``Host`` and is refused (``host-not-allowed``).
* ``require_json``: a body must be declared ``application/json``; the types a browser
  may send without a preflight (``text/plain``, forms) are refused
  (``unsupported-media-type``), so no page can write keys or change membership.
* ``AdminBucket``: a token bucket bounding the admin calls (membership, leadership
  transfer, snapshots, limits) one node serves (``limit-exceeded`` naming
  ``admin_calls_burst_max``).

This is the I/O shell: the bucket reads a monotonic clock passed in as a function.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from synod.node.problems import Problem
from synod.services.commands import INT64_MAX

__all__ = [
    "ADMIN_PATH_PREFIX",
    "JSON_CONTENT_TYPE",
    "OPEN_PATHS",
    "AdminBucket",
    "HostAllowList",
    "default_host_allow",
    "host_name",
    "lease_id_pick",
    "require_json",
]

JSON_CONTENT_TYPE = "application/json"
ADMIN_PATH_PREFIX = "/v1/admin/"
# Probes reach a pod by its IP, but they stay open whatever the Host says.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
HOST_ALLOW_ENTRIES_MAX = 256
HOST_CHARS_MAX = 255
LOCAL_NAMES = ("localhost",)
CLUSTER_DOMAIN = "cluster.local"


def host_name(host_header: str) -> str:
    """The host of a ``Host`` header, lower-cased, without port, brackets or the final
    dot (``[::1]:2379`` -> ``::1``). Raises nothing: an unparsable header yields itself
    (which then matches nothing but ``*``)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        host = name
    assert len(host) <= len(host_header.strip())
    return host.rstrip(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class HostAllowList:
    """Names a request's ``Host`` may carry. Entries: exact names, ``*.domain`` (any
    name under domain) or ``*`` (all). IP literals are always allowed: DNS rebinding
    needs a name, and probes and Services reach pods by IP."""

    names: frozenset[str]
    suffixes: tuple[str, ...] = ()  # ".domain" for each "*.domain"
    allow_all: bool = False

    @classmethod
    def parse(cls, entries: Iterable[str]) -> HostAllowList:
        """Build one from entries. Raises ValueError naming a bad entry or the bound."""
        names: set[str] = set()
        suffixes: list[str] = []
        allow_all = False
        for count, raw in enumerate(entries):
            if count >= HOST_ALLOW_ENTRIES_MAX:
                raise ValueError(f"host_allow has more than {HOST_ALLOW_ENTRIES_MAX} entries")
            entry = raw.strip().lower()
            if entry == "*":
                allow_all = True
            elif entry.startswith("*."):
                entry = entry.rstrip(".")
                if len(entry) < 3 or "*" in entry[2:]:
                    raise ValueError(f"host_allow entry {raw!r} is not *.DOMAIN")
                suffixes.append(entry[1:])
            elif entry.rstrip(".") and "*" not in entry and len(entry) <= HOST_CHARS_MAX:
                names.add(host_name(entry) if not _is_ip(entry) else entry)
            else:
                raise ValueError(f"host_allow entry {raw!r} is not a host name, *.DOMAIN or *")
        assert len(names) + len(suffixes) <= HOST_ALLOW_ENTRIES_MAX
        return cls(frozenset(names), tuple(suffixes), allow_all)

    def allows(self, host_header: str | None) -> bool:
        """Whether a request with this ``Host`` header is served. A request without one
        (HTTP/1.0) names no host a page could have rebound: allowed. Raises nothing."""
        if self.allow_all or host_header is None:
            return True
        host = host_name(host_header)
        if host in self.names or _is_ip(host):
            return True
        return any(host.endswith(suffix) and len(host) > len(suffix) for suffix in self.suffixes)

    def check(self, path: str, host_header: str | None) -> None:
        """Raise Problem host-not-allowed unless the request may be served."""
        if path in OPEN_PATHS or self.allows(host_header):
            return
        raise Problem(
            "host-not-allowed",
            f"Host {host_header!r} is not in this node's allow-list (--host-allow)",
            host=host_header,
        )


def default_host_allow(advertised_urls: Iterable[str], peer_dns: str = "") -> list[str]:
    """The allow-list when ``--host-allow`` is not given: localhost, the hosts of the
    node's advertised URLs and, in DNS mode (``--peer-dns NAME.HEADLESS.NS.svc``), the
    members under the headless Service and the client Service ``NAME`` by every name
    Kubernetes DNS resolves for it. Raises nothing."""
    entries = [*LOCAL_NAMES]
    for url in advertised_urls:
        host = url.split("://", 1)[-1].split("/", 1)[0]
        if host:
            entries.append(host_name(host))
    if peer_dns:
        name, _, headless = peer_dns.partition(".")
        headless = headless.removesuffix("." + CLUSTER_DOMAIN)
        entries += [f"*.{headless}", f"*.{headless}.{CLUSTER_DOMAIN}"]
        parts = headless.split(".")
        if len(parts) >= 2:  # HEADLESS.NS[.svc]: the client Service NAME in NS.
            namespace = parts[1]
            entries += [name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
                        f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"]  # fmt: skip
    assert entries
    return list(dict.fromkeys(entries))  # once each, in order


def lease_id_pick() -> int:
    """A random lease id in [1, INT64_MAX] for a grant this node proposes: 63 unguessable
    bits, so no client can guess (and revoke) another's lease. Only a leader's proposal
    reaches the log, which carries the pick to every replica. Raises nothing."""
    pick = secrets.randbelow(INT64_MAX) + 1
    assert 1 <= pick <= INT64_MAX
    return pick


def require_json(content_type: str | None) -> None:
    """Raise Problem unsupported-media-type unless the body is declared JSON
    (``application/json``, parameters such as ``charset`` allowed)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == JSON_CONTENT_TYPE:
        return
    raise Problem(
        "unsupported-media-type",
        f"send the body as Content-Type: {JSON_CONTENT_TYPE} (got {content_type or 'none'!r})",
        content_type=content_type or "",
    )


class AdminBucket:
    """A token bucket: ``burst_max`` admin calls at once, one more every
    ``interval_ms_min``. ``clock_ms`` is a monotonic clock in milliseconds."""

    def __init__(self, burst_max: int, interval_ms_min: int, clock_ms: Callable[[], float]):
        """Raises nothing; the bounds were checked by HttpLimits."""
        assert burst_max >= 1 and interval_ms_min >= 1
        self.burst_max = burst_max
        self.interval_ms_min = interval_ms_min
        self._clock_ms = clock_ms
        self._tokens = float(burst_max)
        self._updated_ms = clock_ms()

    def take(self) -> None:
        """Spend one token. Raises Problem limit-exceeded (nothing done) when empty."""
        now_ms = self._clock_ms()
        elapsed_ms = max(0.0, now_ms - self._updated_ms)
        self._tokens = min(float(self.burst_max), self._tokens + elapsed_ms / self.interval_ms_min)
        self._updated_ms = now_ms
        if self._tokens < 1.0:
            retry_ms = int((1.0 - self._tokens) * self.interval_ms_min) + 1
            raise Problem(
                "limit-exceeded",
                f"admin_calls_burst_max={self.burst_max} admin calls, one more every "
                f"{self.interval_ms_min} ms (admin_call_interval_ms_min); retry in {retry_ms} ms",
                limit="admin_calls_burst_max",
                max=self.burst_max,
                retry_after_ms=retry_ms,
            )
        self._tokens -= 1.0
        assert 0.0 <= self._tokens <= self.burst_max

    def refund(self) -> None:
        """Give back the token of a call that changed nothing (refused, a no-op): a
        client polling ``promote`` until a learner has caught up spends nothing.
        Raises nothing."""
        self._tokens = min(float(self.burst_max), self._tokens + 1.0)
        assert self._tokens <= self.burst_max
