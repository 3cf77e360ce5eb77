"""Request input: bounded bodies, session headers, query parameters, JSON -> ops.

Everything here runs before the node is called and raises
:class:`~synod.node.problems.Problem`, so bad input is refused without changing state.
JSON keys and values are text; the services want bytes: they are UTF-8 encoded here
(the schema has already refused strings that are not valid UTF-8).
"""

from __future__ import annotations

import asyncio
import binascii
import ipaddress
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from aiohttp import web

from synod.node.api import Session
from synod.node.problems import Problem
from synod.node.routes import RouteSpec
from synod.node.schema import INT64_MAX, validate
from synod.services import commands

__all__ = [
    "SESSION_HEADERS",
    "client_url_from_json",
    "compare_from_json",
    "decoder",
    "delete_from_json",
    "is_base64",
    "parse_query",
    "parse_session",
    "peer_address_from_json",
    "put_from_json",
    "range_from_json",
    "read_body",
    "txn_from_json",
]

SESSION_HEADERS = ("Synod-Client-Id", "Synod-Seq", "Synod-Ack-Seq")
# Decimal digits of INT64_MAX: a longer value cannot be a valid number.
_INT64_DIGITS_MAX = len(str(INT64_MAX))
# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
HOSTNAME_BYTES_MAX = 253
PORT_MAX = 65535


async def read_body(request: web.Request, bytes_max: int, timeout_ms: int) -> bytes:
    """Read the body, refusing more than ``bytes_max`` or slower than ``timeout_ms``.

    Raises Problem too-large or request-timeout.
    """
    assert bytes_max > 0 and timeout_ms > 0
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            return await _read_bounded(request, bytes_max)
    except TimeoutError:
        raise Problem("request-timeout", f"request body not received in {timeout_ms} ms",
                      limit="request_body_read_timeout_ms", max=timeout_ms) from None  # fmt: skip


async def _read_bounded(request: web.Request, bytes_max: int) -> bytes:
    """Raises Problem too-large."""
    if request.content_length is not None and request.content_length > bytes_max:
        raise _too_large(bytes_max)
    chunks: list[bytes] = []
    size_bytes = 0
    async for chunk in request.content.iter_any():
        size_bytes += len(chunk)
        if size_bytes > bytes_max:
            raise _too_large(bytes_max)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(bytes_max: int) -> Problem:
    """Built only when needed: a Problem is not free and most bodies are small."""
    return Problem("too-large", f"request body exceeds request_body_bytes_max={bytes_max}",
                   limit="request_body_bytes_max", max=bytes_max)  # fmt: skip


def _parse_header_int(name: str, raw: str) -> int:
    """A non-negative decimal header value. Raises Problem invalid-argument."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= _INT64_DIGITS_MAX):
        raise Problem("invalid-argument", f"header {name} must be a decimal integer")
    value = int(raw)
    if value > INT64_MAX:
        raise Problem("invalid-argument", f"header {name} must be at most 2^63-1")
    return value


def parse_session(request: web.Request) -> Session | None:
    """The Session of the Synod-* headers, None without them.

    Raises Problem invalid-argument if they are incomplete or inconsistent.
    """
    return parse_session_values({name: request.headers.getall(name, []) for name in
                                 SESSION_HEADERS})  # fmt: skip


def parse_session_values(raw: dict[str, list[str]]) -> Session | None:
    """The Session of the Synod-* header values by name (every value of each; a batched
    operation has at most one), None without them.

    Raises Problem invalid-argument if they are incomplete or inconsistent.
    """
    assert set(raw) <= set(SESSION_HEADERS)
    if not any(raw.values()):
        return None
    if any(len(values) > 1 for values in raw.values()):
        raise Problem("invalid-argument", "session headers must not be repeated")
    if not raw.get("Synod-Client-Id") or not raw.get("Synod-Seq"):
        raise Problem("invalid-argument", "a session write needs Synod-Client-Id and Synod-Seq")
    values = {name: _parse_header_int(name, v[0]) if v else 0 for name, v in raw.items()}
    values = {name: values.get(name, 0) for name in SESSION_HEADERS}
    session = Session(values["Synod-Client-Id"], values["Synod-Seq"], values["Synod-Ack-Seq"])
    if session.client_id < 1 or session.seq < 1:
        raise Problem("invalid-argument", "Synod-Client-Id and Synod-Seq must be >= 1")
    if session.ack_seq > session.seq:
        raise Problem("invalid-argument", "Synod-Ack-Seq must not exceed Synod-Seq")
    return session


def _query_value(name: str, raw: str, schema: dict[str, Any]) -> Any:
    """Convert one query parameter by its schema type. Raises Problem invalid-argument."""
    kind = schema.get("type")
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise Problem("invalid-argument", f"query parameter {name!r} must be true or false")
        return raw == "true"
    if kind == "integer":
        return _parse_header_int(f"query parameter {name!r}", raw)
    return raw


def parse_query(request: web.Request, spec: RouteSpec) -> dict[str, Any]:
    """The query parameters of ``request`` as a validated dict.

    Raises Problem invalid-argument (unknown, repeated or malformed parameters) or
    too-large.
    """
    assert spec.query is not None
    properties: dict[str, Any] = spec.query["properties"]
    out: dict[str, Any] = {}
    for name in request.query:
        values = request.query.getall(name)
        if len(values) > 1 or name in out:
            raise Problem("invalid-argument", f"query parameter {name!r} is repeated")
        out[name] = _query_value(name, values[0], properties.get(name, {}))
    validate(out, spec.query)
    return out


# -- conversion JSON -> ops ----------------------------------------------------------------


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")  # validated as encodable by the schema


def _base64(text: str) -> bytes:
    """Strict RFC 4648 base64 (no newlines, padding required). Raises Problem."""
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise Problem("invalid-argument", f"{text[:40]!r} is not base64 "
                      "(the request says encoding=base64)") from None  # fmt: skip


Decode = Callable[[str], bytes]


def decoder(body: dict[str, Any]) -> Decode:
    """How the keys and values of ``body`` turn into bytes (its ``encoding``).

    Raises nothing (the schema has checked the name)."""
    encoding = body.get("encoding", "utf-8")
    assert encoding in ("utf-8", "base64"), encoding
    return _base64 if encoding == "base64" else _utf8


def is_base64(body: dict[str, Any]) -> bool:
    """Whether answers to ``body`` carry keys and values as base64. Raises nothing."""
    return body.get("encoding") == "base64"


def _range_bounds(body: dict[str, Any], decode: Decode) -> tuple[bytes, bytes, bool]:
    """(key, range_end, prefix). Raises Problem if both prefix and range_end are given."""
    range_end, prefix = body.get("range_end", ""), body.get("prefix", False)
    if prefix and range_end:
        raise Problem("invalid-argument", "give either prefix or range_end, not both")
    key = decode(body["key"])
    if not key:
        raise Problem("invalid-argument", "field 'key' must not be empty")
    return key, decode(range_end), prefix


def put_from_json(body: dict[str, Any], decode: Decode | None = None) -> dict[str, Any]:
    """The put op of a validated put body. Raises Problem invalid-argument (bad base64,
    an empty key)."""
    decode = decode or decoder(body)
    key = decode(body["key"])
    if not key:
        raise Problem("invalid-argument", "field 'key' must not be empty")
    return commands.put_op(key, decode(body["value"]), body.get("lease", 0),
                           body.get("prev_kv", False))  # fmt: skip


def delete_from_json(body: dict[str, Any], decode: Decode | None = None) -> dict[str, Any]:
    """The delete op of a validated delete body. Raises Problem invalid-argument."""
    key, range_end, prefix = _range_bounds(body, decode or decoder(body))
    return commands.delete_op(key, range_end, prefix, body.get("prev_kv", False))


def range_from_json(body: dict[str, Any], decode: Decode | None = None) -> dict[str, Any]:
    """The range op of a validated range body. Raises Problem invalid-argument."""
    key, range_end, prefix = _range_bounds(body, decode or decoder(body))
    return commands.range_op(
        key, range_end, prefix=prefix, limit=body.get("limit", 0),
        revision=body.get("revision", 0), keys_only=body.get("keys_only", False),
        count_only=body.get("count_only", False),
    )  # fmt: skip


def compare_from_json(item: dict[str, Any], decode: Decode = _utf8) -> dict[str, Any]:
    """A txn compare. Raises Problem invalid-argument if the value's type does not fit
    the target (a string for ``value``, an integer otherwise)."""
    target, value = item["target"], item["value"]
    if target == "value" and not isinstance(value, str):
        raise Problem("invalid-argument", "a compare on target 'value' needs a string value")
    if target != "value" and not isinstance(value, int):
        raise Problem("invalid-argument", f"a compare on target {target!r} needs an integer")
    converted = decode(value) if isinstance(value, str) else value
    return commands.compare(decode(item["key"]), target, item["result"], converted,
                            decode(item.get("range_end", "")))  # fmt: skip


_TXN_OPS = {"put": put_from_json, "delete": delete_from_json, "range": range_from_json}


def txn_from_json(body: dict[str, Any]) -> dict[str, Any]:
    """The txn op of a validated txn body (its ``encoding`` covers every compare and op).

    Raises Problem invalid-argument."""
    decode = decoder(body)
    compares = [compare_from_json(item, decode) for item in body.get("compare", [])]
    branches = []
    for name in ("success", "failure"):
        branch = []
        for item in body.get(name, []):
            ((kind, op_body),) = item.items()  # the schema allows exactly one member
            branch.append(_TXN_OPS[kind](op_body, decode))
        branches.append(branch)
    op = commands.txn_op(compares, branches[0], branches[1])
    if body.get("fences"):  # lock-token guards (docs/locks.md)
        op["fences"] = [dict(fence) for fence in body["fences"]]
    return op


# -- member addresses -----------------------------------------------------------------------


def _host(host: str, what: str) -> str:
    """``host`` normalised (lower case, IPv6 without brackets) if it is an IP address or
    an RFC 1123 host name. Raises Problem invalid-argument."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    # "999.1.1.1" fits the label grammar but is a mistyped IP address, not a name.
    if labels[-1].isdigit() or (host != bare or not host or len(host) > HOSTNAME_BYTES_MAX
            or not all(_HOST_LABEL.fullmatch(label) for label in labels)):  # fmt: skip
        raise Problem("invalid-argument", f"{what}: {host!r} is neither an IP address nor a "
                      "host name")  # fmt: skip
    return host.rstrip(".").lower()


def _port(port: str, what: str) -> int:
    """Raises Problem invalid-argument unless ``port`` is a decimal in 1..65535."""
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= PORT_MAX):
        raise Problem("invalid-argument", f"{what}: port {port!r} must be in 1..{PORT_MAX}")
    return int(port)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_address_from_json(text: str) -> str:
    """The normalised ``HOST:PORT`` of a member's peer listener (IPv6 in brackets).

    Raises Problem invalid-argument for anything else (a URL, no port, a bad host):
    the peer transport dials exactly this, and could never reach a bad one."""
    host, sep, port = text.rpartition(":")
    if not sep or "/" in text or "@" in text or (":" in host and not host.startswith("[")):
        raise Problem("invalid-argument", f"peer_url {text!r} must be HOST:PORT "
                      "(no scheme or path), e.g. 10.0.0.4:2380")  # fmt: skip
    normal = _join(_host(host, "peer_url"), _port(port, "peer_url"))
    assert normal.rpartition(":")[2].isdigit()
    return normal


def client_url_from_json(text: str) -> str:
    """The normalised ``http(s)://HOST:PORT`` of a member's client API ("" stays "").

    Raises Problem invalid-argument for another scheme, a path, a query or a bad
    host or port."""
    if not text:
        return ""
    what = "client_url"
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or parts.path not in ("", "/") or parts.query \
            or parts.fragment or parts.username or parts.password:  # fmt: skip
        raise Problem("invalid-argument", f"{what} {text!r} must be http(s)://HOST:PORT")
    host, sep, port = parts.netloc.rpartition(":")
    if not sep or host.endswith(":") or (":" in host and not host.startswith("[")):
        raise Problem("invalid-argument", f"{what} {text!r} must name a port")
    return f"{parts.scheme}://{_join(_host(host, what), _port(port, what))}"
