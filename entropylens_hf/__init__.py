"""entropylens-hf: the Entropy-Lens of Hugging Face language models.

Record, per generated token and per decoder layer, the entropy of the logit-lens
distribution into HDF5 traces; read them back; reproduce the paper's analyses.

The public names are imported lazily, so ``import entropylens_hf.trace`` (used by the
viewer) does not pull in torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS = {
    "EntropyLens": ".recorder",
    "TraceRecorder": ".recorder",
    "LogitLens": ".lens",
    "TunedLens": ".tuned_lens",
    "Trace": ".trace",
    "TraceWriter": ".trace",
    "SequenceRecord": ".trace",
    "TraceMetadata": ".trace",
    "EntropyLensError": ".errors",
    "TraceError": ".errors",
    "UnsupportedModelError": ".errors",
    "UnsupportedGenerationError": ".errors",
    "default_model": ".models",
    "smollm2": ".fetch",
    "fetch_model": ".fetch",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from .errors import EntropyLensError, TraceError, UnsupportedGenerationError, UnsupportedModelError
    from .fetch import fetch_model, smollm2
    from .lens import LogitLens
    from .models import default_model
    from .recorder import EntropyLens, TraceRecorder
    from .tuned_lens import TunedLens
    from .trace import SequenceRecord, Trace, TraceMetadata, TraceWriter


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'entropylens_hf' has no attribute {name!r}")
