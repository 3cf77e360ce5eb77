"""The CLI in etcdctl / redis-cli habits (issue 16), run against the real HTTP API of a
memory cluster: global flags anywhere, stdin values, plain output in pipes, escaping,
paging, and the member/endpoint/compaction/txn/watch-exec commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from synod.cli.main import cli, prefix_end, watch_env
from synod.cli.output import (
    EXIT_COMPACTED,
    EXIT_COMPARE_FAILED,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    RICH_TABLE_ROWS_MAX,
    safe_text,
)
from synod.cli.shell import KEYS_COMPLETED_MAX, KeyCompleter
from synod.cli.txn import parse_txn
from synod.client import KV, Client, Txn, WatchEvent
from synod.client import txn as ops
from tests.unit.memory_cluster import MemoryCluster, threaded

BOX_CHARS = set("┏┃━┡│─└┘┌┐╇╈┳┻╭╮╰╯")
ESC = "\x1b"


@pytest.fixture(scope="module")
def cluster() -> Iterator[MemoryCluster]:
    with threaded(MemoryCluster()) as memory:
        yield memory


def synod(cluster: MemoryCluster, *args: str, stdin: str | bytes | None = None) -> Result:
    env = {"SYNOD_ENDPOINTS": ",".join(cluster.urls), "COLUMNS": "200"}
    return CliRunner().invoke(cli, list(args), env=env, input=stdin, catch_exceptions=False)


def bare(*args: str) -> Result:
    """No SYNOD_ENDPOINTS in the environment: the flags must do it."""
    return CliRunner().invoke(cli, list(args), env={"SYNOD_ENDPOINTS": None},
                              catch_exceptions=False)  # fmt: skip


def test_global_flags_before_and_after_the_subcommand(cluster: MemoryCluster) -> None:
    urls = ",".join(cluster.urls)
    assert bare("--endpoints", urls, "kv", "put", "g/a", "1").exit_code == 0
    before = bare("--endpoints", urls, "-o", "json", "kv", "get", "g/a")
    assert before.exit_code == 0 and json.loads(before.output)["value"] == "1"
    after = bare("kv", "get", "g/a", "--endpoints", urls, "-o", "json")
    assert after.exit_code == 0 and json.loads(after.output)["value"] == "1"
    # After wins over before; a bad endpoint before is overridden.
    both = bare("--endpoints", "127.0.0.1:1", "kv", "get", "g/a", "--endpoints", urls)
    assert both.exit_code == 0 and both.output == "1\n"
    down = bare("--endpoints", "127.0.0.1:1", "--attempts", "1", "--timeout", "0.5",
                "kv", "get", "g/a")  # fmt: skip
    assert down.exit_code == EXIT_UNAVAILABLE


def test_put_dash_reads_stdin(cluster: MemoryCluster) -> None:
    assert synod(cluster, "kv", "put", "g/stdin", "-", stdin="line 1\nline 2\n").exit_code == 0
    got = json.loads(synod(cluster, "kv", "get", "g/stdin", "-o", "json").output)
    assert got["value"] == "line 1\nline 2\n"


def test_piped_output_is_plain_and_table_is_asked_for(cluster: MemoryCluster) -> None:
    synod(cluster, "kv", "put", "p/a", "1")
    synod(cluster, "kv", "put", "p/b", "two words")
    plain = synod(cluster, "kv", "range", "p/", "--prefix")
    assert plain.output == "p/a\t1\np/b\ttwo words\n"
    assert synod(cluster, "kv", "range", "p/", "--prefix", "-o", "plain").output == plain.output
    table = synod(cluster, "kv", "range", "p/", "--prefix", "-o", "table")
    assert BOX_CHARS & set(table.output) and "2 keys" in table.output
    for args in (("status",), ("member", "list"), ("endpoint", "status")):
        piped = synod(cluster, *args)
        assert piped.exit_code == 0 and not BOX_CHARS & set(piped.output), args
        assert BOX_CHARS & set(synod(cluster, *args, "-o", "table").output), args
    # The old name of the default still works.
    assert synod(cluster, "kv", "range", "p/", "--prefix", "-o", "text").output == plain.output


def test_keys_only_has_no_value_column(cluster: MemoryCluster) -> None:
    synod(cluster, "kv", "put", "k/a", "1")
    assert synod(cluster, "kv", "range", "k/", "--prefix", "--keys-only").output == "k/a\n"
    table = synod(cluster, "kv", "range", "k/", "--prefix", "--keys-only", "-o", "table")
    assert "KEY" in table.output and "VALUE" not in table.output


def test_control_characters_are_escaped(cluster: MemoryCluster) -> None:
    hostile = f"{ESC}]0;pwned\a{ESC}[31mred{ESC}[0m\nsecond line\ttab"
    with Client(cluster.urls) as client:
        put = client.put("e/hostile", hostile)
    for args in (("kv", "get", "e/hostile", "-o", "table"),
                 ("kv", "range", "e/", "--prefix"),
                 ("kv", "range", "e/", "--prefix", "-o", "table"),
                 ("kv", "put", "e/hostile", "x", "--prev-kv", "-o", "table"),
                 ("kv", "watch", "e/hostile", "--revision", str(put.revision), "--count", "1"),
                 ("kv", "watch", "e/hostile", "--rev", str(put.revision), "--count", "1",
                  "-o", "table")):  # fmt: skip
        shown = synod(cluster, *args)
        assert shown.exit_code == 0, (args, shown.output)
        assert ESC not in shown.output and "\a" not in shown.output, args
        assert "\\x1b[31mred" in shown.output, args
    # One row per key in plain output, whatever the value holds.
    assert synod(cluster, "kv", "range", "e/", "--prefix").output.count("\n") == 1
    # In a pipe `kv get` writes the value as stored, for scripts (redis-cli --raw).
    raw = synod(cluster, "kv", "get", "e/hostile", "--revision", str(put.revision))
    assert raw.output == hostile + "\n"
    assert safe_text("a\x9bb\x7f") == "a\\x9bb\\x7f"


def test_range_from_key_limit_and_pages(cluster: MemoryCluster) -> None:
    with Client(cluster.urls) as client:
        for index in range(7):
            client.put(f"r/{index}", str(index))
    keys = synod(cluster, "kv", "range", "r/2", "--from-key", "--keys-only").output.split()
    assert keys[:5] == ["r/2", "r/3", "r/4", "r/5", "r/6"]
    limited = synod(cluster, "kv", "range", "r/", "--prefix", "--limit", "3", "--keys-only")
    assert limited.output.split()[:3] == ["r/0", "r/1", "r/2"] and "more" in limited.output
    paged = synod(cluster, "kv", "range", "r/", "--prefix", "--page-size", "2", "-o", "json")
    doc = json.loads(paged.output)
    assert [k["key"] for k in doc["kvs"]] == [f"r/{i}" for i in range(7)]
    assert (doc["count"], doc["more"]) == (7, False)
    every = synod(cluster, "kv", "range", "--from-key", "--keys-only", "--page-size", "3")
    assert {"r/0", "r/6", "p/a"} <= set(every.output.split())
    assert synod(cluster, "kv", "range", "", "--prefix", "--keys-only").output == every.output
    assert synod(cluster, "kv", "range").exit_code == EXIT_USAGE
    assert synod(cluster, "kv", "range", "a", "b", "--prefix").exit_code == EXIT_USAGE
    assert prefix_end("r/") == "r0" and prefix_end("") == "\x00"


def test_help_has_examples_and_the_exit_codes_once() -> None:
    top = CliRunner().invoke(cli, ["--help"])
    assert "Exit codes:" in top.output and "8  outcome unknown" in top.output
    assert "_SYNOD_COMPLETE=bash_source" in top.output
    for args in (["kv", "get", "--help"], ["kv", "put", "--help"], ["kv", "range", "--help"],
                 ["kv", "watch", "--help"], ["txn", "--help"]):  # fmt: skip
        shown = CliRunner().invoke(cli, args).output
        assert "Examples:" in shown and "outcome unknown" not in shown, args
    assert "see `synod --help`" in CliRunner().invoke(cli, ["kv", "--help"]).output
    assert "--rev" in CliRunner().invoke(cli, ["kv", "watch", "--help"]).output


def test_member_list_and_add(cluster: MemoryCluster) -> None:
    listed = json.loads(synod(cluster, "member", "list", "-o", "json").output)
    assert listed["leader_id"] == 1 and [m["id"] for m in listed["members"]] == [1, 2, 3]
    rows = synod(cluster, "member", "list").output.splitlines()
    assert rows[0].split("\t")[:2] == ["1", "leader"] and len(rows) == 3
    added = synod(cluster, "member", "add", "5", "127.0.0.1:9")
    assert added.exit_code == 0 and "synod member promote 5" in added.output
    assert "5\tlearner\t127.0.0.1:9" in synod(cluster, "member", "list").output
    assert synod(cluster, "member", "remove", "5").exit_code == 0


def test_endpoint_health_and_status(cluster: MemoryCluster) -> None:
    health = json.loads(synod(cluster, "endpoint", "health", "--cluster", "-o", "json").output)
    assert [h["health"] for h in health] == [True] * 3
    status = synod(cluster, "endpoint", "status", "-o", "json")
    assert {s["status"]["member_id"] for s in json.loads(status.output)} == {1, 2, 3}
    urls = ",".join([*cluster.urls, "127.0.0.1:1"])
    sick = synod(cluster, "endpoint", "health", "--endpoints", urls, "--timeout", "0.5")
    assert sick.exit_code == EXIT_UNAVAILABLE and "unhealthy" in sick.output
    assert synod(cluster, "endpoint", "status", "--endpoints", urls,
                 "--timeout", "0.5").exit_code == EXIT_UNAVAILABLE  # fmt: skip


def test_compaction(cluster: MemoryCluster) -> None:
    with Client(cluster.urls) as client:
        old = client.put("c/k", "1").revision
        client.put("c/k", "2")
        now = client.put("c/k", "3").revision
    done = synod(cluster, "compaction", str(now))
    assert done.exit_code == 0 and f"revision {now}" in done.output
    gone = synod(cluster, "kv", "get", "c/k", "--revision", str(old))
    assert gone.exit_code == EXIT_COMPACTED


TXN_TEXT = """value("t/k") = "v1"

put t/k v2
get t/k

put t/k "from failure"
"""


def test_txn_from_file_and_stdin(cluster: MemoryCluster, tmp_path: Path) -> None:
    synod(cluster, "kv", "put", "t/k", "v1")
    path = tmp_path / "txn.txt"
    path.write_text(TXN_TEXT)
    ran = synod(cluster, "txn", "-f", str(path))
    assert ran.exit_code == 0 and ran.output == "SUCCESS\nOK\n\nt/k\tv2\n"
    failed = synod(cluster, "txn", stdin=TXN_TEXT)  # now t/k is v2: the failure ops run
    assert failed.exit_code == EXIT_COMPARE_FAILED and failed.output.startswith("FAILURE\nOK")
    assert synod(cluster, "kv", "get", "t/k").output == "from failure\n"
    as_json = json.loads(synod(cluster, "txn", "-o", "json", stdin="\nget t/k\n").output)
    assert as_json["succeeded"] and as_json["responses"][0]["range"]["count"] == 1
    bad = synod(cluster, "txn", stdin='valu("t/k") = "x"\n')
    assert bad.exit_code == EXIT_USAGE and "not a compare" in bad.output
    parsed = parse_txn('mod("a") > "3"\nversion("b") = "0"\n\ndel a --prefix\n\n').to_json()
    assert [c["target"] for c in parsed["compare"]] == ["mod_revision", "version"]
    assert parsed["success"] == [{"delete": {"key": "a", "prefix": True}}]
    with pytest.raises(ValueError, match="integer"):
        parse_txn('version("a") = "x"\n')


def test_watch_runs_a_command_per_event(cluster: MemoryCluster, tmp_path: Path) -> None:
    with Client(cluster.urls) as client:
        first = client.put("w/a", "1").revision
        client.put("w/a", "2")
        client.delete("w/a")
    out = tmp_path / "events.txt"
    script = (
        "import os, sys\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    e = os.environ\n"
        "    f.write(f\"{e['SYNOD_WATCH_EVENT_TYPE']} {e['SYNOD_WATCH_KEY']} "
        "{e.get('SYNOD_WATCH_VALUE')} {e['SYNOD_WATCH_REVISION']}\\n\")\n"
    )
    result = synod(cluster, "kv", "watch", "w/a", "--revision", str(first), "--count", "3",
                   "--", sys.executable, "-c", script)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines() == [
        f"PUT w/a 1 {first}",
        f"PUT w/a 2 {first + 1}",
        f"DELETE w/a  {first + 2}",
    ]
    failing = synod(cluster, "kv", "watch", "w/a", "--revision", str(first), "--count", "1",
                    "--", sys.executable, "-c", "raise SystemExit(3)")  # fmt: skip
    assert failing.exit_code == 0 and "exited with 3" in failing.output


def test_watch_env_carries_nul_as_base64() -> None:
    event = WatchEvent("put", KV("k", "a\x00b", mod_revision=4), KV("k", "old"))
    env = watch_env(event)
    assert env["SYNOD_WATCH_VALUE_BASE64"] == "YQBi" and "SYNOD_WATCH_VALUE" not in env
    assert env["SYNOD_WATCH_PREV_VALUE"] == "old" and env["SYNOD_WATCH_REVISION"] == "4"


def test_large_tables_are_drawn_without_rich(cluster: MemoryCluster) -> None:
    rows_count = RICH_TABLE_ROWS_MAX + 1
    with Client(cluster.urls) as client:
        for first in range(0, rows_count, 100):  # ops_per_txn_max is 128
            last = min(first + 100, rows_count)
            client.txn(Txn().then(*(ops.put(f"big/{i:04d}", f"v{ESC}{i}")
                                    for i in range(first, last))))  # fmt: skip
    table = synod(cluster, "kv", "range", "big/", "--prefix", "-o", "table")
    lines = table.output.splitlines()
    assert lines[0].startswith("┌") and "│ KEY " in lines[1] and ESC not in table.output
    assert len(lines) == rows_count + 5 and lines[-1] == f"{rows_count} keys"
    assert lines[3] == "│ big/0000 │ v\\x1b0   │ 1       │ " + lines[3].split("│ 1       │ ")[1]


def test_lease_list(cluster: MemoryCluster) -> None:
    with Client(cluster.urls) as client:
        granted = [client.lease_grant(ttl_ms).id for ttl_ms in (5_000, 7_000)]
        listed = client.lease_list()
        assert {info.id for info in listed.leases} >= set(granted) and not listed.more
        assert {info.granted_ttl_ms for info in listed.leases if info.id in granted} == {
            5_000, 7_000
        }  # fmt: skip
        one = client.lease_list(1)
        assert len(one.leases) == 1 and one.more and one.count == listed.count
    doc = json.loads(synod(cluster, "lease", "list", "-o", "json").output)
    assert {lease["id"] for lease in doc["leases"]} >= set(granted)
    plain = synod(cluster, "lease", "list").output.splitlines()
    assert f"{granted[1]}\t7s\t7s" in plain
    limited = synod(cluster, "lease", "list", "--limit", "1")
    assert len(limited.output.splitlines()) == 2 and "more than shown" in limited.output
    with Client(cluster.urls) as client:
        for lease_id in granted:
            client.lease_revoke(lease_id)


def test_snapshot_save_without_snapshot_and_status_of_garbage(
    cluster: MemoryCluster, tmp_path: Path
) -> None:
    none = synod(cluster, "snapshot", "save", str(tmp_path / "s.snap"))
    assert none.exit_code == EXIT_NOT_FOUND and "holds no snapshot" in none.output
    assert not (tmp_path / "s.snap").exists()
    garbage = tmp_path / "garbage.snap"
    garbage.write_bytes(b"SYNODSNP\x01 not really")
    shown = synod(cluster, "snapshot", "status", str(garbage))
    assert shown.exit_code == EXIT_USAGE and "not a valid Synod snapshot" in shown.output
    assert "index" in synod(cluster, "snapshot", "-o", "json").output  # still takes one


def test_shell_runs_commands_and_completes_keys(cluster: MemoryCluster) -> None:
    lines = (
        "kv put sh/a 1\nkv get sh/a\n\nkv get 'unbalanced\nbogus\nkv get sh/none\nexit\nstatus\n"
    )
    ran = synod(cluster, "shell", stdin=lines)
    assert ran.exit_code == 1, ran.output  # some lines failed
    assert "OK (revision" in ran.output and "\n1\n" in ran.output
    assert "No closing quotation" in ran.output and "No such command 'bogus'" in ran.output
    assert "(exit 3)" in ran.output and "leader" not in ran.output  # stopped at exit
    fine = synod(cluster, "shell", stdin="kv get sh/a -o json\n")
    assert fine.exit_code == 0 and json.loads(fine.output)["value"] == "1"
    with Client(cluster.urls) as client:
        completer = KeyCompleter(cli, client)
        assert completer.candidates(["kv"], "g") == ["get"]
        assert "status" in completer.candidates([], "st")
        assert completer.candidates(["kv", "get"], "sh/") == ["sh/a"]
        first = completer.candidates(["kv", "get"], "")  # the first keys of all
        assert first == sorted(first) and 1 <= len(first) <= KEYS_COMPLETED_MAX
        assert completer.candidates(["kv", "get", "sh/a"], "") == []
