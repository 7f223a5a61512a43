"""Append sequences to a trace file: :class:`TraceWriter`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from ..errors import TraceError
from .schema import (
    _INDEX_COLUMNS,
    _INDEX_DTYPES,
    _ROW_CHUNK,
    SequenceRecord,
    TraceMetadata,
    _check_is_trace,
    _now_utc,
    _read_metadata,
    _write_metadata_attrs,
)
from .storage import (
    _append,
    _append_strings,
    _create_column,
    _create_string_column,
    _open_h5,
    _read_string_column,
    _UncleanFile,
)

class TraceWriter:
    """Append sequences to a trace file; every :meth:`write` is committed and flushed.

    Opening an existing trace appends to it after checking that it was recorded with the
    same model and lens settings. A trace left behind by a killed writer is recovered
    first: its complete sequences are copied into a fresh file, partial data is dropped.
    """

    def __init__(self, path: str | os.PathLike, metadata: TraceMetadata, vocabulary: Sequence[str] | None = None):
        self.path = Path(path)
        self.metadata = metadata
        self._vocabulary = vocabulary
        if self.path.exists():
            self._file = self._open_existing()
        else:
            if not self.path.parent.exists():
                raise TraceError(f"{self.path}: the folder {self.path.parent} does not exist")
            self._file = self._create()
        self._file.swmr_mode = True

    # -- lifecycle
    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None and self._file.id.valid:
            self._file.flush()
            self._file.close()
        self._file = None

    @property
    def num_sequences(self) -> int:
        return int(self._file["sequences/token_start"].shape[0])

    def existing_keys(self) -> set[str]:
        """The ``key`` of every sequence in the file, for resuming a prompt list."""
        n = self.num_sequences
        return {json.loads(m).get("key", "") for m in _read_string_column(self._file["sequences"], "meta", 0, n)}

    # -- writing
    def begin_run(self, settings: Mapping[str, Any]) -> int:
        """Register one ``generate()`` call's settings; returns its run id."""
        return self._append_run({"started_utc": _now_utc(), **settings})

    def _append_run(self, meta: Mapping[str, Any]) -> int:
        runs = self._file["runs"]
        run = int(runs["meta_end"].shape[0])
        _append_strings(runs, "meta", [json.dumps(dict(meta), default=str)])
        self._file.flush()
        return run

    def write(self, records: Sequence[SequenceRecord]) -> list[int]:
        """Append complete sequences and flush; returns their indices in the file."""
        if not records:
            return []
        f = self._file
        L, k, A = self.metadata.num_layers, self.metadata.top_k, len(self.metadata.renyi_alphas)
        for r in records:
            self._check_record(r, L, k, A)

        tokens, rows, seqs = f["tokens"], f["rows"], f["sequences"]
        token_base = int(tokens["id"].shape[0])
        row_base = int(rows["entropy"].shape[0])

        _append(tokens["id"], np.concatenate([r.token_ids for r in records]).astype(np.int32))
        _append_strings(tokens, "text", [t for r in records for t in r.token_texts])
        _append(rows["entropy"], np.concatenate([r.entropy for r in records]).astype(np.float32))
        _append(rows["topk_id"], np.concatenate([r.topk_ids for r in records]).astype(np.int32))
        _append(rows["topk_prob"], np.concatenate([r.topk_probs for r in records]).astype(np.float32))
        _append(rows["target_prob"], np.concatenate([r.target_prob for r in records]).astype(np.float32))
        _append(rows["target_rank"], np.concatenate([r.target_rank for r in records]).astype(np.int32))
        _append(rows["output_entropy"], np.concatenate([r.output_entropy for r in records]).astype(np.float32))
        _append(rows["renyi"], np.concatenate([r.renyi.reshape(r.n_rows, A, L) for r in records]).astype(np.float32))
        # Data first, flushed; only then the index that makes the sequences visible.
        f.flush()

        token_starts, row_starts = [], []
        t, rw = token_base, row_base
        for r in records:
            token_starts.append(t)
            row_starts.append(rw)
            t += len(r.token_ids)
            rw += r.n_rows
        first_index = int(seqs["token_start"].shape[0])
        _append(seqs["token_start"], np.asarray(token_starts, dtype=np.int64))
        _append(seqs["token_count"], np.asarray([len(r.token_ids) for r in records], dtype=np.int32))
        _append(seqs["prompt_length"], np.asarray([r.prompt_length for r in records], dtype=np.int32))
        _append(seqs["row_start"], np.asarray(row_starts, dtype=np.int64))
        _append(seqs["row_count"], np.asarray([r.n_rows for r in records], dtype=np.int32))
        _append(seqs["run"], np.asarray([r.run for r in records], dtype=np.int32))
        profiles = np.stack([_mean_generated_profile(r) for r in records]).astype(np.float32)
        _append(seqs["mean_profile"], profiles)
        _append(seqs["mean_entropy"], profiles.mean(axis=1))
        metas = [
            json.dumps({"prompt_text": r.prompt_text, "labels": dict(r.labels), "key": r.key}, ensure_ascii=False)
            for r in records
        ]
        _append_strings(seqs, "meta", metas)
        f.flush()
        return list(range(first_index, first_index + len(records)))

    def _check_record(self, r: SequenceRecord, L: int, k: int, A: int) -> None:
        n = r.n_rows
        problems = []
        if r.entropy.shape != (n, L):
            problems.append(f"entropy {r.entropy.shape} != ({n}, {L})")
        if r.topk_ids.shape != (n, L, k) or r.topk_probs.shape != (n, L, k):
            problems.append(f"top-k {r.topk_ids.shape} != ({n}, {L}, {k})")
        if r.renyi.size != n * A * L:
            problems.append(f"renyi {r.renyi.shape} != ({n}, {A}, {L})")
        if len(r.token_texts) != len(r.token_ids):
            problems.append("token_texts and token_ids differ in length")
        if n > len(r.token_ids) - 1 or n < 1:
            problems.append(f"{n} rows for {len(r.token_ids)} tokens")
        if problems:
            raise TraceError(f"{self.path}: cannot write sequence: " + "; ".join(problems))

    # -- file creation / reopening
    def _create(self) -> h5py.File:
        m = self.metadata
        tmp = self.path.with_name(self.path.name + ".partial")
        f = h5py.File(tmp, "w", libver="latest")
        try:
            _write_metadata_attrs(f, m)
            L, k, A = m.num_layers, m.top_k, len(m.renyi_alphas)
            tokens = f.create_group("tokens")
            _create_column(tokens, "id", np.int32, (), 4096)
            _create_string_column(tokens, "text")
            rows = f.create_group("rows")
            _create_column(rows, "entropy", np.float32, (L,), _ROW_CHUNK)
            _create_column(rows, "topk_id", np.int32, (L, k), _ROW_CHUNK)
            _create_column(rows, "topk_prob", np.float32, (L, k), _ROW_CHUNK)
            _create_column(rows, "target_prob", np.float32, (L,), _ROW_CHUNK)
            _create_column(rows, "target_rank", np.int32, (L,), _ROW_CHUNK)
            _create_column(rows, "output_entropy", np.float32, (), 4096)
            _create_column(rows, "renyi", np.float32, (A, L), _ROW_CHUNK)
            seqs = f.create_group("sequences")
            for name in _INDEX_COLUMNS:
                _create_column(seqs, name, _INDEX_DTYPES[name], (), 1024)
            _create_column(seqs, "mean_profile", np.float32, (L,), 1024)
            _create_string_column(seqs, "meta")
            _create_string_column(f.create_group("runs"), "meta")
            if self._vocabulary:
                vocab = f.create_group("vocabulary")
                _create_string_column(vocab, "text")
                _append_strings(vocab, "text", list(self._vocabulary))
            f.flush()
            f.close()
            os.replace(tmp, self.path)
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
        return h5py.File(self.path, "a", libver="latest")

    def _open_existing(self) -> h5py.File:
        try:
            f = _open_h5(self.path, "a")
        except _UncleanFile:
            from .recovery import recover_trace

            recover_trace(self.path)
            f = _open_h5(self.path, "a")
        try:
            _check_is_trace(f, self.path)
            existing = _read_metadata(f)
            _check_compatible(self.path, existing, self.metadata)
        except BaseException:
            f.close()
            raise
        return f


def _check_compatible(path: Path, existing: TraceMetadata, new: TraceMetadata) -> None:
    diffs = []
    if existing.model_name != new.model_name:
        diffs.append(f"model {existing.model_name!r} vs {new.model_name!r}")
    if existing.num_layers != new.num_layers:
        diffs.append(f"{existing.num_layers} vs {new.num_layers} lens layers")
    if existing.vocab_size != new.vocab_size:
        diffs.append(f"vocabulary {existing.vocab_size} vs {new.vocab_size}")
    if existing.top_k != new.top_k:
        diffs.append(f"top_k {existing.top_k} vs {new.top_k}")
    if tuple(existing.renyi_alphas) != tuple(new.renyi_alphas):
        diffs.append(f"Rényi orders {list(existing.renyi_alphas)} vs {list(new.renyi_alphas)}")
    if diffs:
        raise TraceError(
            f"{path}: cannot append, the trace was recorded with different settings ("
            + "; ".join(diffs)
            + "); write to a new file or use the same settings"
        )



def _mean_generated_profile(r: SequenceRecord) -> np.ndarray:
    """Mean entropy per layer over generated rows (over all rows if none was generated)."""
    gen = r.entropy[r.is_generated]
    return gen.mean(axis=0) if len(gen) else r.entropy.mean(axis=0)

