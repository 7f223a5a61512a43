"""Recover a trace left open by a killed writer."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import TraceError
from .locking import WriterLock
from .reader import Trace
from .writer import TraceWriter


def recover_trace(path: str | os.PathLike) -> int:
    """Rewrite a trace left open by a killed writer, keeping its complete sequences.

    Returns how many sequences were kept. Sequences the writer was still writing live
    (status 0) are kept as abandoned (status 2) with every row flushed before the kill;
    one with no row yet is dropped. Rows written after the last index entry are dropped, and
    so are sequences that cannot be read (damaged). The original is replaced atomically.
    Refused while a live writer holds the file.
    """
    path = Path(path)
    lock = WriterLock(path)
    lock.acquire()
    try:
        return rewrite_locked(path)
    finally:
        lock.release()


def rewrite_locked(path: Path, batch: int = 256) -> int:
    """:func:`recover_trace` for a caller that holds the writer lock.

    Sequences are copied ``batch`` at a time, so memory stays bounded whatever the file size.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".recover", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    kept = 0
    try:
        with Trace.open(path, partial=True) as src, TraceWriter(tmp, src.metadata, vocabulary=src.vocabulary) as w:
            for run in src.runs():
                w._append_run(run)
            records = []
            for i in range(len(src)):
                try:
                    record = src[i]
                except TraceError:
                    continue
                if record.n_rows:  # an in-progress sequence reads complete=False: written as abandoned
                    records.append(record)
                if len(records) == batch:
                    kept += len(w.write(records))
                    records = []
            kept += len(w.write(records))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return kept
