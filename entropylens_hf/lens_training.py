"""Moved to :mod:`entropylens_hf.lens.training`; this alias keeps the old import path for one release."""

import sys

from .lens import training as _moved

sys.modules[__name__] = _moved
