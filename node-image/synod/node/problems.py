"""RFC 9457 problem documents: the one shape of every error the HTTP API answers.

A problem has a stable machine ``code`` (the last segment of its ``type`` URI, never
renamed), an HTTP ``status``, a human ``detail`` and extension members (``limit``,
``max``, ``compact_revision``, ``leader_id``...). Service errors (``synod.services``)
and node errors (``synod.node.api``) both become problems here; every code's status,
title and outcome are declared once, in :mod:`synod.codes`.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from synod.codes import CODES, PROBLEM_TYPE_PREFIX
from synod.node.api import NodeError
from synod.services.errors import ServiceError

__all__ = [
    "PROBLEM_CODE",
    "PROBLEM_CONTENT_TYPE",
    "PROBLEM_TITLES",
    "PROBLEM_TYPE_PREFIX",
    "Problem",
    "problem_from_node_error",
    "problem_from_result_error",
    "problem_from_service_error",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
# The code of a problem answer, kept on the response for the metrics middleware.
PROBLEM_CODE = web.ResponseKey("synod_problem_code", str)
# Members of the problem object itself; details may not shadow them.
_RESERVED_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "code"})

# code -> (status, title), from the one declaration of the codes (synod.codes).
PROBLEM_TITLES: dict[str, tuple[int, str]] = {
    name: (entry.status, entry.title) for name, entry in CODES.items()
}


def _json_detail(value: Any) -> Any:
    """Details may hold bytes (keys); JSON has only text. Raises nothing."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


class Problem(Exception):
    """An error answer. Raise it from a handler; the problem middleware renders it."""

    def __init__(self, code: str, detail: str, **extensions: Any) -> None:
        """Build a problem; its status is the code's (synod.codes). Raises nothing: an
        undeclared code (a bug) becomes ``internal`` naming it."""
        assert code and detail, "a problem needs a code and a human detail"
        entry = CODES.get(code)
        if entry is None:
            detail, code, entry = f"[{code}] {detail}", "internal", CODES["internal"]
        super().__init__(detail)
        self.code = code
        self.status = entry.status
        self.title = entry.title
        self.detail = detail
        self.extensions = {
            name: _json_detail(value)
            for name, value in extensions.items()
            if name not in _RESERVED_MEMBERS
        }
        assert 400 <= self.status <= 599

    def to_dict(self) -> dict[str, Any]:
        """The problem document. Raises nothing."""
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_PREFIX + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        body.update(self.extensions)
        assert body["status"] == self.status
        return body

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        """Render as an ``application/problem+json`` answer. Raises nothing."""
        text = json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))
        response = web.Response(
            status=self.status, text=text, content_type=PROBLEM_CONTENT_TYPE, headers=headers
        )
        response[PROBLEM_CODE] = self.code  # counted by code in synod_http_problems_total
        return response


def problem_from_result_error(error: dict[str, Any]) -> Problem:
    """The problem for a service result's ``error`` map (``{"code", "status", "message",
    **details}``). Raises nothing: a malformed map becomes an ``internal`` problem."""
    code, status, message = error.get("code"), error.get("status"), error.get("message")
    if not isinstance(code, str) or not isinstance(status, int) or not isinstance(message, str):
        return Problem("internal", f"malformed service error: {error!r}"[:500])
    details = {k: v for k, v in error.items() if k not in ("code", "status", "message")}
    # The status is the code's: a result replicated by an older version with another
    # status for the same code is answered with today's.
    return Problem(code, message or code, **details)


def problem_from_service_error(error: ServiceError) -> Problem:
    """The problem for a raised service error. Raises nothing."""
    return problem_from_result_error(error.to_dict())


def problem_from_node_error(error: NodeError) -> Problem:
    """The problem for a node error (NotLeader, NoLeader, Timeout...). Raises nothing."""
    problem = Problem(error.code, str(error) or error.code, **error.details)
    assert problem.code == error.code
    return problem
