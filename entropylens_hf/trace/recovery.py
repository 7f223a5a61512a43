"""Recover a trace left open by a killed writer."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .reader import Trace
from .writer import TraceWriter

def recover_trace(path: str | os.PathLike) -> int:
    """Rewrite a trace left open by a killed writer, keeping its complete sequences.

    Returns how many sequences were kept. Partial rows written after the last complete
    sequence are dropped. The original is replaced atomically.
    """
    path = Path(path)
    with Trace.open(path) as src:
        meta = src.metadata
        records = list(src)
        runs = src.runs()
        vocabulary = src.vocabulary
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".recover", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        with TraceWriter(tmp, meta, vocabulary=vocabulary) as w:
            for run in runs:
                w._append_run(run)
            w.write(records)
        shutil.move(str(tmp), str(path))
    finally:
        tmp.unlink(missing_ok=True)
    return len(records)

