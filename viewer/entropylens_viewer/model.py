"""The viewer's data model: open traces, selection, current layer, playback. Plain Python.

Widgets subscribe to the :class:`Signal` attributes of :class:`ViewerState` and render; they
never hold state of their own. Nothing here imports Qt, so it is testable without a screen.
Traces are read only through :mod:`entropylens_hf.trace`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from entropylens_hf.errors import TraceError
from entropylens_hf.trace import SequenceRecord, Trace

__all__ = ["Signal", "OpenTrace", "ViewerState", "visible_token", "TraceError"]


class Signal:
    """A minimal callback list: ``connect(fn)``, ``emit(*args)``."""

    def __init__(self) -> None:
        self._slots: list[Callable] = []

    def connect(self, slot: Callable) -> None:
        self._slots.append(slot)

    def disconnect(self, slot: Callable) -> None:
        self._slots.remove(slot)

    def emit(self, *args) -> None:
        for slot in list(self._slots):
            slot(*args)


def visible_token(text: str) -> str:
    """Token text with whitespace made visible: '·' space, '⏎' newline, '→' tab."""
    return text.replace(" ", "·").replace("\n", "⏎").replace("\t", "→") or "∅"


@dataclass
class OpenTrace:
    """One open trace file and a small cache of its sequences, loaded on demand."""

    path: Path
    trace: Trace
    cache_size: int = 64

    def __post_init__(self) -> None:
        self._cache: OrderedDict[int, SequenceRecord] = OrderedDict()
        self._vocab: dict[int, str] = {}

    @property
    def name(self) -> str:
        m = self.trace.metadata
        return f"{self.path.name} ({m.model_name}, {m.lens_kind} lens{', sub-layers' if m.sublayers else ''})"

    def sequence(self, index: int) -> SequenceRecord:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        record = self.trace[index]
        self._cache[index] = record
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        for token_id, text in zip(record.token_ids.tolist(), record.token_texts):
            self._vocab.setdefault(token_id, text)
        return record

    def token_text(self, token_id: int) -> str:
        """Text of a token id from the trace's stored vocabulary, else from loaded sequences, else ``#id``."""
        text = self.trace.token_text(int(token_id))
        if text is None:
            text = self._vocab.get(int(token_id))
        return visible_token(text) if text is not None else f"#{int(token_id)}"

    def forget(self, index: int) -> None:
        """Drop a cached sequence (it grew in the file)."""
        self._cache.pop(index, None)

    def in_progress(self, index: int) -> bool:
        """True while the sequence is still being written by a live writer (not a killed one)."""
        return int(self.trace.statuses[index]) == 0 and self.trace.being_written

    def close(self) -> None:
        self.trace.close()


class ViewerState:
    """Everything the viewer shows, and the signals that announce changes.

    ``layer`` is the replay depth: the heatmap shows layers ``0..layer`` and the prediction row
    shows the top-1 token at ``layer``. ``row`` is the drilled-down token row of the current
    sequence (None: none selected).
    """

    def __init__(self) -> None:
        self.traces: list[OpenTrace] = []
        self.current: int | None = None  # index into traces
        self.sequence_index: int | None = None
        self.row: int | None = None
        self.layer = 0
        self.playing = False
        self.speed = 4.0  # layers per second
        self.text_filter = ""
        self.label_filter: tuple[str, str] | None = None
        self.follow = False  # jump to each new sequence as it appears (a chat being recorded)
        self.traces_changed = Signal()
        self.sequences_changed = Signal()  # the visible list (filter, new sequences)
        self.sequences_updated = Signal()  # sequences grew or completed in place (live recording)
        self.sequence_grew = Signal()  # the current sequence has new rows or was completed; row and layer stay
        self.sequence_changed = Signal()
        self.row_changed = Signal()
        self.layer_changed = Signal()
        self.playback_changed = Signal()
        self.problem = Signal()  # a one-line TraceError met while browsing (a damaged sequence)

    # ------------------------------------------------------------------ traces
    def open(self, path: str | Path) -> OpenTrace:
        """Open a trace (raises TraceError with one line); it becomes the current trace."""
        path = Path(path)
        for i, t in enumerate(self.traces):
            if t.path.resolve() == path.resolve():
                self.set_current_trace(i)
                return t
        trace = Trace.open(path, partial=True)  # sequences still being written are shown, marked
        try:
            trace.mean_profiles  # read at once by the aggregate views: refuse a file where they are damaged
        except TraceError:
            trace.close()
            raise
        opened = OpenTrace(path, trace)
        self.traces.append(opened)
        self.set_current_trace(len(self.traces) - 1)
        self.traces_changed.emit()  # after the switch, so listeners see the new trace as current
        return opened

    def close_trace(self, index: int) -> None:
        self.traces.pop(index).close()
        self.set_current_trace(min(index, len(self.traces) - 1) if self.traces else None)
        self.traces_changed.emit()

    def set_current_trace(self, index: int | None) -> None:
        self.current = index
        self.sequence_index = None
        self.row = None
        self.sequences_changed.emit()
        if index is not None and len(self.trace.trace):
            self.select_sequence(self.visible_sequences()[0] if self.visible_sequences() else 0)
        else:
            self.sequence_changed.emit()

    @property
    def trace(self) -> OpenTrace | None:
        return None if self.current is None else self.traces[self.current]

    @property
    def num_layers(self) -> int:
        return self.trace.trace.metadata.num_layers if self.trace else 0

    @property
    def depths(self) -> np.ndarray:
        """Decoder depth of each lens row of the current trace (``k.attn`` at k - 0.5): the x of profiles."""
        return np.asarray(self.trace.trace.metadata.depths, dtype=float) if self.trace else np.zeros(0)

    def refresh(self) -> int:
        """Pick up what changed in every open trace since the last look (live following).

        New sequences reload the list (with :attr:`follow`, the newest is selected);
        sequences that grew or completed in place only update it, and the current one
        emits :attr:`sequence_grew`, so the selected token, replay layer and zoom stay.
        Nothing is emitted when nothing changed. Returns the number of new sequences.
        """
        new = 0
        for i, t in enumerate(self.traces):
            counts, statuses = t.trace.row_counts, t.trace.statuses
            added = t.trace.refresh()
            new += added
            shared = len(counts)
            changed = np.flatnonzero((t.trace.row_counts[:shared] != counts) | (t.trace.statuses[:shared] != statuses))
            for index in changed:
                t.forget(int(index))
            if i != self.current:
                continue
            if added:
                self.sequences_changed.emit()
                if self.follow or self.sequence_index is None:
                    self.select_sequence(len(t.trace) - 1 if self.follow else 0)
            elif len(changed):
                self.sequences_updated.emit()
            if self.sequence_index is not None and self.sequence_index in changed:
                self.sequence_grew.emit()
        return new

    @property
    def in_progress(self) -> bool:
        """Whether the current sequence is still being written."""
        return self.sequence_index is not None and self.trace.in_progress(self.sequence_index)

    # ------------------------------------------------------------------ sequence list
    def set_text_filter(self, text: str) -> None:
        self.text_filter = text
        self.sequences_changed.emit()

    def set_label_filter(self, key_value: tuple[str, str] | None) -> None:
        self.label_filter = key_value
        self.sequences_changed.emit()

    def label_values(self) -> list[tuple[str, str]]:
        """Every (key, value) label pair of the current trace, sorted."""
        if not self.trace:
            return []
        return sorted({(k, v) for labels in self.trace.trace.labels for k, v in labels.items()})

    def visible_sequences(self) -> list[int]:
        """Indices of the current trace's sequences that pass the label and text filters."""
        if not self.trace:
            return []
        trace = self.trace.trace
        labels, prompts = trace.labels, trace.prompt_texts
        needle = self.text_filter.lower()
        return [
            i
            for i in range(len(trace))
            if (self.label_filter is None or labels[i].get(self.label_filter[0]) == self.label_filter[1])
            and (not needle or needle in prompts[i].lower())
        ]

    def select_sequence(self, index: int) -> None:
        try:
            self.trace.sequence(index)
        except TraceError as exc:  # a damaged sequence: say so, keep the others browsable
            self.problem.emit(str(exc))
            return
        self.sequence_index = index
        self.row = None
        self.layer = self.num_layers - 1 if not self.playing else self.layer
        self.sequence_changed.emit()
        self.layer_changed.emit()
        self.row_changed.emit()

    @property
    def sequence(self) -> SequenceRecord | None:
        if self.trace is None or self.sequence_index is None:
            return None
        return self.trace.sequence(self.sequence_index)

    # ------------------------------------------------------------------ drill-down
    def select_row(self, row: int | None) -> None:
        seq = self.sequence
        if seq is not None and row is not None:
            row = int(np.clip(row, 0, seq.n_rows - 1))
        self.row = row
        self.row_changed.emit()

    def top_predictions(self, layer: int) -> list[str]:
        """Top-1 prediction at ``layer`` for every row of the current sequence."""
        seq = self.sequence
        if seq is None:
            return []
        return [self.trace.token_text(t) for t in seq.topk_ids[:, layer, 0]]

    def topk_at(self, row: int, layer: int) -> list[tuple[str, float]]:
        seq = self.sequence
        return [(self.trace.token_text(t), float(p)) for t, p in zip(seq.topk_ids[row, layer], seq.topk_probs[row, layer])]

    # ------------------------------------------------------------------ playback
    def set_layer(self, layer: int) -> None:
        layer = int(np.clip(layer, 0, max(0, self.num_layers - 1)))
        if layer != self.layer:
            self.layer = layer
            self.layer_changed.emit()

    def step(self, delta: int = 1) -> None:
        self.set_layer(self.layer + delta)

    def play(self) -> None:
        if self.layer >= self.num_layers - 1:
            self.set_layer(0)
        self.playing = True
        self.playback_changed.emit()

    def pause(self) -> None:
        self.playing = False
        self.playback_changed.emit()

    def toggle_play(self) -> None:
        self.pause() if self.playing else self.play()

    def tick(self) -> None:
        """One playback step: advance a layer, stop at the last one."""
        if not self.playing:
            return
        self.step(1)
        if self.layer >= self.num_layers - 1:
            self.pause()

    def set_speed(self, layers_per_second: float) -> None:
        self.speed = max(0.25, float(layers_per_second))
        self.playback_changed.emit()

    # ------------------------------------------------------------------ aggregates
    def mean_profile(self, indices: list[int] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
        """Mean and standard deviation, over sequences, of their mean generated-token profile.

        Reads the per-sequence profiles stored in the trace index: no sequence is loaded.
        """
        if self.trace is None:
            return np.zeros(0), np.zeros(0), 0
        indices = self.visible_sequences() if indices is None else indices
        if not indices:
            return np.zeros(0), np.zeros(0), 0
        stack = self.trace.trace.mean_profiles[indices]
        return stack.mean(0), stack.std(0), len(indices)

    def depth_profiles(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Per open trace: (name, normalised depth in [0, 1], mean generated-token profile)."""
        out = []
        for t in self.traces:
            if len(t.trace):
                mean = t.trace.mean_profiles.mean(axis=0)
                out.append((t.name, np.linspace(0.0, 1.0, len(mean)), mean))
        return out
