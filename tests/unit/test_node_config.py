"""Node configuration: flags over SYNOD_* environment over a TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from synod.node.config import ConfigError, load_config, parse_initial_cluster

CLUSTER = "1=127.0.0.1:2380@http://127.0.0.1:2379,2=127.0.0.1:2480@http://127.0.0.1:2479"


def test_flags_win_over_environment_and_file(tmp_path: Path) -> None:
    config_file = tmp_path / "node.toml"
    config_file.write_text('tick_ms = 30\nsnapshot_entries = 7\ndata_dir = "/from/file"\n')
    env = {"SYNOD_TICK_MS": "40", "SYNOD_ID": "2", "SYNOD_INITIAL_CLUSTER": CLUSTER}
    config = load_config(["--config", str(config_file), "--tick-ms", "20"], env)
    assert config.tick_ms == 20  # flag
    assert config.node_id == 2  # environment
    assert config.snapshot_entries == 7 and config.data_dir == "/from/file"  # file
    assert [m.node_id for m in config.initial_members] == [1, 2]


def test_statefulset_dns_mode_and_id_from_hostname() -> None:
    env = {
        "SYNOD_ID_FROM_HOSTNAME": "true",
        "SYNOD_PEER_DNS": "demo.demo-peers.ns.svc",
        "SYNOD_INITIAL_REPLICAS": "3",
    }
    config = load_config([], env, hostname="demo-2")
    assert config.node_id == 3
    assert config.advertise_peer == "demo-2.demo-peers.ns.svc:2380"
    assert config.advertise_client == "http://demo-2.demo-peers.ns.svc:2379"
    member = config.member(5)  # A member that joined later resolves by the same pattern.
    assert member is not None and member.peer_address == "demo-4.demo-peers.ns.svc:2380"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "--id"),
        (["--id", "1"], {}, "--initial-cluster"),
        (["--id", "0", "--join"], {}, "id must be >= 1"),
        (["--id", "1", "--join", "--tick-ms", "x"], {}, "tick_ms must be an integer"),
        (["--id", "1", "--join", "--election-timeout-ms", "300"], {}, "5 x heartbeat"),
        (["--id-from-hostname", "--join"], {}, "does not end in -<ordinal>"),
        (["--id", "1", "--initial-cluster", "1=nohostport"], {}, "must look like"),
    ],
)
def test_bad_settings_are_named(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(argv, env, hostname="not-a-statefulset-pod")


def test_initial_cluster_rejects_duplicates() -> None:
    with pytest.raises(ConfigError, match="unique"):
        parse_initial_cluster(CLUSTER + ",1=127.0.0.1:1@http://127.0.0.1:2")


def test_gossip_is_off_unless_listen_gossip_is_given() -> None:
    config = load_config(["--id", "1", "--initial-cluster", "1=h:2380@http://h:2379"], {})
    assert config.listen_gossip == "" and config.advertise_gossip == ""
    assert config.gossip_join == ()


def test_gossip_local_mode_takes_seeds_from_gossip_join() -> None:
    env = {"SYNOD_LISTEN_GOSSIP": "127.0.0.1:7001", "SYNOD_GOSSIP_JOIN": "127.0.0.1:7002, a:7003"}
    config = load_config(["--id", "1", "--initial-cluster", "1=h:2380@http://h:2379"], env)
    assert config.listen_gossip == "127.0.0.1:7001"
    assert config.advertise_gossip == "127.0.0.1:7001"
    assert config.gossip_join == ("127.0.0.1:7002", "a:7003")


def test_gossip_dns_mode_seeds_are_the_other_pods_at_the_gossip_port() -> None:
    env = {
        "SYNOD_ID_FROM_HOSTNAME": "true",
        "SYNOD_PEER_DNS": "c.c-peers.ns.svc",
        "SYNOD_INITIAL_REPLICAS": "3",
        "SYNOD_LISTEN_GOSSIP": "0.0.0.0:7946",
    }
    config = load_config([], env, hostname="c-1")
    assert config.advertise_gossip == "c-1.c-peers.ns.svc:7946"
    assert config.gossip_join == ("c-0.c-peers.ns.svc:7946", "c-2.c-peers.ns.svc:7946")


def test_gossip_dns_mode_a_pod_added_by_a_scale_up_advertises_its_own_name() -> None:
    """c-3 is not one of the 3 founding pods (it joins as a learner): it crashed with
    "needs --advertise-gossip" in the kind e2e's scale 3 -> 5."""
    env = {
        "SYNOD_ID_FROM_HOSTNAME": "true",
        "SYNOD_PEER_DNS": "c.c-peers.ns.svc",
        "SYNOD_INITIAL_REPLICAS": "3",
        "SYNOD_LISTEN_GOSSIP": "0.0.0.0:7946",
        "SYNOD_JOIN": "true",
    }
    config = load_config([], env, hostname="c-3")
    assert config.advertise_gossip == "c-3.c-peers.ns.svc:7946"
    assert config.gossip_join == tuple(f"c-{i}.c-peers.ns.svc:7946" for i in range(3))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SYNOD_LISTEN_GOSSIP": "7946"}, "listen_gossip must look like HOST:PORT"),
        ({"SYNOD_LISTEN_GOSSIP": "0.0.0.0:7946"}, "needs --advertise-gossip"),
        (
            {"SYNOD_LISTEN_GOSSIP": "127.0.0.1:7946", "SYNOD_GOSSIP_JOIN": "x:0"},
            "gossip_join must look like HOST:PORT",
        ),
    ],
)
def test_bad_gossip_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(["--id", "1", "--initial-cluster", "1=h:2380@http://h:2379"], env)


def test_etcd_api_is_off_unless_listened_and_advertises_its_listen_address() -> None:
    base = ["--id", "1", "--initial-cluster", "1=127.0.0.1:2380@http://127.0.0.1:2379"]
    off = load_config(base, {})
    assert off.listen_etcd == off.advertise_etcd == ""
    on = load_config([*base, "--listen-etcd", "127.0.0.1:12379"], {})
    assert on.listen_etcd == on.advertise_etcd == "127.0.0.1:12379"
    behind = load_config(base, {"SYNOD_LISTEN_ETCD": "0.0.0.0:2379",
                                "SYNOD_ADVERTISE_ETCD": "synod-0.synod:2379"})  # fmt: skip
    assert behind.advertise_etcd == "synod-0.synod:2379"
    with pytest.raises(ConfigError, match="listen_etcd must look like HOST:PORT"):
        load_config([*base, "--listen-etcd", "2379"], {})
    with pytest.raises(ConfigError, match="advertise_etcd needs listen_etcd"):
        load_config([*base, "--advertise-etcd", "h:2379"], {})
