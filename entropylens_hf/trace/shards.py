"""A folder of shard files read as one trace: :class:`ShardedTrace`, and :func:`merge_shards`.

A data-parallel run (:mod:`entropylens_hf.distributed`) writes one trace file per process
into a run folder, since HDF5's SWMR allows one writer per file. ``Trace.open("RUN/")``
returns a :class:`ShardedTrace`, which reads every ``*.h5`` file of the folder as one trace
with the same API as :class:`~entropylens_hf.trace.Trace`: the shards must agree on model,
lens and settings (else one :class:`TraceError` naming the odd shard), and sequences come in
prompt order, which the launching process writes to ``RUN/order.txt`` (one prompt key a
line). Sequences whose key is not listed there come after, shard by shard.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import TraceError
from .reader import Trace
from .schema import SequenceRecord, TraceMetadata
from .writer import TraceWriter, settings_differences

__all__ = ["ShardedTrace", "ORDER_FILE", "shard_files", "write_order", "merge_shards"]

ORDER_FILE = "order.txt"


def shard_files(folder: Path) -> list[Path]:
    """The shard files of a run folder, by name. Files being created (``.partial``) or recovered are not shards yet."""
    return sorted(p for p in folder.glob("*.h5") if p.is_file())


def read_order(folder: Path) -> dict[str, int]:
    """Prompt key -> position in the prompt list, from ``RUN/order.txt`` (empty when absent)."""
    try:
        lines = (folder / ORDER_FILE).read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{folder / ORDER_FILE}: cannot read the prompt order ({exc})") from None
    order: dict[str, int] = {}
    for key in lines:
        if key and key not in order:
            order[key] = len(order)
    return order


def write_order(folder: Path, keys: Iterable[str]) -> None:
    """Add prompt keys to ``RUN/order.txt`` after those already listed (a rerun with more prompts
    keeps the old order and extends it); the file is replaced atomically."""
    order = list(read_order(folder))
    known = set(order)
    order += [k for k in dict.fromkeys(keys) if k not in known]
    tmp = folder / f".{ORDER_FILE}.{os.getpid()}.tmp"  # created with the umask's permissions, unlike mkstemp's 0600
    try:
        tmp.write_text("".join(k + "\n" for k in order), encoding="utf-8")
        os.replace(tmp, folder / ORDER_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ShardedTrace:
    """A run folder of shard files, read as one trace; the API of :class:`~entropylens_hf.trace.Trace`.

    >>> with Trace.open("RUN/") as trace:   # dispatches here for a folder
    ...     len(trace), trace.shards       # sequences of every shard, the shard files

    Sequences are in prompt order when opened. :meth:`refresh` (live following) adds the
    sequences completed since at the end, so no index seen before ever moves; reopen to see
    them in prompt order again. A sequence's ``run`` indexes :meth:`runs`, which lists the
    runs of every shard, each with a ``shard`` entry naming its file.
    """

    def __init__(self, folder: Path, shards: list[Trace], partial: bool = False):
        self.path = folder
        self.partial = partial
        self._shards: list[Trace] = []
        self._entries: list[tuple[int, int]] = []  # global index -> (shard number, index in the shard)
        self._seen: list[int] = []  # sequences of each shard already in _entries
        self._runs: list[dict[str, Any]] = []
        self._run_ids: list[list[int]] = []  # per shard: local run id -> global run id
        self.metadata = _check_consistent(folder, shards)
        for shard in shards:
            self._add_shard(shard)
        self._take_new()

    @classmethod
    def open(cls, folder: str | os.PathLike, partial: bool = False) -> "ShardedTrace":
        """Open every shard of a run folder; one :class:`TraceError` naming the file on bad input."""
        folder = Path(folder)
        files = shard_files(folder)
        if not files:
            raise TraceError(f"{folder}: a folder without trace shards (*.h5); give a trace file or a run folder "
                             "written by `entropylens record --out RUN/`")
        shards: list[Trace] = []
        try:
            for path in files:
                shards.append(Trace.open(path, partial=partial))
            return cls(folder, shards, partial)
        except BaseException:
            for shard in shards:
                shard.close()
            raise

    # Trace's own: they go through len, [], close and the summaries only.
    __enter__ = Trace.__enter__
    __exit__ = Trace.__exit__
    __iter__ = Trace.__iter__
    to_dataframe = Trace.to_dataframe

    def close(self) -> None:
        for shard in self._shards:
            shard.close()

    @property
    def shards(self) -> list[Path]:
        """The shard files, in the order their sequences are numbered within one prompt position."""
        return [shard.path for shard in self._shards]

    # -- the index: (shard, local index) per sequence, and run ids
    def _add_shard(self, shard: Trace) -> None:
        self._shards.append(shard)
        self._seen.append(0)
        self._run_ids.append([])

    def _take_new(self) -> int:
        """Put every shard's sequences not seen yet at the end, in prompt order; returns how many."""
        order = read_order(self.path)
        new = []
        for s, shard in enumerate(self._shards):
            keys = shard.keys
            new += [(order.get(keys[i], math.inf), s, i) for i in range(self._seen[s], len(shard))]
            self._seen[s] = len(shard)
        new.sort()
        self._entries += [(s, i) for _, s, i in new]
        for s, shard in enumerate(self._shards):
            self._take_runs(s)
        return len(new)

    def _take_runs(self, s: int) -> None:
        runs = self._shards[s].runs()
        name = self._shards[s].path.name
        for run in runs[len(self._run_ids[s]) :]:
            self._run_ids[s].append(len(self._runs))
            self._runs.append({**run, "shard": name})

    def refresh(self) -> int:
        """Pick up sequences completed since (also in shard files that appeared); returns how many are new."""
        known = {shard.path for shard in self._shards}
        for path in shard_files(self.path):
            if path not in known:
                shard = Trace.open(path, partial=self.partial)
                try:
                    _check_consistent(self.path, [self._shards[0], shard])
                except TraceError:
                    shard.close()
                    raise
                self._add_shard(shard)
        for shard in self._shards:
            shard.refresh()
        return self._take_new()

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: int) -> SequenceRecord:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.path}: sequence {i} out of range ({n} sequences)")
        i %= n
        s, local = self._entries[i]
        record = self._shards[s][local]
        if record.run >= len(self._run_ids[s]):
            self._take_runs(s)
        run = self._run_ids[s][record.run] if 0 <= record.run < len(self._run_ids[s]) else record.run
        return dataclasses.replace(record, index=i, run=run)

    def _gather(self, per_shard: Sequence[Sequence[Any]]) -> list[Any]:
        return [per_shard[s][i] for s, i in self._entries]

    def _gather_array(self, per_shard: Sequence[np.ndarray]) -> np.ndarray:
        if not self._entries:
            return np.concatenate([a[:0] for a in per_shard])
        starts = np.cumsum([0] + [len(a) for a in per_shard[:-1]])
        take = np.array([starts[s] + i for s, i in self._entries])
        return np.concatenate(per_shard)[take]

    # -- summaries (the same as Trace's, over every shard)
    @property
    def damaged(self) -> list[int]:
        damaged = [set(shard.damaged) for shard in self._shards]
        return [g for g, (s, i) in enumerate(self._entries) if i in damaged[s]]

    @property
    def labels(self) -> list[dict[str, str]]:
        return self._gather([shard.labels for shard in self._shards])

    @property
    def prompt_texts(self) -> list[str]:
        return self._gather([shard.prompt_texts for shard in self._shards])

    @property
    def keys(self) -> list[str]:
        return self._gather([shard.keys for shard in self._shards])

    @property
    def sequence_lengths(self) -> np.ndarray:
        return self._gather_array([shard.sequence_lengths for shard in self._shards])

    @property
    def prompt_lengths(self) -> np.ndarray:
        return self._gather_array([shard.prompt_lengths for shard in self._shards])

    @property
    def row_counts(self) -> np.ndarray:
        return self._gather_array([shard.row_counts for shard in self._shards])

    @property
    def statuses(self) -> np.ndarray:
        return self._gather_array([shard.statuses for shard in self._shards])

    @property
    def being_written(self) -> bool:
        """Whether a writer holds any shard now (a run still recording)."""
        return any(shard.being_written for shard in self._shards)

    @property
    def mean_profiles(self) -> np.ndarray:
        return self._gather_array([shard.mean_profiles for shard in self._shards])

    @property
    def mean_entropies(self) -> np.ndarray:
        return self._gather_array([shard.mean_entropies for shard in self._shards])

    @property
    def num_rows(self) -> int:
        return sum(shard.num_rows for shard in self._shards)

    @property
    def vocabulary(self) -> list[str]:
        return self._shards[0].vocabulary

    def token_text(self, token_id: int) -> str | None:
        return self._shards[0].token_text(token_id)

    def runs(self) -> list[dict[str, Any]]:
        """Settings of every ``generate()`` call of every shard, each with ``shard``: its file's name."""
        for s in range(len(self._shards)):
            self._take_runs(s)
        return [dict(run) for run in self._runs]

    def file_size(self) -> int:
        return sum(shard.file_size() for shard in self._shards)

    def __repr__(self) -> str:
        m = self.metadata
        return (f"<ShardedTrace {self.path}: {len(self)} sequences in {len(self._shards)} shards, {m.model_name}, "
                f"{m.lens_kind} lens, {m.num_layers} lens rows>")

    def _repr_html_(self) -> str:
        """The run's view in Jupyter, as for one file (see :mod:`entropylens_hf.display`)."""
        from ..display import view  # a display hook: imported only when a notebook asks for HTML

        return view(self)._repr_html_()




def _check_consistent(folder: Path, shards: Sequence[Trace]) -> TraceMetadata:
    """The metadata the shards share; a :class:`TraceError` naming every shard that differs from the most.

    The reference is the settings most shards have (the first shard's on a tie), so the one
    odd shard is the one named, whichever its place in the folder.
    """
    agree = [sum(not settings_differences(a.metadata, b.metadata) for b in shards) for a in shards]
    reference = agree.index(max(agree))
    odd = [i for i, shard in enumerate(shards) if settings_differences(shards[reference].metadata, shard.metadata)]
    if odd:
        ref = shards[reference]
        first = shards[odd[0]]
        names = ", ".join(shards[i].path.name for i in odd)
        raise TraceError(
            f"{folder}: shard{'s' if len(odd) > 1 else ''} {names} recorded with other settings than "
            f"{ref.path.name} ({'; '.join(settings_differences(ref.metadata, first.metadata))}); "
            "move it out of the folder, or record it again with the same model and settings"
        )
    return shards[reference].metadata


def merge_shards(folder: str | os.PathLike, out: str | os.PathLike, batch: int = 64) -> int:
    """Write every sequence of a run folder, in order, into one new trace file; returns how many.

    Run settings are kept (each names the shard it came from). ``out`` must not exist; if the
    merge fails, no partial file is left.
    """
    out = Path(out)
    if os.path.lexists(out):
        raise TraceError(f"{out}: exists already; merge writes a new file, give another name")
    with ShardedTrace.open(folder) as src:
        try:
            with TraceWriter(out, src.metadata, vocabulary=src.vocabulary or None) as w:
                for run in src.runs():
                    w._append_run(run)
                for start in range(0, len(src), batch):
                    w.write([src[i] for i in range(start, min(start + batch, len(src)))])
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        return len(src)
