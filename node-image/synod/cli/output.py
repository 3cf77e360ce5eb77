"""Exit codes, error reporting and JSON/text output shared by the CLI commands."""

from __future__ import annotations

import functools
import json
import re
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
    "EXIT_CODES_TABLE",
    "EXIT_COMPACTED",
    "EXIT_COMPARE_FAILED",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_LEASE_EXPIRED",
    "EXIT_NOT_FOUND",
    "EXIT_OUTCOME_UNKNOWN",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "OUTPUT_FORMATS",
    "Failure",
    "err_console",
    "exit_code_for",
    "handle_errors",
    "out_console",
    "print_json",
    "print_rows",
    "resolve_output",
    "safe_text",
    "stdout_is_terminal",
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

EXIT_CODES_TABLE = """\b
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
# The table is shown once, by `synod --help`; every other help points there.
EXIT_CODES_HELP = "Exit codes: see `synod --help`."

# -o/--output: `table` draws boxes for people, `plain` prints one tab-separated line
# per row (grep/cut/awk), `json` one document per line. `auto` (and its old name `text`)
# is `table` on a terminal and `plain` in a pipe, as etcdctl's simple format.
OUTPUT_FORMATS = ("auto", "table", "plain", "json", "text")
# C0 controls, DEL and C1 controls (ESC starts ANSI sequences; C1 CSI is 0x9b): shown
# as escapes so that a stored value cannot move the cursor, recolour or retitle a
# terminal, nor split one plain row into two.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Above this many rows a table is drawn by `_quick_table` (about 10x faster than rich's
# Table, which measures and wraps every cell): 10,000 keys print in about as long as
# they take to arrive. Styles are dropped there.
RICH_TABLE_ROWS_MAX = 500
_CONTROL_NAMES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}

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


def stdout_is_terminal() -> bool:
    """Whether stdout is a terminal (False under a pipe or a test runner). Raises
    nothing."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stdout
        return False


def resolve_output(name: str) -> str:
    """`table`, `plain` or `json` for an -o value; `auto`/`text` pick by the terminal.

    Raises nothing."""
    assert name in OUTPUT_FORMATS, name
    if name in ("auto", "text"):
        return "table" if stdout_is_terminal() else "plain"
    return name


def _escape_control(match: re.Match[str]) -> str:
    char = match.group(0)
    return _CONTROL_NAMES.get(char) or f"\\x{ord(char):02x}"


def safe_text(text: str) -> str:
    """``text`` with control characters (ANSI escapes, newlines, tabs...) written as
    backslash escapes, safe to print on one line of a terminal. Raises nothing."""
    if not _CONTROL_RE.search(text):
        return text  # the common case, and the fast one for many rows
    return _CONTROL_RE.sub(_escape_control, text)


def print_rows(
    output: str,
    columns: tuple[str, ...],
    rows: list[list[str]],
    *,
    title: str = "",
    caption: str = "",
    styles: list[str] | None = None,
) -> None:
    """Print ``rows`` of plain (unstyled) cells: a rich table for `table`, one
    tab-separated line per row for `plain` (no header: grep/cut/awk read it; the
    caption goes to stderr). Cells are escaped either way. ``styles`` is a rich style
    per row (table only). Raises nothing."""
    assert output in ("table", "plain"), output
    assert styles is None or len(styles) == len(rows)
    if output == "plain":
        if rows:
            lines = ["\t".join(safe_text(cell) for cell in row) for row in rows]
            click.echo("\n".join(lines))
        if caption:
            err_console.print(escape(caption), style="dim")
        return
    if len(rows) > RICH_TABLE_ROWS_MAX:
        click.echo(_quick_table(columns, rows, title=title, caption=caption))
        return
    from rich.table import Table  # only tables need it

    table = Table(title=escape(title) or None, caption=escape(caption) or None)
    for column in columns:
        table.add_column(column)
    for index, row in enumerate(rows):
        style = styles[index] if styles else None
        table.add_row(*(escape(safe_text(cell)) for cell in row), style=style or None)
    out_console.print(table)


def _quick_table(
    columns: tuple[str, ...], rows: list[list[str]], *, title: str = "", caption: str = ""
) -> str:
    """A box-drawn table of escaped cells, without rich's per-cell layout (no wrapping:
    a wide cell widens its column). Raises nothing."""
    from rich.cells import cell_len

    cells = [[safe_text(cell) for cell in row] for row in rows]
    widths = [cell_len(name) for name in columns]
    for row in cells:
        for index, cell in enumerate(row):
            size = len(cell) if cell.isascii() else cell_len(cell)
            widths[index] = max(widths[index], size)

    def line(left: str, middle: str, right: str) -> str:
        return left + middle.join("─" * (width + 2) for width in widths) + right

    def row_text(row: list[str]) -> str:
        padded = (cell + " " * (width - (len(cell) if cell.isascii() else cell_len(cell)))
                  for cell, width in zip(row, widths, strict=True))  # fmt: skip
        return "│ " + " │ ".join(padded) + " │"

    out = [title] if title else []
    out += [line("┌", "┬", "┐"), row_text(list(columns)), line("├", "┼", "┤")]
    out += [row_text(row) for row in cells]
    out.append(line("└", "┴", "┘"))
    if caption:
        out.append(caption)
    return "\n".join(out)
