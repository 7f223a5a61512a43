"""Moved to :mod:`entropylens_hf.models.fetch`; this alias keeps the old import path for one release."""

import sys

from .models import fetch as _moved

sys.modules[__name__] = _moved
