"""What a trace's lens rows are and which lens read them. Plain Python, no Qt.

A schema-2 trace says per lens row what it is (``metadata.layer_kinds``: "emb", "layer", or,
in a sub-layer trace, "attn" = after layer k's attention and "mlp" = after the whole layer k)
and which lens read it (``metadata.lens``: logit or tuned). The widgets label, separate and
colour rows from these facts only; version-1 files read as a logit lens over whole layers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from entropylens_hf.trace import SequenceRecord, TraceMetadata

__all__ = [
    "STEP_NAMES",
    "row_labels",
    "step_kinds",
    "decoder_boundaries",
    "lens_title",
    "kl_recorded",
    "generated_mean",
]

# How a step into a row of each kind is named in legends.
STEP_NAMES = {"attn": "attention step", "mlp": "MLP step", "layer": "layer step"}


def row_labels(metadata: TraceMetadata) -> tuple[str, ...]:
    """A short label per lens row: ``emb``, ``3`` (whole layer 3), ``3.attn``, ``3.mlp``."""
    labels = []
    for kind, depth in zip(metadata.layer_kinds, metadata.depths):
        k = int(math.ceil(float(depth)))  # k.attn sits at depth k - 0.5
        labels.append("emb" if kind == "emb" else f"{k}.{kind}" if kind in ("attn", "mlp") else str(k))
    return tuple(labels)


def step_kinds(metadata: TraceMetadata) -> tuple[str, ...]:
    """The kind of each step between consecutive rows, ``L - 1`` of them.

    The step into row ``i`` is done by what row ``i`` adds: into ``k.attn`` (from ``k-1.mlp``
    or the embeddings) by layer k's attention, into ``k.mlp`` by its MLP, into a whole-layer
    row by the whole layer.
    """
    return tuple(metadata.layer_kinds[1:])


def decoder_boundaries(metadata: TraceMetadata) -> np.ndarray:
    """Row edges (heatmap y) between decoder layers of a sub-layer trace; empty for whole-layer traces.

    Edge ``i`` lies below row ``i``; one is drawn where row ``i`` starts a new decoder layer
    (after the embeddings and after every ``k.mlp``), so each layer's attn/mlp pair is framed.
    """
    if not metadata.sublayers:
        return np.zeros(0)
    kinds = metadata.layer_kinds
    return np.array([i for i in range(1, len(kinds)) if kinds[i] == "attn"], dtype=float)


def lens_title(metadata: TraceMetadata, path: str | Path | None = None) -> str:
    """``tuned lens (lens.safetensors, sha256 1a2b3c4d) · sub-layers``: which lens made a trace, in one line."""
    lens = dict(metadata.lens)
    details = [Path(str(lens["name"])).name] if lens.get("name") else []  # a lens file: its name
    if lens.get("sha256"):
        details.append(f"sha256 {str(lens['sha256'])[:8]}")
    text = f"{metadata.lens_kind} lens" + (f" ({', '.join(details)})" if details else "")
    if metadata.sublayers:
        text += " · sub-layers"
    return f"{Path(path).name}: {text}" if path is not None else text


def kl_recorded(seq: SequenceRecord) -> bool:
    """True when the trace holds KL-to-final values for this sequence (v1 files and old rows: all NaN)."""
    return bool(np.isfinite(seq.kl_final).any())


def generated_mean(values: np.ndarray, seq: SequenceRecord) -> np.ndarray:
    """Mean of ``values [N, L]`` over the sequence's generated rows (all rows if none), NaN-aware: ``[L]``.

    The same rows as the trace's stored mean profiles; a lens row with no finite value is NaN.
    """
    rows = np.asarray(values[seq.is_generated] if seq.is_generated.any() else values, dtype=np.float64)
    finite = np.isfinite(rows)
    counts = finite.sum(axis=0)
    return np.where(counts > 0, np.where(finite, rows, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan)
