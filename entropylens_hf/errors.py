"""Exceptions with messages that say what is wrong and what to do.

All derive from :class:`EntropyLensError`, which the CLI turns into one line and exit code 2.
"""

from __future__ import annotations


class EntropyLensError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class TraceError(EntropyLensError, ValueError):
    """A trace file is missing, damaged, foreign, too new, or incompatible with a write."""


class UnsupportedModelError(EntropyLensError, TypeError):
    """The logit lens cannot be resolved for this model without explicit arguments."""


class UnsupportedGenerationError(EntropyLensError, ValueError):
    """A generation mode the recorder cannot record faithfully (beam search, assisted decoding...)."""


class LensMismatchError(EntropyLensError):
    """A tuned lens used with a model (or a trace) it was not made for."""
