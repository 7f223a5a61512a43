"""The view of a trace, a run folder or one sequence: inline in Jupyter, or saved as one HTML page.

>>> from entropylens_hf.display import view
>>> view(trace)                          # in a notebook cell: heatmap, hover, drill-down
>>> view(trace, sequences=[3, 7]).save("page.html")

A trace displays its overview (every sequence's mean profile, read from the index) and the
data of a few sequences for the picker: the ones asked for, or the first ones up to
:data:`DEFAULT_SEQUENCES` and :data:`CELL_BUDGET` lens cells, so a trace of 10,000
sequences displays at once and the output stays a few MB.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import EntropyLensError
from ..trace import SequenceRecord, Trace
from .payload import DEFAULT_TOP_K, sequence_payload, summary_payload
from .render import fragment, page

__all__ = ["TraceView", "view", "DEFAULT_SEQUENCES", "CELL_BUDGET"]

DEFAULT_SEQUENCES = 8
CELL_BUDGET = 100_000
"""Lens cells (rows x layers) embedded by default: at most about 6 MB of page with top-5 predictions."""


@dataclass(frozen=True)
class TraceView:
    """Rendered view data; shows itself in Jupyter (``_repr_html_``) and saves as a page."""

    data: dict[str, Any]
    summary: str
    title: str

    def _repr_html_(self) -> str:
        return fragment(self.data, self.summary)

    def __repr__(self) -> str:
        return self.summary

    def html(self) -> str:
        """The self-contained page (what :meth:`save` writes)."""
        return page(self.data, self.summary, self.title)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the page; it opens offline in any browser. Returns the path."""
        path = Path(path)
        path.write_text(self.html(), encoding="utf-8")
        return path


def default_sequences(lengths: Sequence[int], layers: int) -> list[int]:
    """The first sequences, at most :data:`DEFAULT_SEQUENCES` and :data:`CELL_BUDGET` cells (always one)."""
    chosen: list[int] = []
    cells = 0
    for i, rows in enumerate(lengths[:DEFAULT_SEQUENCES]):
        cells += int(rows) * layers
        if chosen and cells > CELL_BUDGET:
            break
        chosen.append(i)
    return chosen


def _checked(sequences: Sequence[int], n: int, name: str) -> list[int]:
    chosen = []
    for i in sequences:
        if not -n <= int(i) < n:
            raise EntropyLensError(f"{name}: sequence {i} out of range ({n} sequences); indices start at 0")
        chosen.append(int(i) % n)
    return chosen


def _summary_line(name: str, data: dict[str, Any]) -> str:
    s = data["summary"]
    shown = ", ".join(str(p["index"]) for p in data["sequences"]) or "none"
    return (f"entropylens trace {name}: {s['model']}, {s['lens']} lens, {s['layers']} lens layers, "
            f"{s['sequences']} sequences, {s['tokens']} tokens; view of sequences {shown} "
            "(the heatmap needs a front end that runs JavaScript)")


def view(source: Any, sequences: Sequence[int] | None = None, top_k: int = DEFAULT_TOP_K) -> TraceView:
    """The view of ``source``: a :class:`Trace` (file or run folder), a path to one, or a :class:`SequenceRecord`.

    ``sequences`` picks which sequences' data to embed (default: the first few, see the
    module docstring); ``top_k`` how many predictions per cell the hover shows.
    """
    if isinstance(source, (str, os.PathLike)):
        with Trace.open(source) as trace:
            return view(trace, sequences, top_k)
    if isinstance(source, SequenceRecord):
        return _record_view(source, top_k)
    trace = source
    name = Path(trace.path).name
    n = len(trace)
    chosen = (_checked(sequences, n, name) if sequences is not None
              else default_sequences(trace.row_counts, trace.metadata.num_layers))
    data = {
        "summary": summary_payload(trace, chosen, name),
        "sequences": [sequence_payload(trace[i], trace.metadata, trace.token_text, top_k) for i in chosen],
    }
    return TraceView(data, _summary_line(name, data), f"{name} - entropylens")


def _record_view(record: SequenceRecord, top_k: int) -> TraceView:
    """One sequence, with its trace's names where it was read from one (``record.source``)."""
    trace = record.source
    metadata = getattr(trace, "metadata", None)
    token_text = getattr(trace, "token_text", None)
    payload = sequence_payload(record, metadata, token_text, top_k)
    name = Path(trace.path).name if trace is not None else "sequence"
    layers = record.entropy.shape[1]
    vocab = metadata.vocab_size if metadata is not None else 0
    summary = {
        "name": name, "model": metadata.model_name if metadata else "", "lens": metadata.lens_kind if metadata else "logit",
        "lensName": str(metadata.lens.get("name", "")) if metadata else "", "sublayers": bool(metadata and metadata.sublayers),
        "vocabSize": int(vocab), "maxEntropy": math.log(max(vocab, 2)) if vocab else None, "sequences": 1, "tokens": len(record.token_ids),
        "layers": int(layers), "layerNames": payload["layerNames"], "layerKinds": payload["layerKinds"],
        "profileRows": 0, "profileStarts": [], "profiles": "", "shown": [payload["index"]],
    }
    data = {"summary": summary, "sequences": [payload]}
    return TraceView(data, _summary_line(name, data), f"{name} sequence {record.index} - entropylens")
