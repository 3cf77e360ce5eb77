"""Node configuration: flags, then `SYNOD_*` environment variables, then a TOML file.

See docs/node.md for every setting. `load_config(argv, environ)` is pure apart
from reading the optional TOML file and `socket.gethostname()`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from synod.node.guard import HostAllowList, default_host_allow
from synod.node.members import Member
from synod.raft.types import NodeId

ENV_PREFIX = "SYNOD_"
MEMBERS_MAX = 64  # Entries of --initial-cluster / --initial-replicas.
CLUSTER_ID_BYTES = 16
CLUSTER_TOKEN_BYTES_MAX = 256
_HOSTNAME_ORDINAL = re.compile(r"^(?P<name>.+)-(?P<ordinal>\d+)$")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything `synod node` needs to start."""

    node_id: NodeId
    data_dir: str
    listen_client: str
    listen_peer: str
    advertise_client: str
    advertise_peer: str
    initial_members: tuple[Member, ...] = ()
    peer_dns: str = ""  # "<statefulset>.<service>[.ns.svc]" for DNS mode
    peer_port: int = 2380
    client_port: int = 2379
    join: bool = False
    tick_ms: int = 50
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_entries: int = 100_000
    snapshot_catchup_entries: int = 5000
    request_timeout_ms: int = 5000
    log_level: str = "info"
    cluster_token: str = ""  # Names the cluster on the peer wire; "" derives it (cluster_id)
    listen_gossip: str = ""  # UDP host:port of SWIM gossip; "" turns gossip off
    advertise_gossip: str = ""  # What other members send to ("" when gossip is off)
    gossip_join: tuple[str, ...] = ()  # Seeds (host:port); DNS mode: the other pods
    listen_rls: str = ""  # host:port of the Envoy RLS v3 gRPC API; "" turns it off
    # Host header allow-list of the client API (docs/security.md); "*" allows all.
    host_allow: tuple[str, ...] = ("localhost",)
    # Client API TLS (docs/security.md): certificate and key; with tls_client_ca,
    # clients must present a certificate that CA signed. tls_ca verifies the other
    # members' client API when forwarding to the leader (default: tls_client_ca).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    tls_ca: str = ""
    # Peer mutual TLS: this member's certificate (naming the host of its peer address)
    # and key, and the CA that signed every member's.
    peer_tls_cert: str = ""
    peer_tls_key: str = ""
    peer_tls_ca: str = ""
    listen_etcd: str = ""  # host:port of etcd's v3 gRPC API (synod.etcdapi); "" turns it off
    advertise_etcd: str = ""  # What clients and other members dial ("" when it is off)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def cluster_id(self) -> bytes:
        """The id every member's peer hello carries (CLUSTER_ID_BYTES bytes).

        From `cluster_token` when one is set (the operator sets one per
        ConsensusCluster; members that join later get the same token). Without
        a token, from the initial membership (ids and peer addresses), which
        every member of a `synod dev` or `--initial-cluster` cluster shares,
        like etcd's default token. `load_config` refuses a `--join` without
        either, so this never derives an id from nothing.
        """
        if self.cluster_token:
            seed = b"synod-cluster-token\0" + self.cluster_token.encode()
        else:
            members = sorted((m.node_id, m.peer_address) for m in self.initial_members)
            seed = b"synod-initial-members\0" + repr(members).encode()
        return hashlib.sha256(seed).digest()[:CLUSTER_ID_BYTES]

    @property
    def heartbeat_interval_ticks(self) -> int:
        """Heartbeat interval in Raft ticks (at least one)."""
        return max(1, self.heartbeat_interval_ms // self.tick_ms)

    @property
    def election_timeout_ticks(self) -> int:
        """Election timeout in Raft ticks (more than the heartbeat interval)."""
        return max(self.heartbeat_interval_ticks + 1, self.election_timeout_ms // self.tick_ms)

    def member(self, node_id: NodeId) -> Member | None:
        """Address of `node_id` as configured (static list or DNS pattern)."""
        for member in self.initial_members:
            if member.node_id == node_id:
                return member
        if self.peer_dns:
            return dns_member(self.peer_dns, node_id, self.peer_port, self.client_port)
        return None


def dns_member(peer_dns: str, node_id: NodeId, peer_port: int, client_port: int) -> Member:
    """The member of a StatefulSet: id N is pod ordinal N-1 behind the headless Service."""
    assert node_id >= 1
    name, _, service = peer_dns.partition(".")
    if not name or not service:
        raise ConfigError(f"--peer-dns must look like NAME.SERVICE, got {peer_dns!r}")
    host = f"{name}-{node_id - 1}.{service}"
    return Member(node_id, f"{host}:{peer_port}", f"http://{host}:{client_port}")


def parse_initial_cluster(spec: str) -> tuple[Member, ...]:
    """Parse `id=peer_host:port@client_url,...`. Raises ConfigError with the bad part."""
    members: list[Member] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        match = re.fullmatch(r"(\d+)=([^@\s]+:\d+)@(https?://\S+)", part)
        if match is None:
            raise ConfigError(
                f"--initial-cluster entry {part!r} must look like ID=HOST:PORT@http://HOST:PORT"
            )
        members.append(Member(int(match[1]), match[2], match[3].rstrip("/")))
    if len(members) > MEMBERS_MAX:
        raise ConfigError(f"--initial-cluster has more than {MEMBERS_MAX} members")
    ids = [m.node_id for m in members]
    if len(set(ids)) != len(ids) or 0 in ids:
        raise ConfigError("--initial-cluster ids must be unique and >= 1")
    return tuple(members)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synod node", description="Run one Synod member.")
    add = parser.add_argument
    add("--config", help="TOML file with the same settings (lowest precedence)")
    add("--id")
    add("--id-from-hostname", action="store_const", const="true")
    add("--data-dir")
    add("--listen-client")
    add("--listen-peer")
    add("--advertise-client")
    add("--advertise-peer")
    add("--initial-cluster")
    add("--peer-dns")
    add("--initial-replicas")
    add("--peer-port")
    add("--client-port")
    add("--join", action="store_const", const="true")
    add("--tick-ms")
    add("--heartbeat-interval-ms")
    add("--election-timeout-ms")
    add("--snapshot-entries")
    add("--snapshot-catchup-entries")
    add("--request-timeout-ms")
    add("--log-level")
    add("--cluster-token")
    add("--listen-gossip")
    add("--advertise-gossip")
    add("--gossip-join")
    add("--listen-rls")
    add("--host-allow", help="Host names clients may use (comma-separated; *.DOMAIN; *)")
    add("--tls-cert", help="PEM certificate chain of the client API (turns on HTTPS)")
    add("--tls-key", help="PEM private key of --tls-cert")
    add("--tls-client-ca", help="PEM CA bundle: clients must present a certificate it signed")
    add("--tls-ca", help="PEM CA bundle of the members' client API, for forwarding")
    add("--peer-tls-cert", help="PEM certificate of this member (its peer host), mutual TLS")
    add("--peer-tls-key", help="PEM private key of --peer-tls-cert")
    add("--peer-tls-ca", help="PEM CA bundle that signed every member's peer certificate")
    add("--listen-etcd")
    add("--advertise-etcd")
    return parser


def _merged(argv: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """Settings by name (underscored), flags over environment over file."""
    args = _parser().parse_args(list(argv))
    settings: dict[str, str] = {}
    config_file = args.config or environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        try:
            with open(config_file, "rb") as handle:
                data = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"cannot read --config {config_file}: {error}") from None
        settings.update({key.replace("-", "_"): str(value) for key, value in data.items()})
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG":
            settings[key[len(ENV_PREFIX) :].lower()] = value
    for key, value in vars(args).items():
        if value is not None and key != "config":
            settings[key] = str(value)
    return settings


def _int(settings: dict[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = settings.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _bool(settings: dict[str, str], name: str) -> bool:
    return settings.get(name, "false").strip().lower() in ("1", "true", "yes", "on")


def load_config(
    argv: Sequence[str], environ: Mapping[str, str], hostname: str | None = None
) -> NodeConfig:
    """Build the configuration. Raises ConfigError naming the offending setting."""
    settings = _merged(argv, environ)
    node_id = _resolve_id(settings, hostname)
    listen_client = settings.get("listen_client", "127.0.0.1:2379")
    listen_peer = settings.get("listen_peer", "127.0.0.1:2380")
    peer_dns = settings.get("peer_dns", "")
    peer_port = _int(settings, "peer_port", 2380)
    client_port = _int(settings, "client_port", 2379)
    members = parse_initial_cluster(settings.get("initial_cluster", ""))
    if peer_dns and not members:
        replicas = _int(settings, "initial_replicas", 1)
        if replicas > MEMBERS_MAX:
            raise ConfigError(f"initial_replicas must be <= {MEMBERS_MAX}")
        members = tuple(
            dns_member(peer_dns, i, peer_port, client_port) for i in range(1, replicas + 1)
        )
    own = next((m for m in members if m.node_id == node_id), None)
    default_peer = own.peer_address if own and peer_dns else listen_peer
    tls = bool(settings.get("tls_cert"))
    default_client = own.client_url if own and peer_dns else f"http://{listen_client}"
    if tls:
        default_client = "https://" + default_client.split("://", 1)[1]
    config = NodeConfig(
        node_id=node_id,
        data_dir=settings.get("data_dir", "./synod-data"),
        listen_client=listen_client,
        listen_peer=listen_peer,
        advertise_client=settings.get("advertise_client", default_client).rstrip("/"),
        advertise_peer=settings.get("advertise_peer", default_peer),
        initial_members=members,
        peer_dns=peer_dns,
        peer_port=peer_port,
        client_port=client_port,
        join=_bool(settings, "join"),
        tick_ms=_int(settings, "tick_ms", 50),
        heartbeat_interval_ms=_int(settings, "heartbeat_interval_ms", 100),
        election_timeout_ms=_int(settings, "election_timeout_ms", 1000),
        snapshot_entries=_int(settings, "snapshot_entries", 100_000),
        snapshot_catchup_entries=_int(settings, "snapshot_catchup_entries", 5000, minimum=0),
        request_timeout_ms=_int(settings, "request_timeout_ms", 5000),
        log_level=settings.get("log_level", "info"),
        cluster_token=settings.get("cluster_token", ""),
        listen_rls=_rls_listen(settings),
        tls_cert=settings.get("tls_cert", ""),
        tls_key=settings.get("tls_key", ""),
        tls_client_ca=settings.get("tls_client_ca", ""),
        tls_ca=settings.get("tls_ca", settings.get("tls_client_ca", "")),
        peer_tls_cert=settings.get("peer_tls_cert", ""),
        peer_tls_key=settings.get("peer_tls_key", ""),
        peer_tls_ca=settings.get("peer_tls_ca", ""),
        listen_etcd=settings.get("listen_etcd", ""),
        advertise_etcd=settings.get("advertise_etcd", settings.get("listen_etcd", "")),
        # A pod added after the founding ones (scale up) is not an initial member, but in
        # DNS mode its address is known all the same: it must gossip under it.
        **_gossip_settings(
            settings,
            node_id,
            members,
            peer_dns,
            own or (dns_member(peer_dns, node_id, peer_port, client_port) if peer_dns else None),
        ),
    )
    config = dataclasses.replace(config, host_allow=_host_allow(settings, config))
    _validate(config)
    return config


def _rls_listen(settings: dict[str, str]) -> str:
    """listen_rls ("" when off), checked as host:port. Raises ConfigError."""
    listen = settings.get("listen_rls", "").strip()
    if listen:
        _host_port("listen_rls", listen)
    return listen


def _host_allow(settings: dict[str, str], config: NodeConfig) -> tuple[str, ...]:
    """--host-allow, or the node's own names (guard.default_host_allow). Raises
    ConfigError for a bad entry."""
    raw = settings.get("host_allow")
    if raw is None:
        urls = [config.advertise_client, "http://" + config.advertise_peer]
        entries = tuple(default_host_allow(urls, config.peer_dns))
    else:
        entries = tuple(e.strip() for e in raw.split(",") if e.strip())
    try:
        HostAllowList.parse(entries)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    assert entries or raw is not None
    return entries


def _gossip_settings(
    settings: dict[str, str],
    node_id: NodeId,
    members: tuple[Member, ...],
    peer_dns: str,
    own: Member | None,
) -> dict[str, Any]:
    """listen_gossip, advertise_gossip and gossip_join (docs/gossip.md, "In the node").

    Gossip is off unless listen_gossip is set. Seeds come from --gossip-join; in DNS
    mode without it, from every other initial member's host at the gossip port."""
    listen = settings.get("listen_gossip", "").strip()
    if not listen:
        return {}
    host, port = _host_port("listen_gossip", listen)
    join = tuple(a.strip() for a in settings.get("gossip_join", "").split(",") if a.strip())
    for address in join:
        _host_port("gossip_join", address)
    if len(join) > MEMBERS_MAX:
        raise ConfigError(f"gossip_join has more than {MEMBERS_MAX} addresses")
    if peer_dns and own is not None:
        own_host = own.peer_address.rpartition(":")[0]
        default_advertise = f"{own_host}:{port}"
        if not join:
            join = tuple(
                f"{m.peer_address.rpartition(':')[0]}:{port}"
                for m in members
                if m.node_id != node_id
            )
    else:
        default_advertise = listen if host not in ("0.0.0.0", "::", "") else ""
    advertise = settings.get("advertise_gossip", default_advertise).strip()
    if not advertise:
        raise ConfigError("listen_gossip on a wildcard address needs --advertise-gossip")
    _host_port("advertise_gossip", advertise)
    assert len(join) <= MEMBERS_MAX
    return {"listen_gossip": listen, "advertise_gossip": advertise, "gossip_join": join}


def _host_port(name: str, address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name} must look like HOST:PORT, got {address!r}")
    return host, int(port)


def _resolve_id(settings: dict[str, str], hostname: str | None) -> NodeId:
    if _bool(settings, "id_from_hostname") and "id" not in settings:
        name = hostname if hostname is not None else socket.gethostname()
        match = _HOSTNAME_ORDINAL.match(name.split(".")[0])
        if match is None:
            raise ConfigError(f"--id-from-hostname: {name!r} does not end in -<ordinal>")
        return int(match["ordinal"]) + 1
    if "id" not in settings:
        raise ConfigError("--id (or SYNOD_ID, or --id-from-hostname) is required")
    return _int(settings, "id", 0)


def _validate(config: NodeConfig) -> None:
    if config.election_timeout_ms <= 5 * config.heartbeat_interval_ms:
        raise ConfigError("election_timeout_ms must exceed 5 x heartbeat_interval_ms")
    if config.heartbeat_interval_ms < config.tick_ms:
        raise ConfigError("heartbeat_interval_ms must be at least tick_ms")
    if config.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level must be debug, info, warning or error")
    if not config.join and not config.initial_members:
        raise ConfigError("give --initial-cluster or --peer-dns (or --join to be added later)")
    if not config.cluster_token and not config.initial_members:
        raise ConfigError("--join without --initial-cluster or --peer-dns needs --cluster-token")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("tls_cert and tls_key go together")
    peer_tls = (config.peer_tls_cert, config.peer_tls_key, config.peer_tls_ca)
    if any(peer_tls) and not all(peer_tls):
        raise ConfigError("peer_tls_cert, peer_tls_key and peer_tls_ca go together")
    if config.tls_client_ca and not config.tls_cert:
        raise ConfigError("tls_client_ca needs tls_cert and tls_key (HTTPS)")
    if len(config.cluster_token.encode()) > CLUSTER_TOKEN_BYTES_MAX:
        raise ConfigError(f"cluster_token must be at most {CLUSTER_TOKEN_BYTES_MAX} bytes")
    if config.listen_etcd:
        _host_port("listen_etcd", config.listen_etcd)
        _host_port("advertise_etcd", config.advertise_etcd)
    elif config.advertise_etcd:
        raise ConfigError("advertise_etcd needs listen_etcd")
    assert config.node_id >= 1
