"""The tuned lens (Belrose et al. 2023, arXiv 2303.08112): a learned affine translator per lens row.

The logit lens reads every residual through the model's final norm and unembedding as if it
were the last layer's; early layers are not in that basis, so their readout is biased. A
tuned lens first maps the residual of lens row ``i`` to ``h + A_i h + b_i`` (``A_i``, ``b_i``
start at zero, so an untrained lens *is* the logit lens) and then applies the same final norm
and unembedding. The last row has no translator: its distribution is the model's own.

A lens is stored as one safetensors file: the translators' weights plus a JSON header that
names the model it was trained for (a fingerprint of its shape), the row layout, the training
settings and the held-out evaluation. The file's sha256 identifies the lens in traces.
Training lives in :mod:`entropylens_hf.lens_training`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import EntropyLensError, LensMismatchError

if TYPE_CHECKING:  # pragma: no cover
    from .logit import LogitLens

__all__ = ["ModelFingerprint", "TunedLens", "file_sha256", "whole_layer_kinds"]

#: The file name ``--lens tuned`` looks for in a model's folder.
LENS_FILE_NAME = "tuned_lens.safetensors"
FORMAT_NAME = "entropylens-tuned-lens"
FORMAT_VERSION = 1
SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def whole_layer_kinds(decoder_layers: int) -> tuple[str, ...]:
    """Row kinds of a lens over whole decoder layers: the embedding output, then one per layer."""
    return ("emb",) + ("layer",) * decoder_layers


@dataclass(frozen=True)
class ModelFingerprint:
    """The shape of the model a lens was trained for; a lens fits only a model of the same shape."""

    model_type: str
    hidden_size: int
    num_layers: int  # decoder layers
    vocab_size: int

    @classmethod
    def of(cls, model: nn.Module, lens: "LogitLens | None" = None) -> "ModelFingerprint":
        """The fingerprint of ``model``, read through its resolved ``lens`` (resolved here if not given)."""
        from .logit import LogitLens

        lens = lens if lens is not None else LogitLens.from_model(model)
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        hidden = lens.unembedding.weight.shape[1] if hasattr(lens.unembedding, "weight") else config.hidden_size
        return cls(str(getattr(config, "model_type", "") or type(model).__name__), int(hidden),
                   len(lens.layers), lens.vocab_size)

    def describe(self) -> str:
        return (f"a {self.model_type} model with {self.num_layers} layers, hidden size {self.hidden_size} "
                f"and a vocabulary of {self.vocab_size}")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TunedLens(nn.Module):
    """One affine translator per lens row except the last, applied in residual form ``h + (A h + b)``.

    >>> tuned = TunedLens.load("lens.safetensors")
    >>> lens = EntropyLens(model, tokenizer, lens=tuned)      # records through the translators
    >>> tuned(residuals)   # [..., R, d] lens rows 0..R-1, translated (or tuned(residuals, rows))

    ``TunedLens.for_model(model)`` makes an identity-initialised lens to train
    (:mod:`entropylens_hf.lens_training`). Translators compute in float32 whatever the
    residuals' dtype; the result is float32.
    """

    def __init__(
        self,
        fingerprint: ModelFingerprint,
        layer_kinds: Sequence[str] | None = None,
        *,
        model_name: str = "",
        training: Mapping[str, Any] | None = None,
        evaluation: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.fingerprint = fingerprint
        self.layer_kinds = tuple(layer_kinds) if layer_kinds is not None else whole_layer_kinds(fingerprint.num_layers)
        self.model_name = model_name
        self.training_settings = dict(training or {})
        self.evaluation = dict(evaluation or {})
        self.path: Path | None = None  # set by load() and save()
        self.sha256: str = ""
        d = fingerprint.hidden_size
        self.translators = nn.ModuleList(nn.Linear(d, d) for _ in range(len(self.layer_kinds) - 1))
        for translator in self.translators:
            nn.init.zeros_(translator.weight)
            nn.init.zeros_(translator.bias)

    @classmethod
    def for_model(cls, model: nn.Module, *, model_name: str | None = None) -> "TunedLens":
        """An untrained (identity) lens shaped for ``model``: it reads exactly like the logit lens."""
        name = model_name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        return cls(ModelFingerprint.of(model), model_name=name)

    @property
    def num_rows(self) -> int:
        """Lens rows covered, the last (untranslated) one included."""
        return len(self.layer_kinds)

    def forward(self, residuals: torch.Tensor, rows: Sequence[int] | None = None) -> torch.Tensor:
        """Translate residuals ``[..., R, d]``: ``residuals[..., j, :]`` is lens row ``rows[j]`` (default ``j``).

        The last lens row has no translator: it is returned as it is, in float32.
        """
        rows = range(residuals.shape[-2]) if rows is None else rows
        if len(rows) != residuals.shape[-2] or any(not 0 <= r < self.num_rows for r in rows):
            raise LensMismatchError(f"a tuned lens of {self.num_rows} lens rows was given rows {list(rows)} "
                                    f"for {residuals.shape[-2]} residuals")
        return torch.stack([self.translate_row(residuals[..., j, :], r) for j, r in enumerate(rows)], dim=-2)

    def translate_row(self, hidden: torch.Tensor, row: int) -> torch.Tensor:
        """Residuals ``[..., d]`` of lens row ``row`` through its translator: ``h + A h + b`` in float32."""
        x = hidden.float()
        if row >= len(self.translators):
            return x
        translator = self.translators[row]
        if translator.weight.device != x.device:
            self.to(x.device)
        return x + translator(x)

    # ------------------------------------------------------------------ fitting a model
    def check_model(self, model: nn.Module, lens: "LogitLens | None" = None) -> None:
        """Refuse, in one line, a model of another shape than the one this lens was trained for."""
        self.check_fingerprint(ModelFingerprint.of(model, lens))

    def check_fingerprint(self, actual: ModelFingerprint) -> None:
        mine = self.fingerprint
        name = self.path.name if self.path is not None else "the tuned lens"
        if (mine.hidden_size, mine.num_layers, mine.vocab_size) != (actual.hidden_size, actual.num_layers, actual.vocab_size):
            raise LensMismatchError(
                f"{name} was trained for {mine.describe()}, but this is {actual.describe()}; "
                "train a lens for this model with `entropylens train-lens MODEL --text FILE --out LENS`"
            )
        if mine.model_type != actual.model_type:
            warnings.warn(f"{name} was trained for a {mine.model_type} model, this one is {actual.model_type} "
                          "(same shape, so it is used anyway)", stacklevel=3)

    def check_rows(self, layer_kinds: Sequence[str]) -> None:
        """Refuse a recording whose lens rows are not the ones the translators were trained on."""
        if tuple(layer_kinds) != self.layer_kinds:
            name = self.path.name if self.path is not None else "the tuned lens"
            mine = "sub-layer rows" if "attn" in self.layer_kinds else "whole layers"
            theirs = "sub-layer rows (--sublayers)" if "attn" in layer_kinds else "whole layers"
            raise LensMismatchError(f"{name} translates {mine} ({len(self.layer_kinds)} rows), but this recording reads "
                                    f"{theirs} ({len(layer_kinds)} rows); record without --sublayers, or with the logit lens")

    def trace_lens(self) -> dict[str, str]:
        """The trace's ``lens`` attribute for recordings through this lens."""
        return {"kind": "tuned", "name": self.path.name if self.path is not None else "", "sha256": self.sha256}

    # ------------------------------------------------------------------ file format
    def header(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "fingerprint": asdict(self.fingerprint),
            "layer_kinds": list(self.layer_kinds),
            "training": self.training_settings,
            "evaluation": self.evaluation,
        }

    def save(self, path: str | os.PathLike, *, dtype: torch.dtype | str = torch.float32) -> str:
        """Write the lens (atomically) as safetensors in ``dtype``; returns and keeps the file's sha256."""
        from safetensors.torch import save_file

        dtype = SAVE_DTYPES[dtype] if isinstance(dtype, str) else dtype
        path = Path(path)
        tensors = {name: t.detach().to("cpu", dtype).contiguous() for name, t in self.state_dict().items()}
        metadata = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "lens": json.dumps(self.header())}
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file owner-only; a lens is an ordinary file
        os.replace(tmp, path)
        self.path, self.sha256 = path, file_sha256(path)
        return self.sha256

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TunedLens":
        """Read a lens written by :meth:`save`; one-line errors for a missing, foreign or damaged file."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        header = read_header(path)
        try:
            fingerprint = ModelFingerprint(**header["fingerprint"])
            lens = cls(fingerprint, header["layer_kinds"], model_name=header.get("model_name", ""),
                       training=header.get("training"), evaluation=header.get("evaluation"))
            with safe_open(str(path), framework="pt") as f:
                state = {name: f.get_tensor(name).float() for name in f.keys()}
            lens.load_state_dict(state)
        except (KeyError, TypeError, RuntimeError, SafetensorError) as exc:
            raise EntropyLensError(f"{path}: a damaged tuned-lens file ({str(exc).splitlines()[0]})") from None
        lens.path, lens.sha256 = path, file_sha256(path)
        return lens.eval()


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a lens file, without reading its weights (to check a file before a model loads)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise EntropyLensError(f"{path}: no such tuned-lens file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise EntropyLensError(f"{path}: not a safetensors file ({str(exc).splitlines()[0]})") from None
    if metadata.get("format") != FORMAT_NAME:
        raise EntropyLensError(f"{path}: a safetensors file but not a tuned lens (no '{FORMAT_NAME}' header); "
                               "make one with `entropylens train-lens`")
    if int(metadata.get("format_version", 0)) > FORMAT_VERSION:
        raise EntropyLensError(f"{path}: tuned-lens format {metadata['format_version']} is newer than this "
                               f"entropylens-hf reads ({FORMAT_VERSION}); upgrade entropylens-hf")
    try:
        return json.loads(metadata["lens"])
    except (KeyError, ValueError):
        raise EntropyLensError(f"{path}: a damaged tuned-lens file (its JSON header is unreadable)") from None
