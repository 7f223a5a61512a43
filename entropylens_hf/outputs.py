"""Output paths checked before any work starts, so a long run never ends in an unwritable file."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import EntropyLensError

__all__ = ["check_output"]


def check_output(option: str, out: Path) -> None:
    """An output file can be written: its folder exists and is writable, and it is not a folder."""
    if out.is_dir():
        raise EntropyLensError(f"{option} {out}: is a directory; give a file name")
    if not out.parent.is_dir():
        raise EntropyLensError(f"{option} {out}: the folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise EntropyLensError(f"{option} {out}: not writable here (read-only folder or file); choose another place")
