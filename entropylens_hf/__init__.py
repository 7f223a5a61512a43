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
    "EntropyLens": ".recording.recorder",
    "TraceRecorder": ".recording.recorder",
    "LogitLens": ".lens.logit",
    "TunedLens": ".lens.tuned",
    "Trace": ".trace",
    "TraceWriter": ".trace",
    "SequenceRecord": ".trace",
    "TraceMetadata": ".trace",
    "EntropyLensError": ".errors",
    "TraceError": ".errors",
    "UnsupportedModelError": ".errors",
    "UnsupportedGenerationError": ".errors",
    "default_model": ".models.bundled",
    "smollm2": ".models.fetch",
    "fetch_model": ".models.fetch",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from .errors import EntropyLensError, TraceError, UnsupportedGenerationError, UnsupportedModelError
    from .models.fetch import fetch_model, smollm2
    from .lens.logit import LogitLens
    from .models.bundled import default_model
    from .recording.recorder import EntropyLens, TraceRecorder
    from .lens.tuned import TunedLens
    from .trace import SequenceRecord, Trace, TraceMetadata, TraceWriter


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'entropylens_hf' has no attribute {name!r}")
