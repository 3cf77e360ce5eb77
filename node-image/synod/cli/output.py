"""Exit codes, error reporting and JSON/text output shared by the CLI commands."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from synod.client import (
    ClockRollback,
    Compacted,
    Conflict,
    InvalidArgument,
    LeaseExpired,
    NotFound,
    OutcomeUnknown,
    SessionExpired,
    SynodError,
    TooLarge,
    Unavailable,
)

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_COMPACTED",
    "EXIT_COMPARE_FAILED",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_LEASE_EXPIRED",
    "EXIT_NOT_FOUND",
    "EXIT_OUTCOME_UNKNOWN",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Failure",
    "err_console",
    "exit_code_for",
    "handle_errors",
    "out_console",
    "print_json",
]

EXIT_OK = 0
EXIT_ERROR = 1  # anything not listed below
EXIT_USAGE = 2  # bad command line, or the cluster rejected an argument (400, 413)
EXIT_NOT_FOUND = 3  # key or lease absent
EXIT_COMPARE_FAILED = 4  # a compare-and-swap did not hold, or another 409
EXIT_UNAVAILABLE = 5  # no node answered, no leader, timeouts, an ID clock behind
EXIT_COMPACTED = 6  # the revision asked for was compacted away
EXIT_LEASE_EXPIRED = 7  # a lease being kept alive expired or was revoked
EXIT_OUTCOME_UNKNOWN = 8  # a write may or may not have been applied
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  other error
  2  usage error, or an argument the cluster rejected (invalid, too large)
  3  not found (key or lease)
  4  compare failed (or another conflict)
  5  cluster unavailable (no answer, no leader, timeout; an ID clock rolled back)
  6  revision compacted
  7  lease expired while being kept alive
  8  outcome unknown: the write may have been applied (read it back)
  130 interrupted (Ctrl-C)"""

out_console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

P = ParamSpec("P")
T = TypeVar("T")


class Failure(Exception):
    """A CLI-level failure with its exit code (printed as `Error: message`)."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        """Raises nothing."""
        super().__init__(message)
        self.exit_code = exit_code


def exit_code_for(error: SynodError) -> int:
    """The documented exit code of a client error. Raises nothing."""
    # Before Unavailable: a script must tell "not applied" (5) from "maybe applied" (8).
    if isinstance(error, OutcomeUnknown) or (
        isinstance(error, SessionExpired) and error.outcome_unknown
    ):
        return EXIT_OUTCOME_UNKNOWN
    for cls, code in (
        (LeaseExpired, EXIT_LEASE_EXPIRED),
        (NotFound, EXIT_NOT_FOUND),
        (Conflict, EXIT_COMPARE_FAILED),
        (Unavailable, EXIT_UNAVAILABLE),
        # Not retried by the client (the caller decides whether to wait), but like
        # Unavailable nothing was issued and a later call may succeed.
        (ClockRollback, EXIT_UNAVAILABLE),
        (Compacted, EXIT_COMPACTED),
        (InvalidArgument, EXIT_USAGE),
        (TooLarge, EXIT_USAGE),
    ):
        if isinstance(error, cls):
            return code
    return EXIT_ERROR


def _describe(error: SynodError) -> str:
    """`title: detail` plus the useful extra members of the problem. Raises nothing."""
    text = error.detail
    extras = {
        k: v
        for k, v in error.problem.items()
        if k not in ("type", "title", "status", "detail", "code", "instance", "current", "expected")
    }
    if extras:
        text += " (" + ", ".join(f"{k}={v}" for k, v in sorted(extras.items())) + ")"
    if isinstance(error, OutcomeUnknown):
        text += "\nThe write may have been applied: read the key back before repeating it."
    elif isinstance(error, Unavailable):
        text += "\nIs a cluster running there? `synod dev` starts one; --endpoints picks one."
    return f"[{error.code}] {text}"


def handle_errors(func: Callable[P, T]) -> Callable[P, T]:
    """Turn client errors, Failure and Ctrl-C into a message and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return func(*args, **kwargs)
        except SynodError as error:
            err_console.print(f"[bold red]Error:[/] {escape(_describe(error))}")
            sys.exit(exit_code_for(error))
        except Failure as failure:
            err_console.print(f"[bold red]Error:[/] {escape(str(failure))}")
            sys.exit(failure.exit_code)
        except OSError as error:  # files of `synod dev`, ports, processes
            err_console.print(f"[bold red]Error:[/] {escape(str(error))}")
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def print_json(doc: Any) -> None:
    """One JSON document on one line of stdout (for scripts). Raises nothing."""
    click.echo(json.dumps(doc, sort_keys=True))
