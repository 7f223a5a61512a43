"""Moved to :mod:`entropylens_hf.recording.recorder`; this alias keeps the old import path for one release."""

import sys

from .recording import recorder as _moved

sys.modules[__name__] = _moved
