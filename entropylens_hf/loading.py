"""Moved to :mod:`entropylens_hf.models.loading`; this alias keeps the old import path for one release."""

import sys

from .models import loading as _moved

sys.modules[__name__] = _moved
