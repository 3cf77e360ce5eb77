"""A minimal Server-Sent Events decoder (the subset Synod's watch stream uses)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

__all__ = ["SSE_LINE_BYTES_MAX", "SseMessage", "iter_sse"]

# One `data:` line carries one JSON message; a watch message is bounded by the
# server's events-per-message and value limits, so 64 MiB is far above any real one.
SSE_LINE_BYTES_MAX = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SseMessage:
    """One dispatched event: its name (default `message`) and its joined data lines."""

    event: str
    data: str


async def iter_sse(lines: AsyncIterable[bytes]) -> AsyncIterator[SseMessage]:
    """Decode SSE ``lines`` (with or without their line endings) into messages.

    Comments and unknown fields are skipped, as the SSE specification says.
    Raises ValueError when a line exceeds SSE_LINE_BYTES_MAX.
    """
    event = ""
    data: list[str] = []
    async for raw in lines:
        if len(raw) > SSE_LINE_BYTES_MAX:
            raise ValueError(f"SSE line of {len(raw)} bytes exceeds {SSE_LINE_BYTES_MAX}")
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield SseMessage(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
