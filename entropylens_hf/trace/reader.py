"""Read a trace lazily, also while it is being recorded: :class:`Trace`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np

from ..errors import TraceError
from .schema import _INDEX_COLUMNS, SequenceRecord, _check_is_trace, _read_metadata
from .storage import _open_h5, _read_string_column, _UncleanFile

class Trace:
    """Read a trace lazily: sequences are loaded one at a time, on access.

    >>> with Trace.open("run.h5") as trace:
    ...     seq = trace[0]
    ...     seq.entropy.shape          # (rows, lens layers)
    ...     df = trace.to_dataframe()  # needs pandas

    The file is opened in SWMR read mode, so a trace still being recorded can be
    followed: :meth:`refresh` picks up sequences completed since.
    """

    def __init__(self, path: Path, file: h5py.File):
        self.path = path
        self._file = file
        self.metadata = _read_metadata(file)
        self._index: dict[str, np.ndarray] = {}
        self._metas: list[dict[str, Any]] = []
        self._vocabulary: list[str] | None = None
        self._load_index()

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Trace":
        """Open a trace for reading; raises :class:`TraceError` with one clear line on bad input."""
        path = Path(path)
        try:
            f = _open_h5(path, "r")
        except _UncleanFile as exc:  # only for non-SWMR writers; say what happened
            raise TraceError(f"{path}: the file is open for writing by another program ({exc})") from None
        try:
            _check_is_trace(f, path)
            return cls(path, f)
        except TraceError:
            f.close()
            raise
        except (KeyError, ValueError, OSError) as exc:
            f.close()
            raise TraceError(f"{path}: damaged trace ({exc})") from None

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

    # -- index
    def _load_index(self) -> None:
        seqs = self._file["sequences"]
        for ds in seqs.values():
            ds.refresh()
        # A sequence is complete once every index column has its entry (meta is written last).
        n = min(seqs[name].shape[0] for name in _INDEX_COLUMNS + ("meta_end", "mean_profile"))
        old = len(self._metas)
        self._index = {name: seqs[name][:n] for name in _INDEX_COLUMNS}
        self._mean_profiles: np.ndarray | None = None
        if n > old:
            self._metas.extend(json.loads(m) for m in _read_string_column(seqs, "meta", old, n))
        for group in ("tokens", "rows"):
            for ds in self._file[group].values():
                ds.refresh()

    def refresh(self) -> int:
        """Pick up sequences completed since opening (or the last refresh); returns how many are new."""
        before = len(self)
        self._load_index()
        return len(self) - before

    def __len__(self) -> int:
        return int(self._index["token_start"].shape[0])

    def __iter__(self) -> Iterator[SequenceRecord]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> SequenceRecord:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.path}: sequence {i} out of range ({n} sequences)")
        i %= n
        t0 = int(self._index["token_start"][i])
        nt = int(self._index["token_count"][i])
        r0 = int(self._index["row_start"][i])
        nr = int(self._index["row_count"][i])
        rows = self._file["rows"]
        meta = self._metas[i]
        return SequenceRecord(
            token_ids=self._file["tokens/id"][t0 : t0 + nt],
            token_texts=tuple(_read_string_column(self._file["tokens"], "text", t0, t0 + nt)),
            prompt_length=int(self._index["prompt_length"][i]),
            entropy=rows["entropy"][r0 : r0 + nr],
            topk_ids=rows["topk_id"][r0 : r0 + nr],
            topk_probs=rows["topk_prob"][r0 : r0 + nr],
            target_prob=rows["target_prob"][r0 : r0 + nr],
            target_rank=rows["target_rank"][r0 : r0 + nr],
            output_entropy=rows["output_entropy"][r0 : r0 + nr],
            renyi=rows["renyi"][r0 : r0 + nr],
            renyi_alphas=self.metadata.renyi_alphas,
            labels=meta.get("labels", {}),
            prompt_text=meta.get("prompt_text", ""),
            key=meta.get("key", ""),
            run=int(self._index["run"][i]),
            index=i,
        )

    # -- summaries
    @property
    def labels(self) -> list[dict[str, str]]:
        """Labels of every sequence, without loading any arrays."""
        return [dict(m.get("labels", {})) for m in self._metas]

    @property
    def prompt_texts(self) -> list[str]:
        return [m.get("prompt_text", "") for m in self._metas]

    @property
    def keys(self) -> list[str]:
        return [m.get("key", "") for m in self._metas]

    @property
    def sequence_lengths(self) -> np.ndarray:
        """Number of tokens (prompt + generated) of every sequence."""
        return self._index["token_count"].copy()

    @property
    def prompt_lengths(self) -> np.ndarray:
        return self._index["prompt_length"].copy()

    @property
    def mean_profiles(self) -> np.ndarray:
        """``[S, L]``: each sequence's mean entropy per layer over its generated rows (nats).

        Stored in the index, so aggregates over many sequences need not load them.
        """
        if self._mean_profiles is None:
            self._mean_profiles = self._file["sequences/mean_profile"][: len(self)]
        return self._mean_profiles.copy()

    @property
    def mean_entropies(self) -> np.ndarray:
        """Mean entropy over the generated rows and all layers, per sequence (nats)."""
        return self._index["mean_entropy"].copy()

    @property
    def num_rows(self) -> int:
        """Total rows (token x all lens layers each) over all complete sequences."""
        return int(self._index["row_count"].sum())

    @property
    def vocabulary(self) -> list[str]:
        """Decoded text of every token id, as the recording tokenizer gave it ([] if not stored)."""
        if self._vocabulary is None:
            group = self._file.get("vocabulary")
            n = group["text_end"].shape[0] if group is not None else 0
            self._vocabulary = _read_string_column(group, "text", 0, n) if n else []
        return self._vocabulary

    def token_text(self, token_id: int) -> str | None:
        """Text of one token id (e.g. a top-k prediction), or None if the trace has no vocabulary."""
        vocab = self.vocabulary
        return vocab[token_id] if 0 <= token_id < len(vocab) else None

    def runs(self) -> list[dict[str, Any]]:
        """Settings of every ``generate()`` call recorded in the file."""
        g = self._file["runs"]
        g["meta_end"].refresh()
        g["meta_bytes"].refresh()
        return [json.loads(m) for m in _read_string_column(g, "meta", 0, g["meta_end"].shape[0])]

    def file_size(self) -> int:
        return self.path.stat().st_size

    def to_dataframe(self, layout: str = "wide", sequences: Sequence[int] | None = None):
        """A pandas DataFrame of the trace (needs ``pip install entropylens-hf[export]``).

        ``layout="wide"``: one row per token row, columns ``entropy_0 .. entropy_{L-1}``;
        ``layout="long"``: one row per (token row, layer) with entropy, target prob/rank and
        the top-1 prediction.
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
                frames.append(pd.DataFrame(cols))
            else:
                cols = {k: np.repeat(np.asarray(v), L) for k, v in base.items()}
                cols["layer"] = np.tile(np.arange(L), n)
                cols["entropy"] = s.entropy.reshape(-1)
                cols["target_prob"] = s.target_prob.reshape(-1)
                cols["target_rank"] = s.target_rank.reshape(-1)
                cols["top1_id"] = s.topk_ids[:, :, 0].reshape(-1)
                cols["top1_prob"] = s.topk_probs[:, :, 0].reshape(-1)
                frames.append(pd.DataFrame(cols))
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True)
