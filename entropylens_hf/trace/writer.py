"""Append sequences to a trace file: :class:`TraceWriter`."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import h5py
import numpy as np

from ..errors import TraceError
from .schema import (
    _INDEX_COLUMNS,
    _INDEX_DTYPES,
    _ROW_CHUNK,
    SCHEMA_VERSION,
    STATUS_ABANDONED,
    STATUS_COMPLETE,
    SequenceRecord,
    LOGIT_LENS,
    TraceMetadata,
    _COMPRESSION,
    _check_is_trace,
    _now_utc,
    _read_metadata,
    _write_metadata_attrs,
)
from .locking import WriterLock
from .storage import (
    SpaceReservation,
    _append,
    _append_strings,
    _create_column,
    _create_string_column,
    _open_h5,
    _UncleanFile,
    write_budget,
    write_error,
)

if TYPE_CHECKING:  # pragma: no cover
    from .live import LiveBatch


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
        self._file: h5py.File | None = None
        self._space: SpaceReservation | None = None
        self._failed: TraceError | None = None
        self._live: "LiveBatch | None" = None
        self._went_live = False  # live writes leave superseded chunk versions behind: compact on close
        if not self.path.parent.is_dir():
            raise TraceError(f"{self.path}: the folder {self.path.parent} does not exist")
        # The lock comes before anything else: a live writer's file is never touched, and a
        # file left open by a killed writer is recovered only once the lock proves it dead.
        self._lock = WriterLock(self.path)
        self._lock.acquire()
        try:
            if os.path.lexists(self.path):
                self._file = self._open_existing()
            else:
                self._file = self._create()
            self._file.swmr_mode = True
            self._space = SpaceReservation(self.path)
        except BaseException:
            self.close()
            raise

    # -- lifecycle
    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the file, then release the lock (safe to call twice).

        Live sequences still open are marked abandoned first (status 2, their rows kept).
        """
        try:
            if self._live is not None:
                self._live.abandon()
            if self._file is not None and self._file.id.valid:
                if self._failed is None:
                    self._file.flush()
                self._file.close()
        except (OSError, RuntimeError):
            if self._failed is None:
                raise
        finally:
            self._file = None
            if self._space is not None:
                self._space.close()
                self._space = None
            try:
                if self._went_live and self._failed is None:
                    self._compact()
            finally:
                self._lock.release()

    def _compact(self) -> None:
        """Rewrite the file without the space live writes left unused (still under the lock).

        Why: each live write recompresses the last, partly filled chunk of every row column
        and HDF5 does not reuse the superseded versions, so a live file is several times the
        size of the same data written at once. Readers following the file reopen the fresh
        copy on their next refresh. If compacting fails (no room for the copy), the live
        file stays as it is, complete and readable.
        """
        from .recovery import _recover

        self._went_live = False
        try:
            _recover(self.path)
        except (OSError, TraceError) as exc:
            warnings.warn(f"{self.path}: left uncompacted ({exc})", stacklevel=3)

    @property
    def num_sequences(self) -> int:
        return int(self._writable()["sequences/token_start"].shape[0])

    def _writable(self) -> h5py.File:
        if self._failed is not None:
            raise TraceError(f"{self.path}: this writer stopped after a failed write ({self._failed}); open a new one")
        if self._file is None:
            raise TraceError(f"{self.path}: the writer is closed")
        return self._file

    # -- writing
    def begin_run(self, settings: Mapping[str, Any]) -> int:
        """Register one ``generate()`` call's settings; returns its run id."""
        return self._append_run({"started_utc": _now_utc(), **settings})

    def _append_run(self, meta: Mapping[str, Any]) -> int:
        runs = self._writable()["runs"]
        run = int(runs["meta_end"].shape[0])
        encoded = json.dumps(dict(meta), default=str)
        with self._committing([runs["meta_bytes"], runs["meta_end"]], len(encoded.encode()) + 8):
            _append_strings(runs, "meta", [encoded])
            self._file.flush()
        return run

    def write(self, records: Sequence[SequenceRecord]) -> list[int]:
        """Append whole sequences and flush; returns their indices in the file.

        A record with ``complete=False`` (an interrupted or recovered one) is stored as
        abandoned (status 2), which readers show only with ``partial=True``.

        Disk space for the whole batch is reserved first: a batch that does not fit raises
        :class:`TraceError` ("no space left on device writing ...") before the file is
        touched, and every sequence committed before stays readable.
        """
        if not records:
            return []
        f = self._writable()
        if self._live is not None:
            raise TraceError(f"{self.path}: live sequences are being written; finish or abandon them before write()")
        L, k, A = self.metadata.num_layers, self.metadata.top_k, len(self.metadata.renyi_alphas)
        for r in records:
            self._check_record(r, L, k, A)

        tokens, rows, seqs = f["tokens"], f["rows"], f["sequences"]
        token_base = int(tokens["id"].shape[0])
        row_base = int(rows["entropy"].shape[0])
        data = {"id": np.concatenate([r.token_ids for r in records]).astype(np.int32),
                **_row_data(records, L, A)}
        texts = [t for r in records for t in r.token_texts]
        metas = [_sequence_meta(r) for r in records]
        new_bytes = sum(a.nbytes for a in data.values()) + sum(len(t.encode()) + 8 for t in texts + metas)
        new_bytes += len(records) * (L * 4 + 64)
        touched = [*tokens.values(), *rows.values(), *seqs.values()]
        with self._committing(touched, new_bytes):
            _append(tokens["id"], data.pop("id"))
            _append_strings(tokens, "text", texts)
            for name, values in data.items():
                _append(rows[name], values)
            # Data first, flushed; only then the index that makes the sequences visible.
            f.flush()

            token_starts, row_starts = [], []
            t, rw = token_base, row_base
            for r in records:
                token_starts.append(t)
                row_starts.append(rw)
                t += len(r.token_ids)
                rw += r.n_rows
            statuses = [STATUS_COMPLETE if r.complete else STATUS_ABANDONED for r in records]
            first_index = _append_index(seqs, records, token_starts, row_starts, statuses, metas)
            f.flush()
        return list(range(first_index, first_index + len(records)))

    def begin_live(self, records: Sequence[SequenceRecord], *, extra: int, token_bytes: int) -> "LiveBatch":
        """Append sequences that are still being generated (status 0); they grow in place.

        ``records`` hold what is known when the call starts (the prompt and its rows); each
        gets room for ``extra`` more rows and tokens, ``token_bytes`` bytes of text per token at
        most. Returns the :class:`~.live.LiveBatch` that grows, finishes or abandons them. One
        live batch at a time, and no :meth:`write` while it is open: in-progress sequences stay
        at the tail of the index, so complete ones never change places.
        """
        from .live import LiveBatch

        if self._live is not None:
            raise TraceError(f"{self.path}: a live batch is already open; finish or abandon it first")
        self._live = LiveBatch(self, records, extra, token_bytes)
        self._went_live = True
        return self._live

    @contextlib.contextmanager
    def _committing(self, datasets: Sequence[h5py.Dataset], new_bytes: int) -> Iterator[None]:
        """Reserve disk space for a write, then run it; a failure becomes one :class:`TraceError`.

        A failed reservation leaves the file untouched and the writer usable. A failure
        inside HDF5 stops the writer: the file is closed without another write, and a
        reader still sees every sequence committed before.
        """
        try:
            self._space.reserve(write_budget(datasets, new_bytes))
        except OSError as exc:
            raise write_error(self.path, exc) from None
        try:
            yield
        except (OSError, RuntimeError) as exc:
            self._failed = write_error(self.path, exc)
            raise self._failed from None
        finally:
            self._space.release()

    def _check_record(self, r: SequenceRecord, L: int, k: int, A: int) -> None:
        n = r.n_rows
        problems = []
        if r.entropy.shape != (n, L):
            problems.append(f"entropy {r.entropy.shape} != ({n}, {L})")
        if r.topk_ids.shape != (n, L, k) or r.topk_probs.shape != (n, L, k):
            problems.append(f"top-k {r.topk_ids.shape} != ({n}, {L}, {k})")
        if r.renyi.size != n * A * L:
            problems.append(f"renyi {r.renyi.shape} != ({n}, {A}, {L})")
        if r.kl_final is not None and np.shape(r.kl_final) != (n, L):
            problems.append(f"kl_final {np.shape(r.kl_final)} != ({n}, {L})")
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
        try:
            f = h5py.File(tmp, "w", libver="latest", locking=False)
        except OSError as exc:
            raise write_error(self.path, exc) from None
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
            _create_version_2_columns(f, L)
            _create_string_column(seqs, "meta")
            _create_string_column(f.create_group("runs"), "meta")
            if self._vocabulary:
                vocab = f.create_group("vocabulary")
                _create_string_column(vocab, "text")
                _append_strings(vocab, "text", list(self._vocabulary))
            f.flush()
            f.close()
            os.replace(tmp, self.path)
        except BaseException as exc:
            try:
                f.close()
            except (OSError, RuntimeError):
                pass
            tmp.unlink(missing_ok=True)
            if isinstance(exc, (OSError, RuntimeError)):
                raise write_error(self.path, exc) from None
            raise
        return _open_h5(self.path, "a")

    def _open_existing(self) -> h5py.File:
        try:
            f = _open_h5(self.path, "a")
        except _UncleanFile:
            # We hold the lock, so the writer that left the file open is gone.
            from .recovery import _recover

            _recover(self.path)
            f = _open_h5(self.path, "a")
        try:
            _check_is_trace(f, self.path)
            existing = _read_metadata(f, self.path)
            _check_compatible(self.path, existing, self.metadata)
            if existing.schema_version < SCHEMA_VERSION:
                upgrade_in_place(f)
        except BaseException:
            f.close()
            raise
        return f


def _check_compatible(path: Path, existing: TraceMetadata, new: TraceMetadata) -> None:
    diffs = settings_differences(existing, new)
    if diffs:
        raise TraceError(
            f"{path}: cannot append, the trace was recorded with different settings ("
            + "; ".join(diffs)
            + "); write to a new file or use the same settings"
        )


def settings_differences(existing: TraceMetadata, new: TraceMetadata) -> list[str]:
    """``["top_k 10 vs 5", ...]``: what keeps ``new`` from joining the sequences of ``existing``
    (appending to a file, or one more shard of a run folder)."""
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
    if existing.lens_kind != new.lens_kind or existing.lens.get("sha256", "") != new.lens.get("sha256", ""):
        diffs.append(f"lens {_lens_text(existing)} vs {_lens_text(new)}")
    if existing.layer_kinds != new.layer_kinds:
        diffs.append(f"{_rows_text(existing)} vs {_rows_text(new)}")
    return diffs



def _lens_text(m: TraceMetadata) -> str:
    name = m.lens.get("name") or m.lens.get("sha256", "")[:12]
    return f"{m.lens_kind}" + (f" ({name})" if name else "")


def _rows_text(m: TraceMetadata) -> str:
    return "sub-layer rows" if m.sublayers else "whole-layer rows"


def _create_version_2_columns(f: h5py.File, L: int) -> None:
    """The datasets version 2 added. Their fill values are what a version-1 file means:
    KL not recorded (NaN), every sequence complete."""
    f["rows"].create_dataset("kl_final", shape=(0, L), maxshape=(None, L), dtype=np.float32, chunks=(_ROW_CHUNK, L),
                             fillvalue=np.float32(np.nan), **_COMPRESSION)
    f["sequences"].create_dataset("status", shape=(0,), maxshape=(None,), dtype=np.int8, chunks=(1024,),
                                  fillvalue=np.int8(STATUS_COMPLETE))


def upgrade_in_place(f: h5py.File) -> None:
    """Turn an open version-1 trace into version 2 (before SWMR writing starts).

    Adds the version-2 datasets sized for the sequences already there; their fill values
    stand for the old rows, so no data is written for them and nothing recorded changes.
    """
    L = int(f.attrs["num_layers"])
    _create_version_2_columns(f, L)
    f["rows/kl_final"].resize(f["rows/entropy"].shape[0], axis=0)
    f["sequences/status"].resize(f["sequences/token_start"].shape[0], axis=0)
    f.attrs["lens"] = json.dumps(dict(LOGIT_LENS))
    f.attrs["layer_kinds"] = json.dumps(["emb"] + ["layer"] * (L - 1))
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.flush()


def _kl_final(r: SequenceRecord, L: int) -> np.ndarray:
    return np.full((r.n_rows, L), np.nan, np.float32) if r.kl_final is None else np.asarray(r.kl_final)


def _row_data(records: Sequence[SequenceRecord], L: int, A: int) -> dict[str, np.ndarray]:
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


def _sequence_meta(r: SequenceRecord, **extra: Any) -> str:
    return json.dumps({"prompt_text": r.prompt_text, "labels": dict(r.labels), "key": r.key, **extra},
                      ensure_ascii=False)


def _append_index(seqs: h5py.Group, records: Sequence[SequenceRecord], token_starts: Sequence[int],
                  row_starts: Sequence[int], statuses: Sequence[int], metas: Sequence[str]) -> int:
    """Append the index entries of ``records``; returns the first one's index. The metadata goes
    last: readers count an entry only once it is there."""
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
    _append(seqs["status"], np.asarray(statuses, dtype=np.int8))
    _append_strings(seqs, "meta", metas)
    return first_index


def _mean_generated_profile(r: SequenceRecord) -> np.ndarray:
    """Mean entropy per layer over generated rows (over all rows if none was generated; NaN without rows)."""
    gen = r.entropy[r.is_generated]
    if len(gen):
        return gen.mean(axis=0)
    return r.entropy.mean(axis=0) if r.n_rows else np.full(r.entropy.shape[1], np.nan, np.float32)

