"""Moved to :mod:`entropylens_hf.recording.live`; this alias keeps the old import path for one release."""

import sys

from .recording import live as _moved

sys.modules[__name__] = _moved
