"""Moved to :mod:`entropylens_hf.lens.sublayers`; this alias keeps the old import path for one release."""

import sys

from .lens import sublayers as _moved

sys.modules[__name__] = _moved
