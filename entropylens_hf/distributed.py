"""Moved to :mod:`entropylens_hf.recording.distributed`; this alias keeps the old import path for one release."""

import sys

from .recording import distributed as _moved

sys.modules[__name__] = _moved
