"""Live writing: sequences that grow in the file while they are generated (status 0).

Why a protocol of its own: a trace's row and token columns concatenate sequences, and the
sequences of one ``generate`` call grow side by side. So each gets, when the call starts, a
region reserved at the end of every column, big enough for everything it can still generate
(``extra`` more rows and tokens), and an index entry with status 0 (in progress). Rows and
tokens are then written into the region; only after they are flushed does the entry's
``row_count`` (and ``token_count``) move forward in place, so a reader following the file
(SWMR) never sees a row that is not fully on disk. The end of the call writes the last rows,
then status 1 (complete); an interrupted call writes status 2 (abandoned) and keeps its rows.

Token texts are variable-length bytes addressed by end offsets (``/tokens/text_end``), and a
sequence's first text starts where the slot before its ``token_start`` ends. Each region
therefore has one slot more than it can use, a pad slot whose end offset is the end of the
region's bytes, so the region after it (or the next ordinary append) starts there.

A reader shows an in-progress sequence as its first ``first_target + row_count`` tokens
(``first_target`` is in its metadata): the counts are two datasets, and this way one of them
is enough. Regions that a sequence did not fill stay in the file as unused space (never
written chunks cost nothing; the reader goes by the index); recovery compacts them away.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import TraceError
from .schema import STATUS_ABANDONED, STATUS_COMPLETE, STATUS_IN_PROGRESS, SequenceRecord
from .storage import write_budget, write_error
from .rows import append_index, mean_generated_profile, row_data, sequence_meta

if TYPE_CHECKING:  # pragma: no cover
    from .writer import TraceWriter

__all__ = ["LiveBatch"]


class LiveBatch:
    """The in-progress sequences of one call in a :class:`TraceWriter`'s file; see the module docstring.

    Made by :meth:`TraceWriter.begin_live`. :meth:`update` takes each sequence as generated
    so far (the whole record; what is new in it is written), :meth:`finish` the final records,
    :meth:`abandon` gives up (status 2, rows kept). ``indices`` are the sequences' places in
    the file's index, at its tail.
    """

    def __init__(self, writer: "TraceWriter", records: Sequence[SequenceRecord], extra: int, token_bytes: int):
        self.writer = writer
        self.open = True
        f = writer._writable()
        m = writer.metadata
        self._shape = (m.num_layers, m.top_k, len(m.renyi_alphas))
        for r in records:
            _check_shapes(writer, r, *self._shape)
        # Dataset handles looked up once: h5py's lookups cost more than a small write.
        tokens, rows, seqs = f["tokens"], f["rows"], f["sequences"]
        self._tokens = {name: tokens[name] for name in ("id", "text_bytes", "text_end")}
        self._rows = {name: rows[name] for name in rows}
        self._seqs = {name: seqs[name] for name in ("row_count", "token_count", "mean_profile", "mean_entropy", "status")}
        # Disk-space bound per write: one chunk of every dataset (see storage.write_budget).
        self._chunk_bytes = write_budget([*tokens.values(), *rows.values(), *seqs.values()], 0) // 2
        t, b, n = tokens["id"].shape[0], tokens["text_bytes"].shape[0], rows["entropy"].shape[0]
        self._token_start, self._byte_start, self._row_start = [], [], []
        self._token_room, self._byte_room, self._row_room = [], [], []
        for r in records:
            self._token_start.append(t)
            self._byte_start.append(b)
            self._row_start.append(n)
            self._token_room.append(len(r.token_ids) + extra)
            self._byte_room.append(sum(len(x.encode("utf-8")) for x in r.token_texts) + extra * int(token_bytes))
            self._row_room.append(r.n_rows + extra)
            t, b, n = t + self._token_room[-1] + 1, b + self._byte_room[-1], n + self._row_room[-1]  # + 1: pad slot
        self._tokens_written = [0] * len(records)
        self._bytes_written = [0] * len(records)
        self._rows_written = [0] * len(records)
        metas = [sequence_meta(r, first_target=r.first_target) for r in records]
        with self._committing(records):
            self._tokens["id"].resize(t, axis=0)
            self._tokens["text_end"].resize(t, axis=0)
            self._tokens["text_bytes"].resize(b, axis=0)
            for ds in self._rows.values():
                ds.resize(n, axis=0)
            for i, r in enumerate(records):
                pad = self._token_start[i] + self._token_room[i]
                self._tokens["text_end"][pad] = self._byte_start[i] + self._byte_room[i]
                self._write_data(i, r)
            f.flush()  # the data first; then the entries that make it visible
            first = append_index(seqs, records, self._token_start, self._row_start,
                                  [STATUS_IN_PROGRESS] * len(records), metas)
            self.indices = list(range(first, first + len(records)))
            self._at = slice(first, first + len(records))
            f.flush()

    # ------------------------------------------------------------------ growing
    def update(self, records: Sequence[SequenceRecord]) -> None:
        """Write what is new in each record (rows, tokens), flush, then move its counts forward."""
        self._check_open()
        for i, r in enumerate(records):
            _check_shapes(self.writer, r, *self._shape)
            if r.n_rows > self._row_room[i] or len(r.token_ids) > self._token_room[i]:
                raise TraceError(f"{self.writer.path}: sequence {self.indices[i]} outgrew the room reserved for it "
                                 f"({r.n_rows} rows, room for {self._row_room[i]})")
        new = [_tail(r, self._rows_written[i], self._tokens_written[i]) for i, r in enumerate(records)]
        with self._committing(new):
            for i, r in enumerate(records):
                self._write_data(i, r)
            self.writer._file.flush()  # the data reaches the file before the counts that show it
            profiles = np.stack([mean_generated_profile(r) for r in records]).astype(np.float32)
            self._seqs["row_count"][self._at] = np.asarray([r.n_rows for r in records], dtype=np.int32)
            self._seqs["token_count"][self._at] = np.asarray([len(r.token_ids) for r in records], dtype=np.int32)
            self._seqs["mean_profile"][self._at] = profiles
            self._seqs["mean_entropy"][self._at] = profiles.mean(axis=1)
            self.writer._file.flush()

    def finish(self, records: Sequence[SequenceRecord]) -> list[int]:
        """Write the final rows, then mark each sequence complete (status 1), or abandoned
        (status 2) where its record says ``complete=False``; returns the indices."""
        self.update(records)
        self._set_status([STATUS_COMPLETE if r.complete else STATUS_ABANDONED for r in records])
        return list(self.indices)

    def abandon(self) -> None:
        """Mark every sequence abandoned (status 2): the rows flushed so far are kept. Best effort."""
        if not self.open or self.writer._file is None or self.writer._failed is not None:
            self._close()
            return
        self._set_status([STATUS_ABANDONED] * len(self.indices))

    def _set_status(self, statuses: list[int]) -> None:
        self._check_open()
        try:
            self._seqs["status"][self._at] = np.asarray(statuses, dtype=np.int8)
            self.writer._file.flush()
        except (OSError, RuntimeError) as exc:
            self.writer._failed = write_error(self.writer.path, exc)
            raise self.writer._failed from None
        finally:
            self._close()

    def _close(self) -> None:
        self.open = False
        if self.writer._live is self:
            self.writer._live = None

    def _check_open(self) -> None:
        if not self.open:
            raise TraceError(f"{self.writer.path}: these live sequences were already finished or abandoned")
        self.writer._writable()

    def _committing(self, records: Sequence[SequenceRecord]):
        L, _, A = self._shape
        return self.writer._committing((), _new_bytes(records, L, A) + self._chunk_bytes)

    # ------------------------------------------------------------------ data
    def _write_data(self, i: int, r: SequenceRecord) -> None:
        """Write record ``i``'s rows and tokens beyond those already written into its region."""
        wt, wr = self._tokens_written[i], self._rows_written[i]
        if len(r.token_ids) > wt:
            at = self._token_start[i] + wt
            encoded = [x.encode("utf-8") for x in r.token_texts[wt:]]
            size = sum(len(e) for e in encoded)
            if self._bytes_written[i] + size > self._byte_room[i]:
                raise TraceError(f"{self.writer.path}: a live sequence's token texts outgrew the room reserved for them")
            b = self._byte_start[i] + self._bytes_written[i]
            self._tokens["id"][at : at + len(encoded)] = np.asarray(r.token_ids[wt:], dtype=np.int32)
            if size:
                self._tokens["text_bytes"][b : b + size] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            self._tokens["text_end"][at : at + len(encoded)] = b + np.cumsum([len(e) for e in encoded], dtype=np.int64)
            self._tokens_written[i] = len(r.token_ids)
            self._bytes_written[i] += size
        if r.n_rows > wr:
            at = self._row_start[i] + wr
            L, _, A = self._shape
            for name, values in row_data([_tail(r, wr, 0)], L, A).items():
                self._rows[name][at : at + len(values)] = values
            self._rows_written[i] = r.n_rows


def _tail(r: SequenceRecord, rows: int, tokens: int) -> SequenceRecord:
    """The part of ``r`` from row ``rows`` and token ``tokens`` on (for writing and sizing)."""
    kl = None if r.kl_final is None else r.kl_final[rows:]
    return replace(r, token_ids=r.token_ids[tokens:], token_texts=r.token_texts[tokens:], entropy=r.entropy[rows:],
                   topk_ids=r.topk_ids[rows:], topk_probs=r.topk_probs[rows:], target_prob=r.target_prob[rows:],
                   target_rank=r.target_rank[rows:], output_entropy=r.output_entropy[rows:], renyi=r.renyi[rows:],
                   kl_final=kl)


def _new_bytes(records: Sequence[SequenceRecord], L: int, A: int) -> int:
    """Raw bytes a write of ``records`` adds (for the disk-space reservation)."""
    rows = sum(a.nbytes for a in row_data(records, L, A).values()) if records else 0
    return rows + sum(len(t.encode("utf-8")) + 12 for r in records for t in r.token_texts) + 4096


def _check_shapes(writer: TraceWriter, r: SequenceRecord, L: int, k: int, A: int) -> None:
    n = r.n_rows
    problems = []
    if r.entropy.shape != (n, L) or r.topk_ids.shape != (n, L, k) or r.topk_probs.shape != (n, L, k):
        problems.append(f"entropy {r.entropy.shape} / top-k {r.topk_ids.shape} for ({n}, {L}, {k})")
    if r.renyi.size != n * A * L or (r.kl_final is not None and np.shape(r.kl_final) != (n, L)):
        problems.append(f"renyi {r.renyi.shape} / kl_final {np.shape(r.kl_final)} for ({n}, {A}, {L})")
    if len(r.token_texts) != len(r.token_ids) or n > max(0, len(r.token_ids) - 1):
        problems.append(f"{n} rows for {len(r.token_ids)} tokens ({len(r.token_texts)} texts)")
    if problems:
        raise TraceError(f"{writer.path}: cannot write live sequence: " + "; ".join(problems))
