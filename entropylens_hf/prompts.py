"""Moved to :mod:`entropylens_hf.recording.prompts`; this alias keeps the old import path for one release."""

import sys

from .recording import prompts as _moved

sys.modules[__name__] = _moved
