"""Live recording: a ``generate`` call's rows reach the trace while the call runs.

``lens.record(path, live=True)`` attaches a :class:`LiveRecording` to every call. After each
generation step it decides whether to write: when a block of rows was resolved anyway (a
block boundary, no extra work), or when ``live_interval`` seconds have passed since the last
write, in which case the rows waiting for a full block are resolved now, in a thinner
product. What it writes, and in which order, is :mod:`entropylens_hf.trace.live`'s business.

Writing waits for the device (the resolved rows come to the host), at most once per write;
normal recording waits once per call. ``benchmarks/live.py`` measures what both cost.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .recorder import TraceRecorder
    from .state import CallState
    from ..trace.live import LiveBatch

__all__ = ["LiveRecording", "DEFAULT_LIVE_INTERVAL"]

#: Seconds between live writes when no block boundary came sooner (``lens.record(live_interval=...)``).
DEFAULT_LIVE_INTERVAL = 1.0


class LiveRecording:
    """The live side of one ``generate`` call: begins its sequences in the file, grows them, ends them."""

    def __init__(self, recorder: "TraceRecorder", interval: float, extra: int, token_bytes: int):
        self.recorder = recorder
        self.interval = float(interval)
        self.extra = int(extra)
        self.token_bytes = int(token_bytes)
        self.batch: LiveBatch | None = None
        self.blocks_written = 0
        self.last_write = time.monotonic()
        self.writes = 0

    def step(self, state: "CallState") -> None:
        """After a generation step: write if a block was resolved or the interval has passed."""
        due = time.monotonic() - self.last_write >= self.interval
        if due and state.queued:
            self.recorder.resolve_queued(state)  # resolve the waiting rows now, a thinner product
        if len(state.blocks) > self.blocks_written:
            self.write(state)
        elif due:
            self.last_write = time.monotonic()

    def write(self, state: "CallState") -> None:
        records = self.recorder.sequence_records(state)
        if self.batch is None:
            self.batch = self.recorder.writer.begin_live(records, extra=self.extra, token_bytes=self.token_bytes)
        else:
            self.batch.update(records)
        self.blocks_written = len(state.blocks)
        self.last_write = time.monotonic()
        self.writes += 1

    def finish(self, records: list[Any]) -> list[int]:
        """The call returned: write the rest and mark the sequences complete (or abandoned when stopped)."""
        if not records:
            return []
        if self.batch is None:  # nothing written yet (a call shorter than one write)
            self.batch = self.recorder.writer.begin_live(records, extra=0, token_bytes=0)
        return self.batch.finish(records)

    def abandon(self) -> None:
        """The call failed or was interrupted: keep what was written, marked abandoned (status 2)."""
        if self.batch is not None:
            self.batch.abandon()
