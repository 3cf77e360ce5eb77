"""The cluster id of the peer hello: derivation, configuration and the operator's
token (issue 8, defect 1)."""

from __future__ import annotations

import pytest

from synod.node.config import CLUSTER_ID_BYTES, ConfigError, load_config
from synod_operator.builders import Owner, build_stateful_set, config_data
from synod_operator.spec import parse_spec

MEMBERS = "1=127.0.0.1:2380@http://127.0.0.1:2379,2=127.0.0.1:2480@http://127.0.0.1:2479"
OTHER_MEMBERS = "1=127.0.0.1:3380@http://127.0.0.1:3379,2=127.0.0.1:3480@http://127.0.0.1:3479"


def cluster_id(*argv: str) -> bytes:
    return load_config(["--id", "1", *argv], {}).cluster_id


def test_members_of_one_initial_cluster_share_its_id() -> None:
    founding = load_config(["--id", "1", "--initial-cluster", MEMBERS], {})
    other = load_config(["--id", "2", "--initial-cluster", MEMBERS], {})
    joiner = load_config(["--id", "3", "--initial-cluster", MEMBERS, "--join"], {})
    assert len(founding.cluster_id) == CLUSTER_ID_BYTES
    assert founding.cluster_id == other.cluster_id == joiner.cluster_id
    assert cluster_id("--initial-cluster", OTHER_MEMBERS) != founding.cluster_id


def test_a_token_names_the_cluster_whatever_the_members() -> None:
    by_token = cluster_id("--initial-cluster", MEMBERS, "--cluster-token", "ns/demo/uid-1")
    assert by_token == cluster_id(
        "--initial-cluster", OTHER_MEMBERS, "--cluster-token", "ns/demo/uid-1"
    )
    assert (
        by_token
        == load_config(["--id", "4", "--join"], {"SYNOD_CLUSTER_TOKEN": "ns/demo/uid-1"}).cluster_id
    )
    assert by_token != cluster_id("--initial-cluster", MEMBERS, "--cluster-token", "ns/demo/uid-2")
    assert by_token != cluster_id("--initial-cluster", MEMBERS)


def test_join_without_members_or_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs --cluster-token"):
        load_config(["--id", "4", "--join"], {})
    with pytest.raises(ConfigError, match="cluster_token must be at most"):
        load_config(["--id", "1", "--initial-cluster", MEMBERS, "--cluster-token", "x" * 300], {})


def test_operator_gives_every_member_the_clusters_token() -> None:
    spec = parse_spec("demo", "team-a", {})
    owner = Owner("demo", "uid-1")
    stateful_set = build_stateful_set(spec, owner, 3, config_data(spec, 3, False))
    env = stateful_set["spec"]["template"]["spec"]["containers"][0]["env"]
    tokens = [item["value"] for item in env if item["name"] == "SYNOD_CLUSTER_TOKEN"]
    assert tokens == ["team-a/demo/uid-1"]
