"""`synod txn`: etcdctl's transaction text (compares, blank line, success ops, blank line,
failure ops) parsed into a :class:`~synod.client.txn.Txn`."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable

import click

from synod.cli.output import safe_text
from synod.client import txn as ops
from synod.client.types import KV, TxnResult

__all__ = [
    "TXN_GRAMMAR",
    "parse_compare",
    "parse_op",
    "parse_txn",
    "read_txn_interactive",
    "txn_response_lines",
]

# A transaction is bounded by the cluster (ops_per_txn_max, compares_per_txn_max); this
# only stops a runaway input before it is parsed.
TXN_LINES_MAX = 4096

TXN_GRAMMAR = """\
Transaction text (etcdctl's): compares, a blank line, success ops, a blank line,
failure ops. One per line:
  value("KEY") = "VALUE"     (also !=, <, >)
  version("KEY") = "0"       (also create, mod, lease: an integer)
  put KEY VALUE [--lease=ID]
  get KEY [--prefix]
  del KEY [--prefix]"""

_COMPARE_RE = re.compile(
    r"^\s*(value|version|create|mod|lease)\(\s*(\"(?:[^\"\\]|\\.)*\")\s*\)\s*(=|!=|<|>)\s*(.+?)\s*$"
)
_TARGETS: dict[str, Callable[[str], ops.CompareTarget]] = {
    "value": ops.value,
    "version": ops.version,
    "create": ops.create_revision,
    "mod": ops.mod_revision,
    "lease": ops.lease,
}
_RESULTS = {"=": "eq", "!=": "ne", "<": "lt", ">": "gt"}


def _unquote(text: str) -> str:
    """A shell-quoted word. Raises ValueError on an unbalanced quote or extra words."""
    words = shlex.split(text)
    if len(words) != 1:
        raise ValueError(f"expected one quoted string, got {text!r}")
    return words[0]


def parse_compare(line: str) -> ops.Compare:
    """One compare line. Raises ValueError."""
    match = _COMPARE_RE.match(line)
    if not match:
        raise ValueError(f'not a compare: {line!r} (e.g. value("k") = "v")')
    target, key, result, operand = match.groups()
    text = _unquote(operand)
    built = _TARGETS[target](_unquote(key))
    if target == "value":
        return getattr(built, _RESULTS[result])(text)  # type: ignore[no-any-return]
    if not text.isdigit():
        raise ValueError(f"{target} compares an integer, got {text!r}")
    return getattr(built, _RESULTS[result])(int(text))  # type: ignore[no-any-return]


def parse_op(line: str) -> dict[str, object]:
    """One `put`/`get`/`del` line. Raises ValueError."""
    words = shlex.split(line)
    if not words:
        raise ValueError("empty op")
    verb, args = words[0].lower(), words[1:]
    flags = {arg for arg in args if arg.startswith("--")}
    plain = [arg for arg in args if not arg.startswith("--")]
    lease = 0
    for flag in list(flags):
        if flag.startswith("--lease="):
            lease = int(flag.removeprefix("--lease="))
            flags.discard(flag)
    prefix = "--prefix" in flags
    flags.discard("--prefix")
    if flags:
        raise ValueError(f"unknown flags {sorted(flags)} in {line!r}")
    if verb == "put" and len(plain) == 2 and not prefix:
        return ops.put(plain[0], plain[1], lease=lease)
    if verb == "get" and len(plain) == 1 and not lease:
        return ops.range_(plain[0], prefix=prefix)
    if verb in ("del", "delete") and len(plain) == 1 and not lease:
        return ops.delete(plain[0], prefix=prefix)
    raise ValueError(f"not an op: {line!r} (put KEY VALUE, get KEY, del KEY)")


def parse_txn(text: str) -> ops.Txn:
    """The three blank-line-separated parts of etcdctl's txn text. Raises ValueError."""
    lines = text.splitlines()
    if len(lines) > TXN_LINES_MAX:
        raise ValueError(f"more than {TXN_LINES_MAX} lines")
    parts: list[list[str]] = [[], [], []]
    part = 0  # a blank line ends a part (a leading one: no compares)
    for line in lines:
        if not line.strip():
            part += 1
        elif part > 2:
            raise ValueError("expected three parts: compares, success ops, failure ops")
        else:
            parts[part].append(line)
    result = ops.Txn()
    result.when(*(parse_compare(line) for line in parts[0]))
    result.then(*(parse_op(line) for line in parts[1]))
    result.otherwise(*(parse_op(line) for line in parts[2]))
    assert len(result.compares) == len(parts[0])
    return result


def read_txn_interactive() -> str:
    """Prompt for the three parts as etcdctl does (a blank line ends each). Raises
    EOFError, KeyboardInterrupt."""
    sections = []
    for title in ("compares:", "success requests (get, put, del):",
                  "failure requests (get, put, del):"):  # fmt: skip
        click.echo(title, err=True)
        lines = []
        for _ in range(TXN_LINES_MAX):
            line = input()
            if not line.strip():
                break
            lines.append(line)
        sections.append("".join(f"{line}\n" for line in lines) + "\n")
    return "".join(sections)


def _kv_line(item: KV) -> str:
    return f"{safe_text(item.key)}\t{safe_text(item.value)}"


def txn_response_lines(result: TxnResult) -> list[str]:
    """One block per op answer, as etcdctl prints them. Raises nothing."""
    lines: list[str] = []
    for answer in result.responses:
        ((kind, body),) = answer.items() if isinstance(answer, dict) and answer else (("?", {}),)
        if kind == "put":
            lines.append("OK")
        elif kind == "delete":
            lines.append(str(body.get("deleted", 0)))
        elif kind == "range":
            lines.extend(_kv_line(KV.from_json(item)) for item in body.get("kvs", []))
        lines.append("")
    return lines[:-1] if lines else lines
