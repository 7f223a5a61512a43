"""The HDF5 trace format: schema, :class:`TraceWriter` and :class:`Trace` (the reader).

A trace file holds many sequences and grows across runs. Every per-row quantity is one
extendable, chunked, compressed dataset whose first axis concatenates all sequences;
a small per-sequence index says where each sequence's tokens and rows start. This layout
is what makes the file safe to follow live and to survive a killed writer: files are
written in HDF5 SWMR mode (single writer, many readers), which keeps the file consistent
on disk at every moment, and a sequence becomes visible only when its index entry is
written, after all its data. Nothing here knows about models.

Layout (``N`` rows, ``T`` tokens, ``L`` lens layers = decoder layers + 1 for the embeddings,
``k`` = top-k, ``A`` = number of Rényi orders)::

    /                       attrs: format, schema_version, library_version, created_utc,
                                   model_name, model_config (JSON), tokenizer_name,
                                   num_layers (L), layer_names (JSON), vocab_size, top_k,
                                   renyi_alphas (JSON)
    /tokens/id              int32   [T]         every sequence's full token ids
    /tokens/text_bytes      uint8   [bytes]     UTF-8 text of each token, concatenated
    /tokens/text_end        int64   [T]         end offset of each token's text
    /rows/entropy           float32 [N, L]      logit-lens Shannon entropy, nats
    /rows/topk_id           int32   [N, L, k]
    /rows/topk_prob         float32 [N, L, k]
    /rows/target_prob       float32 [N, L]      probability of the token that came next
    /rows/target_rank       int32   [N, L]      its rank (0 = top-1)
    /rows/output_entropy    float32 [N]         entropy of the scores generate's logits processors
                                                produced (before sampling warpers); NaN on prompt rows
    /rows/renyi             float32 [N, A, L]   Rényi entropies, one profile per order
    /sequences/token_start  int64 [S]; token_count int32 [S]; prompt_length int32 [S]
    /sequences/row_start    int64 [S]; row_count int32 [S]; run int32 [S]; mean_entropy float32 [S]
    /sequences/mean_profile float32 [S, L]      mean entropy per layer over the generated rows
    /sequences/meta_bytes + meta_end            JSON per sequence: prompt_text, labels, key
    /runs/meta_bytes + meta_end                 JSON per generate() call: settings, time
    /vocabulary/text_bytes + text_end           decoded text of every token id (optional, written
                                                once at creation), so top-k ids can be shown as text

Row ``i`` of a sequence is the logit lens at input position ``first_target - 1 + i``, i.e. the
distribution that predicted token ``first_target + i``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import h5py
import numpy as np

from ._version import __version__
from .errors import TraceError

__all__ = ["SCHEMA_VERSION", "TraceMetadata", "SequenceRecord", "TraceWriter", "Trace", "TraceError"]

FORMAT_NAME = "entropylens-trace"
SCHEMA_VERSION = 1

_INDEX_DTYPES = {
    "token_start": np.int64,
    "token_count": np.int32,
    "prompt_length": np.int32,
    "row_start": np.int64,
    "row_count": np.int32,
    "run": np.int32,
    "mean_entropy": np.float32,
}
_INDEX_COLUMNS = tuple(_INDEX_DTYPES)
_ROW_CHUNK = 256
_BYTE_CHUNK = 65536
_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


@dataclass(frozen=True)
class TraceMetadata:
    """File-level facts: which model, which lens, which settings."""

    model_name: str
    num_layers: int
    layer_names: tuple[str, ...]
    vocab_size: int
    top_k: int
    renyi_alphas: tuple[float, ...] = ()
    tokenizer_name: str = ""
    model_config: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    library_version: str = __version__
    created_utc: str = ""

    @property
    def decoder_layers(self) -> int:
        """Number of decoder layers (lens layers minus the embedding layer)."""
        return self.num_layers - 1


@dataclass(frozen=True)
class SequenceRecord:
    """One recorded sequence: its tokens and, per row and lens layer, what the logit lens saw.

    Arrays: ``token_ids [T]``, ``entropy [N, L]``, ``topk_ids / topk_probs [N, L, k]``,
    ``target_prob / target_rank [N, L]``, ``output_entropy [N]``, ``renyi [N, A, L]``.
    Row ``i`` predicted token ``first_target + i``; rows whose target lies in the prompt are
    prompt rows. ``index`` is the position in the trace file (-1 when not read from a file).
    """

    token_ids: np.ndarray
    token_texts: tuple[str, ...]
    prompt_length: int
    entropy: np.ndarray
    topk_ids: np.ndarray
    topk_probs: np.ndarray
    target_prob: np.ndarray
    target_rank: np.ndarray
    output_entropy: np.ndarray
    renyi: np.ndarray
    renyi_alphas: tuple[float, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    prompt_text: str = ""
    key: str = ""
    run: int = 0
    index: int = -1

    @property
    def n_rows(self) -> int:
        return int(self.entropy.shape[0])

    @property
    def first_target(self) -> int:
        """Token index predicted by row 0 (1 when the prompt was recorded)."""
        return len(self.token_ids) - self.n_rows

    @property
    def target_ids(self) -> np.ndarray:
        """The token each row predicted: ``token_ids[first_target:]``."""
        return self.token_ids[self.first_target :]

    @property
    def is_generated(self) -> np.ndarray:
        """Boolean ``[N]``: True for rows whose target was generated, False for prompt rows."""
        return np.arange(self.first_target, len(self.token_ids)) >= self.prompt_length

    @property
    def n_generated(self) -> int:
        return len(self.token_ids) - self.prompt_length

    @property
    def generated_text(self) -> str:
        return "".join(self.token_texts[self.prompt_length :])

    def renyi_profile(self, alpha: float) -> np.ndarray:
        """Rényi entropy ``[N, L]`` of order ``alpha`` (1 gives the Shannon entropy)."""
        if float(alpha) == 1.0 and 1.0 not in self.renyi_alphas:
            return self.entropy
        for j, a in enumerate(self.renyi_alphas):
            if a == float(alpha):
                return self.renyi[:, j, :]
        raise KeyError(
            f"Rényi order {alpha} was not recorded (recorded: {list(self.renyi_alphas) or 'none'}); "
            "record with EntropyLens(..., renyi_alphas=[...])"
        )


def _now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------- opening


def _check_is_trace(f: h5py.File, path: Path) -> None:
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT_NAME:
        raise TraceError(
            f"{path}: an HDF5 file, but not an entropylens trace (no format='{FORMAT_NAME}' attribute); "
            "record one with `entropylens record` or EntropyLens.record()"
        )
    version = int(f.attrs.get("schema_version", -1))
    if version > SCHEMA_VERSION:
        raise TraceError(
            f"{path}: trace schema version {version} is newer than this entropylens-hf "
            f"({__version__}) reads (up to {SCHEMA_VERSION}); upgrade: pip install -U entropylens-hf"
        )
    if version < 1:
        raise TraceError(f"{path}: trace has no valid schema_version attribute; the file is damaged")
    for group in ("tokens", "rows", "sequences", "runs"):
        if group not in f:
            raise TraceError(f"{path}: trace is missing the '/{group}' group; the file is damaged")


def _open_h5(path: Path, mode: str) -> h5py.File:
    """Open an HDF5 file, turning h5py's low-level errors into one line that names the problem."""
    if not path.exists():
        raise TraceError(f"{path}: no such trace file")
    if path.is_dir():
        raise TraceError(f"{path}: is a directory, not a trace file")
    if not h5py.is_hdf5(str(path)):
        raise TraceError(f"{path}: not an HDF5 file, so not an entropylens trace")
    try:
        if mode == "r":
            return h5py.File(path, "r", libver="latest", swmr=True)
        return h5py.File(path, mode, libver="latest")
    except OSError as exc:
        text = str(exc)
        if "already open for write" in text or "file close degree" in text or "unable to lock" in text:
            raise _UncleanFile(text) from exc
        raise TraceError(f"{path}: cannot open the trace ({text.splitlines()[0]})") from exc


class _UncleanFile(Exception):
    """A writer was killed while the file was open for SWMR writing."""


def _read_string_column(group: h5py.Group, name: str, start: int, stop: int) -> list[str]:
    ends = group[f"{name}_end"]
    if stop <= start:
        return []
    last = ends[start:stop]
    first = ends[start - 1] if start > 0 else 0
    raw = group[f"{name}_bytes"][first : last[-1]].tobytes()
    bounds = np.concatenate([[first], last]) - first
    return [raw[bounds[i] : bounds[i + 1]].decode("utf-8", errors="replace") for i in range(stop - start)]


# --------------------------------------------------------------------------- writer


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


def _write_metadata_attrs(f: h5py.File, m: TraceMetadata) -> None:
    f.attrs["format"] = FORMAT_NAME
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["library_version"] = __version__
    f.attrs["created_utc"] = m.created_utc or _now_utc()
    f.attrs["model_name"] = m.model_name
    f.attrs["model_config"] = json.dumps(dict(m.model_config), default=str)
    f.attrs["tokenizer_name"] = m.tokenizer_name
    f.attrs["num_layers"] = m.num_layers
    f.attrs["layer_names"] = json.dumps(list(m.layer_names))
    f.attrs["vocab_size"] = m.vocab_size
    f.attrs["top_k"] = m.top_k
    f.attrs["renyi_alphas"] = json.dumps([_alpha_to_json(a) for a in m.renyi_alphas])


def _alpha_to_json(a: float) -> float | str:
    return "inf" if np.isinf(a) else float(a)


def _attr_str(f: h5py.File, name: str, default: str = "") -> str:
    v = f.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def _read_metadata(f: h5py.File) -> TraceMetadata:
    return TraceMetadata(
        model_name=_attr_str(f, "model_name"),
        num_layers=int(f.attrs["num_layers"]),
        layer_names=tuple(json.loads(_attr_str(f, "layer_names", "[]"))),
        vocab_size=int(f.attrs["vocab_size"]),
        top_k=int(f.attrs["top_k"]),
        renyi_alphas=tuple(float(a) for a in json.loads(_attr_str(f, "renyi_alphas", "[]"))),
        tokenizer_name=_attr_str(f, "tokenizer_name"),
        model_config=json.loads(_attr_str(f, "model_config", "{}")),
        schema_version=int(f.attrs["schema_version"]),
        library_version=_attr_str(f, "library_version"),
        created_utc=_attr_str(f, "created_utc"),
    )


def _create_column(group: h5py.Group, name: str, dtype: Any, tail: tuple[int, ...], chunk_rows: int) -> None:
    group.create_dataset(
        name,
        shape=(0, *tail),
        maxshape=(None, *tail),
        dtype=dtype,
        chunks=(chunk_rows, *tail) if all(tail) else None,
        **(_COMPRESSION if all(tail) else {}),
    )


def _create_string_column(group: h5py.Group, name: str) -> None:
    # Text as UTF-8 bytes plus end offsets: fixed-size types keep SWMR appends simple.
    _create_column(group, f"{name}_bytes", np.uint8, (), _BYTE_CHUNK)
    _create_column(group, f"{name}_end", np.int64, (), 4096)


def _append(dataset: h5py.Dataset, values: np.ndarray) -> None:
    n = dataset.shape[0]
    dataset.resize(n + len(values), axis=0)
    dataset[n:] = values


def _append_strings(group: h5py.Group, name: str, texts: Sequence[str]) -> None:
    encoded = [t.encode("utf-8") for t in texts]
    ends_ds = group[f"{name}_end"]
    base = int(ends_ds[-1]) if ends_ds.shape[0] else 0
    ends = base + np.cumsum([len(e) for e in encoded], dtype=np.int64)
    _append(group[f"{name}_bytes"], np.frombuffer(b"".join(encoded), dtype=np.uint8))
    _append(ends_ds, ends)


def _mean_generated_profile(r: SequenceRecord) -> np.ndarray:
    """Mean entropy per layer over generated rows (over all rows if none was generated)."""
    gen = r.entropy[r.is_generated]
    return gen.mean(axis=0) if len(gen) else r.entropy.mean(axis=0)


# --------------------------------------------------------------------------- recovery


def recover_trace(path: str | os.PathLike) -> int:
    """Rewrite a trace left open by a killed writer, keeping its complete sequences.

    Returns how many sequences were kept. Partial rows written after the last complete
    sequence are dropped. The original is replaced atomically.
    """
    path = Path(path)
    with Trace.open(path) as src:
        meta = src.metadata
        records = list(src)
        runs = src.runs()
        vocabulary = src.vocabulary
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".recover", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        with TraceWriter(tmp, meta, vocabulary=vocabulary) as w:
            for run in runs:
                w._append_run(run)
            w.write(records)
        shutil.move(str(tmp), str(path))
    finally:
        tmp.unlink(missing_ok=True)
    return len(records)


# --------------------------------------------------------------------------- reader


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
