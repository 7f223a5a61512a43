"""Moved to :mod:`entropylens_hf.lens.tuned`; this alias keeps the old import path for one release."""

import sys

from .lens import tuned as _moved

sys.modules[__name__] = _moved
