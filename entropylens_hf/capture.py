"""Moved to :mod:`entropylens_hf.lens.capture`; this alias keeps the old import path for one release."""

import sys

from .lens import capture as _moved

sys.modules[__name__] = _moved
