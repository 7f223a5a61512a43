"""Moved to :mod:`entropylens_hf.recording.chat`; this alias keeps the old import path for one release."""

import sys

from .recording import chat as _moved

sys.modules[__name__] = _moved
