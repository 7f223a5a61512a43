"""Read a trace lazily, also while it is being recorded: :class:`Trace`."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import h5py
import numpy as np

from ..errors import TraceError
from .schema import (
    INDEX_COLUMNS,
    STATUS_COMPLETE,
    SequenceRecord,
    check_is_trace,
    first_line,
    read_metadata,
)
from .locking import lock_holder
from .storage import open_h5, read_string_column, UncleanFile

_SHAPE_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError)


class Trace:
    """Read a trace lazily: sequences are loaded one at a time, on access.

    >>> with Trace.open("run.h5") as trace:
    ...     seq = trace[0]
    ...     seq.entropy.shape          # (rows, lens layers)
    ...     df = trace.to_dataframe()  # needs pandas

    The file is opened in SWMR read mode, so a trace still being recorded can be
    followed: :meth:`refresh` picks up sequences completed since, and reopens the file if
    it was replaced (crash recovery writes a fresh file). Every problem with the file is one
    :class:`TraceError` naming the file and the damaged part; a damaged sequence does not
    keep the others from being read.

    Only complete sequences are shown unless ``partial=True``, which also shows sequences
    still being written (live recording) or abandoned (``seq.complete`` is False for them).
    Indices (``trace[i]``, ``seq.index``) count the sequences shown.
    """

    #: Opens a run folder of shard files as one trace. Shards sit above the reader, so the
    #: package wires :meth:`.shards.ShardedTrace.open` in (``trace/__init__.py``).
    open_folder: ClassVar[Callable[..., Any]]

    def __init__(self, path: Path, file: h5py.File, partial: bool = False):
        self.path = path
        self.partial = partial
        self._file = file
        self._identity = _identity(path)
        self.metadata = read_metadata(file, path)
        self._version_2 = self.metadata.schema_version >= 2
        self._index: dict[str, np.ndarray] = {}
        self._metas: list[dict[str, Any] | None] = []  # None: damaged metadata
        self._vocabulary: list[str] | None = None
        self._check_layout()
        self._load_index()

    @classmethod
    def open(cls, path: str | os.PathLike, partial: bool = False) -> "Trace":
        """Open a trace for reading; raises :class:`TraceError` with one clear line on bad input.

        ``partial=True`` also shows sequences that are not complete (see the class docstring).
        A folder is read as a run of shard files (one per process of a data-parallel
        recording): a :class:`~entropylens_hf.trace.shards.ShardedTrace`, with this same API.
        """
        path = Path(path)
        if path.is_dir():
            return cls.open_folder(path, partial=partial)
        if not os.path.lexists(path):  # a link loop or a dangling link is named by open_h5
            raise TraceError(f"{path}: no such trace file")
        try:
            f = open_h5(path, "r")
        except UncleanFile as exc:  # only for non-SWMR writers; say what happened
            raise TraceError(f"{path}: the file is open for writing by another program ({exc})") from None
        except _SHAPE_ERRORS as exc:
            raise TraceError(f"{path}: damaged trace ({first_line(exc)})") from None
        try:
            check_is_trace(f, path)
            return cls(path, f, partial=partial)
        except TraceError:
            f.close()
            raise
        except _SHAPE_ERRORS as exc:
            f.close()
            raise TraceError(f"{path}: damaged trace ({first_line(exc)})") from None

    # -- lifecycle
    def __enter__(self) -> "Trace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None and self._file.id.valid:
            self._file.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    @contextlib.contextmanager
    def _reading(self, part: str) -> Iterator[None]:
        """Turn any failure to read ``part`` into one :class:`TraceError` naming it."""
        try:
            yield
        except TraceError:
            raise
        except _SHAPE_ERRORS as exc:
            raise TraceError(f"{self.path}: damaged trace: {part} cannot be read ({first_line(exc)})") from None

    def _check_layout(self) -> None:
        """Every dataset is where the schema puts it, with the shape the file's attributes say."""
        m = self.metadata
        L, k, A = m.num_layers, m.top_k, len(m.renyi_alphas)
        expected = {
            "tokens/id": (), "tokens/text_bytes": (), "tokens/text_end": (),
            "rows/entropy": (L,), "rows/topk_id": (L, k), "rows/topk_prob": (L, k), "rows/target_prob": (L,),
            "rows/target_rank": (L,), "rows/output_entropy": (), "rows/renyi": (A, L),
            "sequences/mean_profile": (L,), "sequences/meta_bytes": (), "sequences/meta_end": (),
            "runs/meta_bytes": (), "runs/meta_end": (),
            **{f"sequences/{name}": () for name in INDEX_COLUMNS},
        }
        if self._version_2:
            expected.update({"rows/kl_final": (L,), "sequences/status": ()})
        for name, tail in expected.items():
            with self._reading(f"'/{name}'"):
                ds = self._file.get(name)
                if not isinstance(ds, h5py.Dataset):
                    what = "missing" if ds is None else f"a {type(ds).__name__.lower()}, not a dataset"
                    raise TraceError(f"{self.path}: damaged trace: '/{name}' is {what}")
                if ds.shape[1:] != tail:
                    raise TraceError(
                        f"{self.path}: damaged trace: '/{name}' has shape {ds.shape}, but the file's attributes "
                        f"(num_layers={L}, top_k={k}, {A} Rényi orders) say (rows, {', '.join(map(str, tail))})"
                        if tail else f"{self.path}: damaged trace: '/{name}' has shape {ds.shape}, expected one axis"
                    )

    # -- index
    def _load_index(self) -> None:
        with self._reading("the sequence index '/sequences'"):
            seqs = self._file["sequences"]
            for ds in seqs.values():
                ds.refresh()
            # A sequence is committed once every index column has its entry (meta is written last).
            columns = INDEX_COLUMNS + (("status",) if self._version_2 else ())
            n = min(seqs[name].shape[0] for name in columns + ("meta_end", "mean_profile"))
            old = min(len(self._metas), n)
            index = {name: seqs[name][:n] for name in columns}
            metas = [_parse_meta(m) for m in read_string_column(seqs, "meta", old, n)] if n > old else []
        # Metadata that does not parse at the end of the index belongs to a batch whose write
        # failed (a full disk): those sequences were never committed. Elsewhere it marks one
        # damaged sequence, which is reported when read while the others stay readable.
        while metas and metas[-1] is None:
            metas.pop()
            n -= 1
        self._index = {name: column[:n] for name, column in index.items()}
        self._metas = self._metas[:old] + metas
        status = self._index.get("status")
        shown = np.ones(n, bool) if status is None or self.partial else status == STATUS_COMPLETE
        self._shown = np.flatnonzero(shown)
        self._mean_profiles: np.ndarray | None = None
        with self._reading("the token and row data"):
            for group in ("tokens", "rows"):
                for ds in self._file[group].values():
                    ds.refresh()

    def refresh(self) -> int:
        """Pick up sequences added since opening (or the last refresh); returns how many are new.

        Also picks up what changed in place: the rows of sequences being written (live
        recording), and sequences that became complete (which appear in a default view) or
        abandoned. If the file at ``path`` was replaced (a writer recovered it after a
        crash), the new file is opened in its place.
        """
        before = len(self)
        if _identity(self.path) != self._identity:
            self._reopen()
        else:
            self._load_index()
        return len(self) - before

    def _reopen(self) -> None:
        fresh = Trace.open(self.path, partial=self.partial)
        self.close()
        self.__dict__.update(fresh.__dict__)
        fresh._file = None

    def __len__(self) -> int:
        return int(self._shown.shape[0])

    def _column(self, name: str) -> np.ndarray:
        """An index column over the sequences shown."""
        return self._index[name][self._shown]

    def __iter__(self) -> Iterator[SequenceRecord]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> SequenceRecord:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.path}: sequence {i} out of range ({n} sequences)")
        i %= n
        at = int(self._shown[i])  # position in the file's index
        meta = self._metas[at]
        if meta is None:
            raise TraceError(f"{self.path}: damaged trace: the metadata of sequence {i} cannot be read")
        t0 = int(self._index["token_start"][at])
        nt = int(self._index["token_count"][at])
        r0 = int(self._index["row_start"][at])
        nr = int(self._index["row_count"][at])
        status = self._index.get("status")
        complete = status is None or int(status[at]) == STATUS_COMPLETE
        if not complete and isinstance(meta.get("first_target"), int):
            # A live sequence: its row count is the one that moves last (see .live).
            nt = meta["first_target"] + nr
        arrays: dict[str, Any] = {}
        for field, part, start, count in (
            ("token_ids", "tokens/id", t0, nt), ("entropy", "rows/entropy", r0, nr),
            ("topk_ids", "rows/topk_id", r0, nr), ("topk_probs", "rows/topk_prob", r0, nr),
            ("target_prob", "rows/target_prob", r0, nr), ("target_rank", "rows/target_rank", r0, nr),
            ("output_entropy", "rows/output_entropy", r0, nr), ("renyi", "rows/renyi", r0, nr),
            *((("kl_final", "rows/kl_final", r0, nr),) if self._version_2 else ()),
        ):
            with self._reading(f"sequence {i} ('/{part}')"):
                values = self._file[part][start : start + count]
                if len(values) != count or start < 0:
                    raise ValueError(f"index points at rows {start}..{start + count}, the data has {self._file[part].shape[0]}")
            arrays[field] = values
        with self._reading(f"sequence {i} ('/tokens/text_bytes')"):
            texts = tuple(read_string_column(self._file["tokens"], "text", t0, t0 + nt))
        if not self._version_2:
            arrays["kl_final"] = np.full(arrays["entropy"].shape, np.nan, np.float32)
        return SequenceRecord(
            **arrays,
            token_texts=texts,
            prompt_length=int(self._index["prompt_length"][at]),
            renyi_alphas=self.metadata.renyi_alphas,
            labels=meta.get("labels", {}),
            prompt_text=meta.get("prompt_text", ""),
            key=meta.get("key", ""),
            run=int(self._index["run"][at]),
            index=i,
            complete=complete,
            source=self,
        )

    @property
    def damaged(self) -> list[int]:
        """Indices of sequences whose metadata cannot be read (reading them raises :class:`TraceError`)."""
        return [i for i, at in enumerate(self._shown) if self._metas[at] is None]

    def _shown_metas(self) -> list[dict[str, Any]]:
        return [self._metas[at] or {} for at in self._shown]

    # -- summaries
    @property
    def labels(self) -> list[dict[str, str]]:
        """Labels of every sequence, without loading any arrays."""
        return [dict(m.get("labels", {})) for m in self._shown_metas()]

    @property
    def prompt_texts(self) -> list[str]:
        return [m.get("prompt_text", "") for m in self._shown_metas()]

    @property
    def keys(self) -> list[str]:
        return [m.get("key", "") for m in self._shown_metas()]

    @property
    def sequence_lengths(self) -> np.ndarray:
        """Number of tokens (prompt + generated) of every sequence."""
        return self._column("token_count")

    @property
    def prompt_lengths(self) -> np.ndarray:
        return self._column("prompt_length")

    @property
    def mean_profiles(self) -> np.ndarray:
        """``[S, L]``: each sequence's mean entropy per layer over its generated rows (nats).

        Stored in the index, so aggregates over many sequences need not load them.
        """
        if self._mean_profiles is None:
            with self._reading("the mean profiles '/sequences/mean_profile'"):
                n = int(self._index["token_start"].shape[0])
                self._mean_profiles = self._file["sequences/mean_profile"][:n][self._shown]
        return self._mean_profiles.copy()

    @property
    def row_counts(self) -> np.ndarray:
        """Rows of every sequence (of an in-progress one: rows written so far)."""
        return self._column("row_count")

    @property
    def statuses(self) -> np.ndarray:
        """``int8`` status of every sequence: 1 complete, 0 being written, 2 abandoned (see :attr:`partial`)."""
        status = self._index.get("status")
        return np.ones(len(self), np.int8) if status is None else status[self._shown]

    @property
    def being_written(self) -> bool:
        """Whether a writer holds the file now; in-progress sequences of a writer that is gone
        (killed) stay at status 0 until the next writer recovers the file, which marks them 2."""
        return lock_holder(self.path) is not None

    @property
    def mean_entropies(self) -> np.ndarray:
        """Mean entropy over the generated rows and all layers, per sequence (nats)."""
        return self._column("mean_entropy")

    @property
    def num_rows(self) -> int:
        """Total rows (token x all lens layers each) over all complete sequences."""
        return int(self._column("row_count").sum())

    @property
    def vocabulary(self) -> list[str]:
        """Decoded text of every token id, as the recording tokenizer gave it ([] if not stored)."""
        if self._vocabulary is None:
            with self._reading("the vocabulary '/vocabulary'"):
                group = self._file.get("vocabulary")
                n = group["text_end"].shape[0] if group is not None else 0
                self._vocabulary = read_string_column(group, "text", 0, n) if n else []
        return self._vocabulary

    def token_text(self, token_id: int) -> str | None:
        """Text of one token id (e.g. a top-k prediction), or None if the trace has no vocabulary."""
        vocab = self.vocabulary
        return vocab[token_id] if 0 <= token_id < len(vocab) else None

    def runs(self) -> list[dict[str, Any]]:
        """Settings of every ``generate()`` call recorded in the file."""
        with self._reading("the run settings '/runs'"):
            g = self._file["runs"]
            g["meta_end"].refresh()
            g["meta_bytes"].refresh()
            runs = [_parse_meta(m) for m in read_string_column(g, "meta", 0, g["meta_end"].shape[0])]
        # The last run of a writer that failed may be incomplete; earlier ones are kept.
        return [r if r is not None else {} for r in runs]

    def file_size(self) -> int:
        return self.path.stat().st_size

    def __repr__(self) -> str:
        m = self.metadata
        return (f"<Trace {self.path}: {len(self)} sequences, {m.model_name}, {m.lens_kind} lens, "
                f"{m.num_layers} lens rows>")

    def _repr_html_(self) -> str:
        """The trace's view in Jupyter: overview, sequence picker, heatmap (see :mod:`entropylens_hf.display`)."""
        from ..display import view  # a display hook: imported only when a notebook asks for HTML

        return view(self)._repr_html_()

    def to_dataframe(self, layout: str = "wide", sequences: Sequence[int] | None = None):
        """A pandas DataFrame of the trace (needs ``pip install entropylens-hf[export]``).

        ``layout="wide"``: one row per token row, columns ``entropy_0 .. entropy_{L-1}`` and
        ``kl_final_0 .. kl_final_{L-1}``; ``layout="long"``: one row per (token row, layer) with
        entropy, KL to the final layer (``kl_final``), target prob/rank and the top-1 prediction.
        KL is NaN where it was not recorded (version-1 files).
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("DataFrame export needs pandas: pip install 'entropylens-hf[export]'") from None
        if layout not in ("wide", "long"):
            raise ValueError(f"layout must be 'wide' or 'long', not {layout!r}")
        frames = []
        label_keys = sorted({k for lab in self.labels for k in lab})
        for i in range(len(self)) if sequences is None else sequences:
            s = self[i]
            n, L = s.entropy.shape
            targets = np.arange(s.first_target, len(s.token_ids))
            base = {
                "sequence": np.full(n, s.index),
                "position": targets,
                "token_id": s.target_ids,
                "token": [s.token_texts[t] for t in targets],
                "is_prompt": ~s.is_generated,
            }
            for key in label_keys:
                base[f"label_{key}"] = [s.labels.get(key, "")] * n
            if layout == "wide":
                cols = dict(base)
                cols["output_entropy"] = s.output_entropy
                for layer in range(L):
                    cols[f"entropy_{layer}"] = s.entropy[:, layer]
                for layer in range(L):
                    cols[f"kl_final_{layer}"] = s.kl_final[:, layer]
                frames.append(pd.DataFrame(cols))
            else:
                cols = {k: np.repeat(np.asarray(v), L) for k, v in base.items()}
                cols["layer"] = np.tile(np.arange(L), n)
                cols["entropy"] = s.entropy.reshape(-1)
                cols["kl_final"] = s.kl_final.reshape(-1)
                cols["target_prob"] = s.target_prob.reshape(-1)
                cols["target_rank"] = s.target_rank.reshape(-1)
                cols["top1_id"] = s.topk_ids[:, :, 0].reshape(-1)
                cols["top1_prob"] = s.topk_probs[:, :, 0].reshape(-1)
                frames.append(pd.DataFrame(cols))
        if not frames:  # no sequences: the same columns, no rows (a CSV still gets its header)
            base = ["sequence", "position", "token_id", "token", "is_prompt", *(f"label_{k}" for k in label_keys)]
            if layout == "wide":
                layers = range(self.metadata.num_layers)
                columns = [*base, "output_entropy", *(f"entropy_{layer}" for layer in layers),
                           *(f"kl_final_{layer}" for layer in layers)]
            else:
                columns = [*base, "layer", "entropy", "kl_final", "target_prob", "target_rank", "top1_id", "top1_prob"]
            return pd.DataFrame(columns=columns)
        return pd.concat(frames, ignore_index=True)


def _parse_meta(text: str) -> dict[str, Any] | None:
    """A sequence's (or run's) JSON metadata, or None where it is damaged or was never written."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino
