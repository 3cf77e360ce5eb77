"""Members, their states, metadata, and the membership events the core emits."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

NAME_BYTES_MAX = 128
ADDRESS_BYTES_MAX = 256
CLIENT_URL_BYTES_MAX = 512
ZONE_BYTES_MAX = 64
SERVICES_MAX = 16
SERVICE_BYTES_MAX = 64
INCARNATION_MAX = 2**53 - 1  # Exact in JSON; a member refutes at most a few times a second.


class MemberState(enum.IntEnum):
    """memberlist's NodeStateType (the values are on the wire)."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass(frozen=True, slots=True)
class Meta:
    """What a member tells the cluster about itself (memberlist's Node.Meta)."""

    client_url: str = ""
    zone: str = ""
    services: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Raises ValueError when a field is over its bound."""
        if len(self.client_url.encode()) > CLIENT_URL_BYTES_MAX:
            raise ValueError(f"client_url longer than {CLIENT_URL_BYTES_MAX} bytes")
        if len(self.zone.encode()) > ZONE_BYTES_MAX:
            raise ValueError(f"zone longer than {ZONE_BYTES_MAX} bytes")
        if len(self.services) > SERVICES_MAX:
            raise ValueError(f"more than {SERVICES_MAX} services")
        for service in self.services:
            if not service or len(service.encode()) > SERVICE_BYTES_MAX:
                raise ValueError(f"a service name must be 1..{SERVICE_BYTES_MAX} bytes")


@dataclass(slots=True)
class Member:
    """One member as the local member sees it."""

    name: str
    address: str
    incarnation: int
    state: MemberState
    meta: Meta
    state_changed_ms: int

    def __post_init__(self) -> None:
        """Raises ValueError on an out-of-bounds identity."""
        check_name(self.name)
        if not self.address or len(self.address.encode()) > ADDRESS_BYTES_MAX:
            raise ValueError(f"address must be 1..{ADDRESS_BYTES_MAX} bytes")
        if not 0 <= self.incarnation <= INCARNATION_MAX:
            raise ValueError("incarnation out of range")


def check_name(name: str) -> None:
    """Raises ValueError unless `name` is 1..NAME_BYTES_MAX bytes."""
    if not name or len(name.encode()) > NAME_BYTES_MAX:
        raise ValueError(f"member name must be 1..{NAME_BYTES_MAX} bytes")


class EventKind(enum.StrEnum):
    """What changed about a member, as seen locally."""

    JOINED = "joined"  # first heard of, alive
    UPDATED = "updated"  # alive with a new incarnation (new metadata or address)
    SUSPECTED = "suspected"  # we (or someone we heard from) suspect it
    CONFIRMED = "confirmed"  # an independent member also suspects it (Lifeguard)
    REFUTED = "refuted"  # it was suspect and answered with a higher incarnation
    DEAD = "dead"  # declared dead (suspicion timed out here, or heard of it)
    LEFT = "left"  # left voluntarily
    SELF_REFUTED = "self_refuted"  # we were suspected or declared dead and refuted it


@dataclass(frozen=True, slots=True)
class MembershipEvent:
    """One membership change with its provenance (who suspected, who confirmed)."""

    kind: EventKind
    name: str
    incarnation: int
    at_ms: int
    # The member whose message started this change (the suspecter, the declarer); for
    # a suspicion timing out locally it is the local member.
    source: str = ""
    # Members that independently confirmed the suspicion before this event (Lifeguard).
    confirmed_by: tuple[str, ...] = field(default_factory=tuple)
    # The first suspecter, carried on to the DEAD event of the same suspicion.
    suspected_by: str = ""
