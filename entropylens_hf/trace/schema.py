"""Trace schema: names, version, the records passed between writer and reader, file attributes.

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
                                   renyi_alphas (JSON),
                                   lens (JSON: kind "logit" | "tuned", name, sha256)       [v2]
                                   layer_kinds (JSON: "emb" | "layer" | "attn" | "mlp", [L]) [v2]
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
    /rows/kl_final          float32 [N, L]      KL(p_final || p_layer), nats; NaN where not recorded    [v2]
    /sequences/token_start  int64 [S]; token_count int32 [S]; prompt_length int32 [S]
    /sequences/row_start    int64 [S]; row_count int32 [S]; run int32 [S]; mean_entropy float32 [S]
    /sequences/mean_profile float32 [S, L]      mean entropy per layer over the generated rows
    /sequences/status       int8 [S]            1 complete, 0 being written (live), 2 abandoned        [v2]
    /sequences/meta_bytes + meta_end            JSON per sequence: prompt_text, labels, key
    /runs/meta_bytes + meta_end                 JSON per generate() call: settings, time
    /vocabulary/text_bytes + text_end           decoded text of every token id (optional, written
                                                once at creation), so top-k ids can be shown as text

Row ``i`` of a sequence is the logit lens at input position ``first_target - 1 + i``, i.e. the
distribution that predicted token ``first_target + i``.

Version 2 adds what sub-layer, tuned-lens, live and sharded recordings need (marked [v2]);
a version-1 file reads as a logit-lens trace over whole layers, KL not recorded (NaN), every
sequence complete, and appending to one upgrades it in place (:func:`upgrade_in_place`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from .._version import __version__
from ..errors import TraceError

FORMAT_NAME = "entropylens-trace"
SCHEMA_VERSION = 2

LAYER_KINDS = ("emb", "layer", "attn", "mlp")
"""What a lens row reads: the embeddings, a whole decoder layer's output, the residual after a
layer's attention (before its MLP), or after its MLP (= the whole layer, in sub-layer traces)."""
LOGIT_LENS = {"kind": "logit"}

STATUS_IN_PROGRESS, STATUS_COMPLETE, STATUS_ABANDONED = 0, 1, 2

INDEX_DTYPES = {
    "token_start": np.int64,
    "token_count": np.int32,
    "prompt_length": np.int32,
    "row_start": np.int64,
    "row_count": np.int32,
    "run": np.int32,
    "mean_entropy": np.float32,
}
INDEX_COLUMNS = tuple(INDEX_DTYPES)
ROW_CHUNK = 256
BYTE_CHUNK = 65536
COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


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
    lens: Mapping[str, Any] = field(default_factory=lambda: dict(LOGIT_LENS))
    layer_kinds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Frozen: fill the derived default (embeddings, then whole layers) in place once.
        if not self.layer_kinds:
            object.__setattr__(self, "layer_kinds", ("emb",) + ("layer",) * (self.num_layers - 1))
        else:
            object.__setattr__(self, "layer_kinds", tuple(self.layer_kinds))

    @property
    def lens_kind(self) -> str:
        """``"logit"`` or ``"tuned"``: which lens turned residuals into distributions."""
        return str(self.lens.get("kind", "logit"))

    @property
    def sublayers(self) -> bool:
        """True when the rows include the residual between each layer's attention and MLP."""
        return "attn" in self.layer_kinds

    @property
    def decoder_layers(self) -> int:
        """Number of decoder layers (whole-layer lens rows, not counting the embeddings)."""
        return sum(kind in ("layer", "mlp") for kind in self.layer_kinds)

    @property
    def depths(self) -> np.ndarray:
        """``[L]`` decoder depth of each lens row: embeddings 0, layer k k, its attention half k - 0.5.

        Divide by :attr:`decoder_layers` for the depth rescaled to [0, 1].
        """
        depth, out = 0.0, []
        for kind in self.layer_kinds:
            if kind == "attn":
                out.append(depth + 0.5)
            else:
                depth += kind != "emb"
                out.append(depth)
        return np.asarray(out, dtype=np.float64)

    @property
    def whole_layer_rows(self) -> np.ndarray:
        """Indices of the embedding and whole-layer rows: the plain logit-lens profile of any trace."""
        return np.flatnonzero([kind != "attn" for kind in self.layer_kinds])


@dataclass(frozen=True)
class SequenceRecord:
    """One recorded sequence: its tokens and, per row and lens layer, what the logit lens saw.

    Arrays: ``token_ids [T]``, ``entropy [N, L]``, ``topk_ids / topk_probs [N, L, k]``,
    ``target_prob / target_rank [N, L]``, ``output_entropy [N]``, ``renyi [N, A, L]``,
    ``kl_final [N, L]`` (KL(p_final || p_layer) in nats; ``None`` when the recorder did not
    compute it, NaN when read from a file that lacks it). ``complete`` is False for a sequence
    still being written (or abandoned), read with ``Trace.open(path, partial=True)``.
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
    kl_final: np.ndarray | None = None
    complete: bool = True
    #: The :class:`Trace` it was read from (layer names, token texts for its view); not pickled.
    source: Any = field(default=None, compare=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "source": None}  # an open HDF5 file cannot travel to another process

    def _repr_html_(self) -> str:
        """The sequence's view in Jupyter: heatmap, hover, profile (see :mod:`entropylens_hf.display`)."""
        from ..display import view  # a display hook: imported only when a notebook asks for HTML

        return view(self)._repr_html_()

    @property
    def n_rows(self) -> int:
        return int(self.entropy.shape[0])

    @property
    def cross_entropy(self) -> np.ndarray:
        """``[N, L]`` cross-entropy of the token that came next, ``-log target_prob`` (nats)."""
        with np.errstate(divide="ignore"):
            return -np.log(np.asarray(self.target_prob, dtype=np.float64))

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


def label_texts(labels: Mapping[Any, Any]) -> dict[str, str]:
    """Labels as stored: strings as they are, numbers and booleans as their JSON text.

    ``{"n": 3, "ok": True}`` is stored as ``{"n": "3", "ok": "true"}``. ``None``, lists and
    objects are refused (:class:`ValueError` naming the label): there is no one obvious
    text for them, and a Python repr such as ``"{'b': 1}"`` is no label anyone filters by.
    """
    out = {}
    for key, value in labels.items():
        if isinstance(value, str):
            out[str(key)] = value
        elif isinstance(value, (bool, int, float, np.integer, np.floating, np.bool_)):
            out[str(key)] = json.dumps(value.item() if isinstance(value, np.generic) else value)
        else:
            kind = "null" if value is None else type(value).__name__
            raise ValueError(f"label {key!r} has a {kind} value; labels are strings, numbers or booleans")
    return out


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def check_is_trace(f: h5py.File, path: Path) -> None:
    fmt = _attr(f, path, "format", _text, None)
    if fmt != FORMAT_NAME:
        raise TraceError(
            f"{path}: an HDF5 file, but not an entropylens trace (no format='{FORMAT_NAME}' attribute); "
            "record one with `entropylens record` or EntropyLens.record()"
        )
    version = _attr(f, path, "schema_version", _integer, -1)
    if version > SCHEMA_VERSION:
        raise TraceError(
            f"{path}: trace schema version {version} is newer than this entropylens-hf "
            f"({__version__}) reads (up to {SCHEMA_VERSION}); upgrade: pip install -U entropylens-hf"
        )
    if version < 1:
        raise TraceError(f"{path}: trace has no valid schema_version attribute; the file is damaged")
    for group in ("tokens", "rows", "sequences", "runs"):
        try:
            obj = f.get(group)
        except (KeyError, OSError, RuntimeError) as exc:
            raise TraceError(f"{path}: damaged trace: '/{group}' cannot be read ({first_line(exc)})") from None
        if obj is None:
            raise TraceError(f"{path}: trace is missing the '/{group}' group; the file is damaged")
        if not isinstance(obj, h5py.Group):
            raise TraceError(f"{path}: damaged trace: '/{group}' should be a group, not a {type(obj).__name__.lower()}")


def write_metadata_attrs(f: h5py.File, m: TraceMetadata) -> None:
    f.attrs["format"] = FORMAT_NAME
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["library_version"] = __version__
    f.attrs["created_utc"] = m.created_utc or now_utc()
    f.attrs["model_name"] = m.model_name
    f.attrs["model_config"] = json.dumps(dict(m.model_config), default=str)
    f.attrs["tokenizer_name"] = m.tokenizer_name
    f.attrs["num_layers"] = m.num_layers
    f.attrs["layer_names"] = json.dumps(list(m.layer_names))
    f.attrs["vocab_size"] = m.vocab_size
    f.attrs["top_k"] = m.top_k
    f.attrs["renyi_alphas"] = json.dumps([_alpha_to_json(a) for a in m.renyi_alphas])
    f.attrs["lens"] = json.dumps(dict(m.lens), default=str)
    f.attrs["layer_kinds"] = json.dumps(list(m.layer_kinds))


def _alpha_to_json(a: float) -> float | str:
    return "inf" if np.isinf(a) else float(a)


def first_line(exc: BaseException) -> str:
    text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if not isinstance(v, str):
        raise TypeError(f"a string expected, found {type(v).__name__}")
    return v


def _integer(v: Any) -> int:
    if isinstance(v, np.ndarray) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"an integer expected, found {v!r}")
    return int(v)


def _json_list(v: Any) -> list:
    value = json.loads(_text(v))
    if not isinstance(value, list):
        raise TypeError("a JSON list expected")
    return value


def _json_object(v: Any) -> dict:
    value = json.loads(_text(v))
    if not isinstance(value, dict):
        raise TypeError("a JSON object expected")
    return value


def _alphas(v: Any) -> tuple[float, ...]:
    values = tuple(float(a) for a in _json_list(v))
    if any(np.isnan(a) or a < 0 for a in values):
        raise ValueError("orders must be >= 0")
    return values


_MISSING = object()


def _attr(f: h5py.File, path: Path, name: str, convert: Any, default: Any = _MISSING) -> Any:
    """A file attribute converted by ``convert``; one :class:`TraceError` naming it if it is missing or malformed."""
    try:
        present = name in f.attrs
        value = f.attrs[name] if present else None
    except (OSError, RuntimeError, KeyError) as exc:
        raise TraceError(f"{path}: damaged trace: the file attributes cannot be read ({first_line(exc)})") from None
    if not present:
        if default is _MISSING:
            raise TraceError(f"{path}: damaged trace: the '{name}' attribute is missing")
        return default
    try:
        return convert(value)
    except (TypeError, ValueError) as exc:
        raise TraceError(f"{path}: damaged trace: the '{name}' attribute is malformed ({first_line(exc)})") from None


def _lens(v: Any) -> dict:
    value = _json_object(v)
    if not isinstance(value.get("kind"), str):
        raise ValueError("no lens kind")
    return value


def _layer_kinds(v: Any) -> tuple[str, ...]:
    kinds = tuple(_json_list(v))
    odd = [k for k in kinds if k not in LAYER_KINDS]
    if odd:
        raise ValueError(f"unknown layer kind {odd[0]!r}")
    return kinds


def read_metadata(f: h5py.File, path: Path) -> TraceMetadata:
    m = TraceMetadata(
        model_name=_attr(f, path, "model_name", _text, ""),
        num_layers=_attr(f, path, "num_layers", _integer),
        layer_names=tuple(_attr(f, path, "layer_names", _json_list, [])),
        vocab_size=_attr(f, path, "vocab_size", _integer),
        top_k=_attr(f, path, "top_k", _integer),
        renyi_alphas=_attr(f, path, "renyi_alphas", _alphas, ()),
        tokenizer_name=_attr(f, path, "tokenizer_name", _text, ""),
        model_config=_attr(f, path, "model_config", _json_object, {}),
        schema_version=_attr(f, path, "schema_version", _integer),
        library_version=_attr(f, path, "library_version", _text, ""),
        created_utc=_attr(f, path, "created_utc", _text, ""),
        lens=_attr(f, path, "lens", _lens, dict(LOGIT_LENS)),
        layer_kinds=_attr(f, path, "layer_kinds", _layer_kinds, ()),
    )
    for name, value in (("num_layers", m.num_layers), ("vocab_size", m.vocab_size), ("top_k", m.top_k)):
        if value < 1:
            raise TraceError(f"{path}: damaged trace: the '{name}' attribute is {value}")
    if len(m.layer_names) not in (0, m.num_layers):
        raise TraceError(f"{path}: damaged trace: {len(m.layer_names)} layer_names for num_layers={m.num_layers}")
    if len(m.layer_kinds) != m.num_layers:
        raise TraceError(f"{path}: damaged trace: {len(m.layer_kinds)} layer_kinds for num_layers={m.num_layers}")
    return m
