"""The paper's analyses on recorded traces: profiles, depth rescaling, expansion and pruning,
classification, family fingerprints, and layer skipping.

Modules, one responsibility each:

* :mod:`.profiles` - token, sequence (mean or windowed) and group profiles; depth rescaling.
* :mod:`.dynamics` - entropy steps per layer, expansion vs pruning, layers of maximal change.
* :mod:`.attribution` - expansion and pruning by attention vs MLP steps (sub-layer traces).
* :mod:`.classify` - k-NN cross-validation of a label from profiles, with a dummy baseline.
* :mod:`.fingerprint` - 2-D embedding of profiles of several models (PCA or t-SNE), as a figure.
* :mod:`.evaluation` - teacher-forced scoring: multiple choice, next-token accuracy, text profiles.
* :mod:`.skipping` - ``skip_layers`` and the expansion-vs-pruning skipping experiment.
* :mod:`.commands` - the ``entropylens classify | skip-eval | fingerprint`` subcommands.

Names are imported lazily: the numpy-only analyses do not pull in torch, scikit-learn or
matplotlib. Optional dependencies: ``pip install 'entropylens-hf[analysis,plots]'``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AnalysisError": "._support",
    "token_profiles": ".profiles",
    "window_means": ".profiles",
    "sequence_profile": ".profiles",
    "ProfileSet": ".profiles",
    "profile_matrix": ".profiles",
    "GroupProfile": ".profiles",
    "group_profiles": ".profiles",
    "normalized_depth": ".profiles",
    "rescale_depth": ".profiles",
    "EXPANSION": ".dynamics",
    "PRUNING": ".dynamics",
    "entropy_steps": ".dynamics",
    "step_kinds": ".dynamics",
    "extreme_layers": ".dynamics",
    "top_layers": ".dynamics",
    "LayerDynamics": ".dynamics",
    "layer_dynamics": ".dynamics",
    "group_dynamics": ".dynamics",
    "SublayerSteps": ".attribution",
    "sublayer_steps": ".attribution",
    "StepSites": ".attribution",
    "step_sites": ".attribution",
    "SublayerShares": ".attribution",
    "sublayer_shares": ".attribution",
    "trace_sublayer_shares": ".attribution",
    "format_sublayer_shares": ".attribution",
    "ClassificationResult": ".classify",
    "knn_cross_validate": ".classify",
    "classify_trace": ".classify",
    "format_classification": ".classify",
    "Fingerprint": ".fingerprint",
    "embed_2d": ".fingerprint",
    "fingerprint_traces": ".fingerprint",
    "plot_fingerprint": ".fingerprint",
    "MultipleChoiceItem": ".evaluation",
    "read_multiple_choice": ".evaluation",
    "multiple_choice_accuracy": ".evaluation",
    "next_token_accuracy": ".evaluation",
    "text_profiles": ".evaluation",
    "skip_layers": ".skipping",
    "SkipExperiment": ".skipping",
    "skip_experiment": ".skipping",
    "format_skip_experiment": ".skipping",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from ._support import AnalysisError
    from .attribution import (StepSites, SublayerShares, SublayerSteps, format_sublayer_shares, step_sites,
                              sublayer_shares, sublayer_steps, trace_sublayer_shares)
    from .classify import ClassificationResult, classify_trace, format_classification, knn_cross_validate
    from .dynamics import (EXPANSION, PRUNING, LayerDynamics, entropy_steps, extreme_layers, group_dynamics,
                           layer_dynamics, step_kinds, top_layers)
    from .evaluation import (MultipleChoiceItem, multiple_choice_accuracy, next_token_accuracy, read_multiple_choice,
                             text_profiles)
    from .fingerprint import Fingerprint, embed_2d, fingerprint_traces, plot_fingerprint
    from .profiles import (GroupProfile, ProfileSet, group_profiles, normalized_depth, profile_matrix, rescale_depth,
                           sequence_profile, token_profiles, window_means)
    from .skipping import SkipExperiment, format_skip_experiment, skip_experiment, skip_layers


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
