"""Sequence records as stored columns: the rows, the index entries, the per-sequence metadata.

Shared by the two ways a sequence reaches a file, :class:`~.writer.TraceWriter` (all at once)
and :class:`~.live.LiveBatch` (growing while it is generated), so both write the same bytes.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import h5py
import numpy as np

from .schema import SequenceRecord
from .storage import append_strings, extend_column

__all__ = ["row_data", "sequence_meta", "append_index", "mean_generated_profile"]


def _kl_final(r: SequenceRecord, L: int) -> np.ndarray:
    return np.full((r.n_rows, L), np.nan, np.float32) if r.kl_final is None else np.asarray(r.kl_final)


def row_data(records: Sequence[SequenceRecord], L: int, A: int) -> dict[str, np.ndarray]:
    """The per-row columns of ``records``, concatenated, as stored under ``/rows``."""
    return {
        "entropy": np.concatenate([r.entropy for r in records]).astype(np.float32),
        "topk_id": np.concatenate([r.topk_ids for r in records]).astype(np.int32),
        "topk_prob": np.concatenate([r.topk_probs for r in records]).astype(np.float32),
        "target_prob": np.concatenate([r.target_prob for r in records]).astype(np.float32),
        "target_rank": np.concatenate([r.target_rank for r in records]).astype(np.int32),
        "output_entropy": np.concatenate([r.output_entropy for r in records]).astype(np.float32),
        "renyi": np.concatenate([r.renyi.reshape(r.n_rows, A, L) for r in records]).astype(np.float32),
        "kl_final": np.concatenate([_kl_final(r, L) for r in records]).astype(np.float32),
    }


def sequence_meta(r: SequenceRecord, **extra: Any) -> str:
    return json.dumps({"prompt_text": r.prompt_text, "labels": dict(r.labels), "key": r.key, **extra},
                      ensure_ascii=False)


def append_index(seqs: h5py.Group, records: Sequence[SequenceRecord], token_starts: Sequence[int],
                  row_starts: Sequence[int], statuses: Sequence[int], metas: Sequence[str]) -> int:
    """Append the index entries of ``records``; returns the first one's index. The metadata goes
    last: readers count an entry only once it is there."""
    first_index = int(seqs["token_start"].shape[0])
    extend_column(seqs["token_start"], np.asarray(token_starts, dtype=np.int64))
    extend_column(seqs["token_count"], np.asarray([len(r.token_ids) for r in records], dtype=np.int32))
    extend_column(seqs["prompt_length"], np.asarray([r.prompt_length for r in records], dtype=np.int32))
    extend_column(seqs["row_start"], np.asarray(row_starts, dtype=np.int64))
    extend_column(seqs["row_count"], np.asarray([r.n_rows for r in records], dtype=np.int32))
    extend_column(seqs["run"], np.asarray([r.run for r in records], dtype=np.int32))
    profiles = np.stack([mean_generated_profile(r) for r in records]).astype(np.float32)
    extend_column(seqs["mean_profile"], profiles)
    extend_column(seqs["mean_entropy"], profiles.mean(axis=1))
    extend_column(seqs["status"], np.asarray(statuses, dtype=np.int8))
    append_strings(seqs, "meta", metas)
    return first_index


def mean_generated_profile(r: SequenceRecord) -> np.ndarray:
    """Mean entropy per layer over generated rows (over all rows if none was generated; NaN without rows)."""
    gen = r.entropy[r.is_generated]
    if len(gen):
        return gen.mean(axis=0)
    return r.entropy.mean(axis=0) if r.n_rows else np.full(r.entropy.shape[1], np.nan, np.float32)

