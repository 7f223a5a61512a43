"""Moved to :mod:`entropylens_hf.lens.metrics`; this alias keeps the old import path for one release."""

import sys

from .lens import metrics as _moved

sys.modules[__name__] = _moved
