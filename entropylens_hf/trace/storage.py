"""HDF5 access shared by writer and reader: opening with one-line errors, extendable columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from ..errors import TraceError
from .schema import _BYTE_CHUNK, _COMPRESSION

def _open_h5(path: Path, mode: str) -> h5py.File:
    """Open an HDF5 file, turning h5py's low-level errors into one line that names the problem."""
    if not path.exists():
        raise TraceError(f"{path}: no such trace file")
    if path.is_dir():
        raise TraceError(f"{path}: is a directory, not a trace file")
    if not h5py.is_hdf5(str(path)):
        raise TraceError(f"{path}: not an HDF5 file, so not an entropylens trace")
    try:
        if mode == "r":
            return h5py.File(path, "r", libver="latest", swmr=True)
        return h5py.File(path, mode, libver="latest")
    except OSError as exc:
        text = str(exc)
        if "already open for write" in text or "file close degree" in text or "unable to lock" in text:
            raise _UncleanFile(text) from exc
        raise TraceError(f"{path}: cannot open the trace ({text.splitlines()[0]})") from exc


class _UncleanFile(Exception):
    """A writer was killed while the file was open for SWMR writing."""


def _read_string_column(group: h5py.Group, name: str, start: int, stop: int) -> list[str]:
    ends = group[f"{name}_end"]
    if stop <= start:
        return []
    last = ends[start:stop]
    first = ends[start - 1] if start > 0 else 0
    raw = group[f"{name}_bytes"][first : last[-1]].tobytes()
    bounds = np.concatenate([[first], last]) - first
    return [raw[bounds[i] : bounds[i + 1]].decode("utf-8", errors="replace") for i in range(stop - start)]



def _create_column(group: h5py.Group, name: str, dtype: Any, tail: tuple[int, ...], chunk_rows: int) -> None:
    group.create_dataset(
        name,
        shape=(0, *tail),
        maxshape=(None, *tail),
        dtype=dtype,
        chunks=(chunk_rows, *tail) if all(tail) else None,
        **(_COMPRESSION if all(tail) else {}),
    )


def _create_string_column(group: h5py.Group, name: str) -> None:
    # Text as UTF-8 bytes plus end offsets: fixed-size types keep SWMR appends simple.
    _create_column(group, f"{name}_bytes", np.uint8, (), _BYTE_CHUNK)
    _create_column(group, f"{name}_end", np.int64, (), 4096)


def _append(dataset: h5py.Dataset, values: np.ndarray) -> None:
    n = dataset.shape[0]
    dataset.resize(n + len(values), axis=0)
    dataset[n:] = values


def _append_strings(group: h5py.Group, name: str, texts: Sequence[str]) -> None:
    encoded = [t.encode("utf-8") for t in texts]
    ends_ds = group[f"{name}_end"]
    base = int(ends_ds[-1]) if ends_ds.shape[0] else 0
    ends = base + np.cumsum([len(e) for e in encoded], dtype=np.int64)
    _append(group[f"{name}_bytes"], np.frombuffer(b"".join(encoded), dtype=np.uint8))
    _append(ends_ds, ends)

