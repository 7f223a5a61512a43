"""Append sequences to a trace file: :class:`TraceWriter`."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping, Sequence

import h5py
import numpy as np

from ..errors import TraceError
from .schema import (
    INDEX_COLUMNS,
    INDEX_DTYPES,
    ROW_CHUNK,
    SCHEMA_VERSION,
    STATUS_ABANDONED,
    STATUS_COMPLETE,
    SequenceRecord,
    LOGIT_LENS,
    TraceMetadata,
    COMPRESSION,
    check_is_trace,
    now_utc,
    read_metadata,
    write_metadata_attrs,
)
from .locking import WriterLock
from .rows import append_index, row_data, sequence_meta
from .storage import (
    EncodedStrings,
    SpaceReservation,
    extend_column,
    append_strings,
    create_column,
    create_string_column,
    open_h5,
    UncleanFile,
    write_budget,
    write_error,
    write_new_strings,
)

if TYPE_CHECKING:  # pragma: no cover
    from .live import LiveBatch


class TraceWriter:
    """Append sequences to a trace file; every :meth:`write` is committed and flushed.

    Opening an existing trace appends to it after checking that it was recorded with the
    same model and lens settings. A trace left behind by a killed writer is recovered
    first: its complete sequences are copied into a fresh file, partial data is dropped.
    """

    #: Rewrites a file whose lock the caller holds, keeping its readable sequences (recovery on
    #: open, compaction on close). Recovery reads with the reader, which the writer must not
    #: need, so the package wires :func:`.recovery.rewrite_locked` in (``trace/__init__.py``).
    rewrite_locked: ClassVar[Callable[[Path], int]]

    def __init__(self, path: str | os.PathLike, metadata: TraceMetadata,
                 vocabulary: Sequence[str] | EncodedStrings | None = None):
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
        self._went_live = False
        try:
            self.rewrite_locked(self.path)
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
        return self._append_run({"started_utc": now_utc(), **settings})

    def _append_run(self, meta: Mapping[str, Any]) -> int:
        runs = self._writable()["runs"]
        run = int(runs["meta_end"].shape[0])
        encoded = json.dumps(dict(meta), default=str)
        with self._committing([runs["meta_bytes"], runs["meta_end"]], len(encoded.encode()) + 8):
            append_strings(runs, "meta", [encoded])
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
                **row_data(records, L, A)}
        texts = [t for r in records for t in r.token_texts]
        metas = [sequence_meta(r) for r in records]
        new_bytes = sum(a.nbytes for a in data.values()) + sum(len(t.encode()) + 8 for t in texts + metas)
        new_bytes += len(records) * (L * 4 + 64)
        touched = [*tokens.values(), *rows.values(), *seqs.values()]
        with self._committing(touched, new_bytes):
            extend_column(tokens["id"], data.pop("id"))
            append_strings(tokens, "text", texts)
            for name, values in data.items():
                extend_column(rows[name], values)
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
            first_index = append_index(seqs, records, token_starts, row_starts, statuses, metas)
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
            write_metadata_attrs(f, m)
            L, k, A = m.num_layers, m.top_k, len(m.renyi_alphas)
            tokens = f.create_group("tokens")
            create_column(tokens, "id", np.int32, (), 4096)
            create_string_column(tokens, "text")
            rows = f.create_group("rows")
            create_column(rows, "entropy", np.float32, (L,), ROW_CHUNK)
            create_column(rows, "topk_id", np.int32, (L, k), ROW_CHUNK)
            create_column(rows, "topk_prob", np.float32, (L, k), ROW_CHUNK)
            create_column(rows, "target_prob", np.float32, (L,), ROW_CHUNK)
            create_column(rows, "target_rank", np.int32, (L,), ROW_CHUNK)
            create_column(rows, "output_entropy", np.float32, (), 4096)
            create_column(rows, "renyi", np.float32, (A, L), ROW_CHUNK)
            seqs = f.create_group("sequences")
            for name in INDEX_COLUMNS:
                create_column(seqs, name, INDEX_DTYPES[name], (), 1024)
            create_column(seqs, "mean_profile", np.float32, (L,), 1024)
            _create_version_2_columns(f, L)
            create_string_column(seqs, "meta")
            create_string_column(f.create_group("runs"), "meta")
            if self._vocabulary is not None and len(self._vocabulary):
                vocab = f.create_group("vocabulary")
                create_string_column(vocab, "text")
                vocabulary = self._vocabulary
                if not isinstance(vocabulary, EncodedStrings):
                    vocabulary = EncodedStrings.of(vocabulary)
                write_new_strings(vocab, "text", vocabulary)
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
        return open_h5(self.path, "a")

    def _open_existing(self) -> h5py.File:
        try:
            f = open_h5(self.path, "a")
        except UncleanFile:
            # We hold the lock, so the writer that left the file open is gone.
            self.rewrite_locked(self.path)
            f = open_h5(self.path, "a")
        try:
            check_is_trace(f, self.path)
            existing = read_metadata(f, self.path)
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
    f["rows"].create_dataset("kl_final", shape=(0, L), maxshape=(None, L), dtype=np.float32, chunks=(ROW_CHUNK, L),
                             fillvalue=np.float32(np.nan), **COMPRESSION)
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
