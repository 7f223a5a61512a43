"""What the HTML view needs of a trace, as compact JSON: typed arrays in base64, texts once.

The browser side (``static/lens_view.js``) decodes it; nothing here knows about HTML. Sizes stay
bounded: per lens cell the view keeps the entropy, the target's probability and rank, KL to the
final layer where recorded (float32 / int32, 4 bytes each) and the first ``top_k`` predictions
(a 2-byte index into a table of the token texts the sequence uses, a 2-byte probability), so a
cell costs 16-20 bytes plus 4 per shown prediction before base64 (x 4/3). A trace's summary
reads only the per-sequence index (mean profiles, lengths), never the sequences.
"""

from __future__ import annotations

import base64
from typing import Any, Callable, Sequence

import numpy as np

from ..trace import SequenceRecord, TraceMetadata

__all__ = ["DEFAULT_TOP_K", "SUMMARY_ROWS", "sequence_payload", "summary_payload", "encode_array"]

DEFAULT_TOP_K = 5
"""Predictions per cell shown on hover; the file may hold more (``metadata.top_k``)."""
SUMMARY_ROWS = 400
"""At most this many rows in a trace's mean-profile overview; more sequences are averaged in bins."""
_PROB_SCALE = 65535


def encode_array(values: np.ndarray, dtype: str) -> str:
    """Little-endian bytes of ``values`` as ``dtype`` (a numpy type string such as ``"<f4"``), in base64."""
    return base64.b64encode(np.ascontiguousarray(values, dtype=np.dtype(dtype)).tobytes()).decode("ascii")


def _float32(values: np.ndarray) -> str:
    return encode_array(values, "<f4")


def layer_labels(metadata: TraceMetadata | None, n_layers: int) -> tuple[list[str], list[str]]:
    """Layer names and kinds ("emb", "layer", "attn", "mlp") of the rows, from the file or by position."""
    if metadata is not None and len(metadata.layer_names) == n_layers:
        return list(metadata.layer_names), list(metadata.layer_kinds)
    return ["embeddings", *(f"layer {i}" for i in range(1, n_layers))], ["emb", *["layer"] * (n_layers - 1)]


def _token_table(record: SequenceRecord, top_k: int, token_text: Callable[[int], str | None]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Texts of the distinct ids the view shows, and the top-k and target ids as indices into them."""
    shown = np.asarray(record.topk_ids[:, :, :top_k], dtype=np.int64)
    targets = np.asarray(record.target_ids, dtype=np.int64)
    ids, inverse = np.unique(np.concatenate([shown.ravel(), targets]), return_inverse=True)
    texts = []
    for token_id in ids.tolist():
        text = token_text(token_id)
        texts.append(text if text is not None else f"#{token_id}")
    local = inverse[: shown.size].reshape(shown.shape)
    return texts, local, inverse[shown.size :]


def _ids(values: np.ndarray, table_size: int) -> dict[str, str]:
    dtype = "<u2" if table_size <= 65536 else "<u4"
    return {"dtype": dtype[1:], "data": encode_array(values.ravel(), dtype)}


def sequence_payload(
    record: SequenceRecord,
    metadata: TraceMetadata | None = None,
    token_text: Callable[[int], str | None] | None = None,
    top_k: int = DEFAULT_TOP_K,
) -> dict[str, Any]:
    """One sequence's view data: tokens, and per (row, layer) its statistics and top predictions.

    ``token_text(id)`` names top-k ids (``Trace.token_text``); without it the ids are shown as
    ``#id``, except tokens of the sequence itself. Arrays are row-major ``[rows, layers(, k)]``.
    """
    n_rows, n_layers = record.entropy.shape
    k = max(0, min(int(top_k), record.topk_ids.shape[-1] if record.topk_ids.ndim == 3 else 0))
    own = {int(t): s for t, s in zip(record.token_ids.tolist(), record.token_texts)}

    def text_of(token_id: int) -> str | None:
        text = token_text(token_id) if token_text is not None else None
        return text if text is not None else own.get(token_id)

    texts, topk_local, target_local = _token_table(record, k, text_of)
    names, kinds = layer_labels(metadata, n_layers)
    kl = record.kl_final
    has_kl = kl is not None and bool(np.isfinite(kl).any())
    probs = np.clip(np.nan_to_num(np.asarray(record.topk_probs[:, :, :k], np.float64)), 0, 1)
    return {
        "index": int(record.index),
        "key": record.key,
        "promptText": record.prompt_text,
        "labels": dict(record.labels),
        "complete": bool(record.complete),
        "tokens": list(record.token_texts),
        "promptLength": int(record.prompt_length),
        "firstTarget": int(record.first_target),
        "rows": int(n_rows),
        "layers": int(n_layers),
        "layerNames": names,
        "layerKinds": kinds,
        "topK": k,
        "table": texts,
        "entropy": _float32(record.entropy),
        "targetProb": _float32(record.target_prob),
        "targetRank": encode_array(record.target_rank, "<i4"),
        "target": _ids(target_local, len(texts)),
        "kl": _float32(kl) if has_kl else None,
        "topkIds": _ids(topk_local, len(texts)),
        "topkProbs": encode_array(np.rint(probs * _PROB_SCALE), "<u2"),
        "probScale": _PROB_SCALE,
    }


def _binned(profiles: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean profiles averaged in at most ``rows`` consecutive bins; returns them and each bin's first index."""
    n = profiles.shape[0]
    if n <= rows:
        return profiles, np.arange(n)
    starts = np.linspace(0, n, rows + 1).astype(int)
    means = np.stack([np.nanmean(profiles[a:b], axis=0) for a, b in zip(starts[:-1], starts[1:])])
    return means, starts[:-1]


def summary_payload(trace: Any, shown: Sequence[int], name: str) -> dict[str, Any]:
    """A trace's overview from its index only: model, lens, sizes and every sequence's mean profile."""
    m = trace.metadata
    n = len(trace)
    profiles = np.asarray(trace.mean_profiles, np.float64) if n else np.zeros((0, m.num_layers))
    binned, starts = _binned(np.nan_to_num(profiles, nan=0.0), SUMMARY_ROWS)
    names, kinds = layer_labels(m, m.num_layers)
    return {
        "name": name,
        "model": m.model_name,
        "lens": m.lens_kind,
        "lensName": str(m.lens.get("name", "")),
        "sublayers": bool(m.sublayers),
        "vocabSize": int(m.vocab_size),
        "maxEntropy": float(np.log(max(m.vocab_size, 2))),
        "sequences": n,
        "tokens": int(trace.sequence_lengths.sum()) if n else 0,
        "layers": int(m.num_layers),
        "layerNames": names,
        "layerKinds": kinds,
        "profileRows": int(binned.shape[0]),
        "profileStarts": [int(s) for s in starts],
        "profiles": _float32(binned),
        "shown": [int(i) for i in shown],
    }
