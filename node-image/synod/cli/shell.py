"""`synod shell`: a REPL of the `synod` commands (redis-cli's interactive mode), with
history and Tab completion of commands and of key names."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from synod.client import Client, SynodError

__all__ = ["HISTORY_LINES_MAX", "KEYS_COMPLETED_MAX", "KeyCompleter", "run_shell"]

HISTORY_LINES_MAX = 1000  # lines kept in the history file
KEYS_COMPLETED_MAX = 50  # key names offered for one Tab
LINES_MAX = 1_000_000  # lines one session reads (a bound on the loop; stdin may be a file)
# Commands after which the next word is a key name.
KEY_COMMANDS = (("kv", "get"), ("kv", "put"), ("kv", "del"), ("kv", "range"), ("kv", "cas"),
                ("kv", "watch"))  # fmt: skip
HELP_TEXT = "synod commands without `synod` (kv get k, status...); help, exit or Ctrl-D."


class KeyCompleter:
    """Tab completion: command words from the click tree, then key names from the
    cluster (a keys-only range on the prefix typed, at most KEYS_COMPLETED_MAX)."""

    def __init__(self, root: click.Group, client: Client | None) -> None:
        """Raises nothing."""
        self.root = root
        self.client = client
        self._matches: list[str] = []

    def candidates(self, words: list[str], partial: str) -> list[str]:
        """What may follow ``words`` starting with ``partial``. Raises nothing (a
        cluster that does not answer completes no keys)."""
        command: Any = self.root
        for word in words:
            if isinstance(command, click.Group) and word in command.commands:
                command = command.commands[word]
            else:
                break
        if isinstance(command, click.Group) and len(words) < 2:
            return sorted(name for name in command.commands if name.startswith(partial))
        if tuple(words[:2]) in KEY_COMMANDS and len(words) == 2 and self.client is not None:
            return self._keys(partial)
        return []

    def _keys(self, partial: str) -> list[str]:
        """Key names starting with ``partial``. Raises nothing."""
        assert self.client is not None
        try:
            if partial:
                found = self.client.range(partial, prefix=True, keys_only=True,
                                          limit=KEYS_COMPLETED_MAX)  # fmt: skip
            else:
                found = self.client.range("\x00", "\x00", keys_only=True, limit=KEYS_COMPLETED_MAX)
        except SynodError:
            return []
        return [kv.key for kv in found.kvs][:KEYS_COMPLETED_MAX]

    def complete(self, text: str, state: int) -> str | None:
        """The readline completer protocol. Raises nothing."""
        if state == 0:
            import readline

            line = readline.get_line_buffer()[: readline.get_endidx()]
            try:
                words = shlex.split(line)
            except ValueError:
                words = line.split()
            if line and not line.endswith(" ") and words:
                words = words[:-1]
            self._matches = self.candidates(words, text)
        return self._matches[state] if state < len(self._matches) else None


def _setup_readline(completer: KeyCompleter, history: Path | None) -> Callable[[], None]:
    """History and completion when readline exists; returns what saves the history.
    Raises nothing."""
    try:
        import readline
    except ImportError:  # no readline (some platforms): a plain prompt
        return lambda: None
    readline.set_completer(completer.complete)
    readline.set_completer_delims(" \t")
    readline.parse_and_bind("tab: complete")
    if history is not None:
        with contextlib.suppress(OSError):
            readline.read_history_file(history)
        readline.set_history_length(HISTORY_LINES_MAX)

    def save() -> None:
        if history is not None:
            with contextlib.suppress(OSError):
                readline.write_history_file(history)

    return save


def run_shell(
    root: click.Group,
    global_args: list[str],
    client: Client | None,
    history: Path | None,
    interactive: bool,
) -> int:
    """Read commands until `exit` or end of input and run each as `synod ARGS`
    (``global_args`` first). Returns how many failed. Raises nothing."""
    completer = KeyCompleter(root, client)
    save = _setup_readline(completer, history) if interactive else (lambda: None)
    failures = 0
    try:
        for _ in range(LINES_MAX):
            try:
                line = input("synod> " if interactive else "")
            except EOFError:
                break
            except KeyboardInterrupt:
                click.echo("")
                continue
            words = _split(line)
            if words is None or not words:
                failures += words is None
                continue
            if words[0] in ("exit", "quit"):
                break
            if words[0] in ("help", "?"):
                click.echo(HELP_TEXT)
                words = ["--help"]
            if words[0] in ("shell", "dev", "demo", "node"):
                click.echo(f"`{words[0]}` is not run from the shell", err=True)
                failures += 1
                continue
            failures += _run(root, [*global_args, *words])
    finally:
        save()
    return failures


def _split(line: str) -> list[str] | None:
    """Shell words of ``line``; None (reported) for an unbalanced quote. Raises nothing."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        click.echo(f"Error: {exc}", err=True)
        return None


def _run(root: click.Group, args: list[str]) -> int:
    """Run one command as `synod` would; its exit code is shown, not obeyed. Returns 1
    if it failed. Raises nothing but KeyboardInterrupt."""
    try:
        root.main(args=args, prog_name="synod", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if code:
            click.echo(f"(exit {code})", err=True)
        return int(code != 0)
    except click.ClickException as exc:
        exc.show()
        return 1
    except click.exceptions.Abort:
        return 1
    return 0
