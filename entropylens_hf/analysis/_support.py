"""Plumbing shared by the analyses: their error class and lazy imports of optional dependencies.

The analyses need scikit-learn, scipy or matplotlib only for some functions, so those are
imported when first used, with an error that names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import EntropyLensError

__all__ = ["AnalysisError", "require"]

_EXTRA_OF = {"sklearn": "analysis", "scipy": "analysis", "threadpoolctl": "analysis", "matplotlib": "plots"}
_PIP_NAME = {"sklearn": "scikit-learn"}


class AnalysisError(EntropyLensError, ValueError):
    """An analysis cannot run on the data it was given (too few sequences, unknown label...)."""


def require(module: str) -> ModuleType:
    """Import ``module`` (e.g. ``sklearn.neighbors``) or raise an ImportError that says what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        extra = _EXTRA_OF.get(top, "all")
        raise ImportError(
            f"this analysis needs {_PIP_NAME.get(top, top)}: pip install 'entropylens-hf[{extra}]'"
        ) from None
