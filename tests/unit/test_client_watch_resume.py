"""Property: however a node splits revisions into messages and wherever streams break,
the watch cursor delivers every event exactly once, in order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.client.aio import _WatchCursor


@settings(max_examples=300, deadline=None)
@given(
    events_per_revision=st.lists(st.integers(1, 4), min_size=1, max_size=12),
    breaks=st.lists(st.integers(0, 6), max_size=8),
    start_offset=st.integers(0, 3),
)
def test_resume_delivers_each_event_once_in_order(
    events_per_revision: list[int], breaks: list[int], start_offset: int
) -> None:
    first = 5
    history = [
        (first + offset, index)
        for offset, count in enumerate(events_per_revision)
        for index in range(count)
    ]
    start = first + min(start_offset, len(events_per_revision) - 1)
    expected = [event for event in history if event[0] >= start]
    cursor = _WatchCursor(start)
    delivered: list[tuple[int, int]] = []
    for attempt in range(len(breaks) + 1):
        # The node replays from the cursor's revision; the stream breaks after
        # `breaks[attempt]` sent events (the last stream runs to the end).
        sent = [event for event in history if event[0] >= cursor.next_revision]
        if attempt < len(breaks):
            sent = sent[: breaks[attempt]]
        seen: dict[int, int] = {}
        for revision, index in sent:
            if cursor.accept(revision, seen):
                delivered.append((revision, index))
    assert delivered == expected
