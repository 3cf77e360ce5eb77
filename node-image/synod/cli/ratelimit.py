"""`synod ratelimit check|policies|status` (docs/ratelimit.md).

A descriptor on the command line is ``key=value[,key=value...]`` (entries in order);
`check` exits 0 when allowed and 5 (the "nothing done, try later" code) when over the
limit, printing the wait.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.markup import escape

from synod.cli.output import (
    EXIT_CODES_HELP,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Failure,
    out_console,
    print_json,
)

__all__ = ["parse_descriptor", "register"]

POLICY_FILE_BYTES_MAX = 1024 * 1024


def parse_descriptor(text: str) -> list[tuple[str, str]]:
    """``"path=/login,user=bob"`` as ordered pairs. Raises Failure (usage)."""
    pairs = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key or not value:
            raise Failure(f"descriptor {text!r}: expected key=value[,key=value...]", EXIT_USAGE)
        pairs.append((key, value))
    assert pairs
    return pairs


def _read_policy(path: str) -> dict[str, Any]:
    try:
        if path == "-":
            text = sys.stdin.read(POLICY_FILE_BYTES_MAX + 1)
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read(POLICY_FILE_BYTES_MAX + 1)
    except OSError as error:
        raise Failure(f"{path}: {error.strerror}", EXIT_USAGE) from None
    if len(text) > POLICY_FILE_BYTES_MAX:
        raise Failure(f"{path}: larger than {POLICY_FILE_BYTES_MAX} bytes", EXIT_USAGE)
    try:
        policy = json.loads(text)
    except ValueError as error:
        raise Failure(f"{path}: not JSON: {error}", EXIT_USAGE) from None
    if not isinstance(policy, dict):
        raise Failure(f"{path}: a policy is a JSON object", EXIT_USAGE)
    return policy


def register(
    cli: click.Group, client_options: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Add the `ratelimit` group to ``cli``. Raises nothing."""

    @cli.group(epilog=EXIT_CODES_HELP)
    def ratelimit() -> None:
        """Cluster-wide rate limits: Envoy-style domains and descriptors."""

    @ratelimit.command("check")
    @click.argument("domain")
    @click.argument("descriptors", nargs=-1, required=True)
    @click.option("--hits", type=click.IntRange(min=0), default=1, show_default=True,
                  help="Hits the request counts for (0: only ask).")  # fmt: skip
    @click.option("--lease-id", default="", help="Concurrency limits: the lease to hold.")
    @client_options
    def check(opts: Any, domain: str, descriptors: tuple[str, ...], hits: int,
              lease_id: str) -> None:  # fmt: skip
        """Count a request against DOMAIN's limits; DESCRIPTORS are key=value[,...].
        Exits 5 when over the limit."""
        parsed = [parse_descriptor(text) for text in descriptors]
        with opts.client() as client:
            result = client.rate_limit(domain, parsed, hits, lease_id=lease_id)
        if opts.json:
            print_json({"overall_code": result.overall_code, "statuses": result.statuses,
                        "generation": result.generation})  # fmt: skip
        else:
            for text, status in zip(descriptors, result.statuses, strict=True):
                if "remaining" in status:
                    out_console.print(f"{escape(text)}  {status['code']}  remaining="
                                      f"{status['remaining']} reset_ms={status['reset_ms']}"
                                      f" owner={escape(str(status.get('owner', '')))}")  # fmt: skip
                else:
                    out_console.print(f"{escape(text)}  {status['code']}  (not limited)")
            out_console.print(result.overall_code)
        if not result.allowed:
            wait = result.retry_after_ms
            why = f"; retry after {wait} ms" if wait >= 0 else "; the hits can never fit"
            raise Failure("over the limit" + why, EXIT_UNAVAILABLE)

    @ratelimit.command("policies")
    @click.argument("domain", default="")
    @click.option(
        "--set",
        "set_path",
        default=None,
        metavar="FILE",
        help="Create or replace the policy in FILE (JSON; - for stdin).",
    )
    @click.option("--delete", is_flag=True, help="Delete DOMAIN's policy.")
    @client_options
    def policies(opts: Any, domain: str, set_path: str | None, delete: bool) -> None:
        """List the policies (or DOMAIN's); --set FILE or --delete change them."""  # fmt: skip
        if set_path is not None and delete:
            raise Failure("--set and --delete exclude each other", EXIT_USAGE)
        if delete and not domain:
            raise Failure("--delete needs a DOMAIN", EXIT_USAGE)
        with opts.client() as client:
            if set_path is not None:
                doc = client.ratelimit_policy_put(_read_policy(set_path))
            elif delete:
                doc = client.ratelimit_policy_delete(domain)
            else:
                doc = client.ratelimit_policies(domain)
        if opts.json or "policies" not in doc:
            print_json(doc)
            return
        for policy in doc["policies"]:
            out_console.print(escape(json.dumps(policy, indent=2)))
        out_console.print(f"{len(doc['policies'])} policies, generation {doc['generation']}")

    @ratelimit.command("status")
    @client_options
    def status(opts: Any) -> None:
        """The answering member's hash ring, counters and the policy generation."""
        with opts.client() as client:
            doc = client.ratelimit_status()
        if opts.json:
            print_json(doc)
            return
        head = f"self {escape(doc['self'])}  ring from {doc['ring_source']}"
        out_console.print(f"{head}  counters {doc['counters']}  generation {doc['generation']}")
        for member in doc["ring"]:
            out_console.print(f"  {escape(member['name'])}  {escape(member['client_url'])}")
