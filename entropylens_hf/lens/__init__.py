"""The lens: residuals in, logits and their statistics out.

:mod:`.logit` resolves a model's decoder layers, final norm and unembedding (the logit lens);
:mod:`.tuned` is the tuned lens (one affine translator per layer) and :mod:`.training` trains
it; :mod:`.sublayers` and :mod:`.capture` find and hook the residual stream's read-out sites;
:mod:`.metrics` holds the pure statistics (entropy, top-k, ranks, KL). Nothing here knows
about files or ``generate``.
"""

from .logit import LogitLens, resolve_decoder_layers
from .tuned import TunedLens

__all__ = ["LogitLens", "TunedLens", "resolve_decoder_layers"]
