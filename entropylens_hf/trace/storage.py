"""HDF5 access shared by writer and reader: opening with one-line errors, extendable columns."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from ..errors import TraceError
from .schema import BYTE_CHUNK, COMPRESSION

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None


def _check_path(path: Path) -> None:
    """One line for a path that cannot be a trace: missing, dangling link, link loop, folder, not HDF5."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise TraceError(f"{path}: a symbolic link to {os.readlink(path)}, which does not exist") from None
        raise TraceError(f"{path}: no such trace file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TraceError(f"{path}: a symbolic link loop, not a trace file") from None
        raise TraceError(f"{path}: cannot access the trace ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise TraceError(f"{path}: is a directory, not a trace file")
    if not os.access(path, os.R_OK):
        raise TraceError(f"{path}: no permission to read the trace")
    if not h5py.is_hdf5(str(path)):
        raise TraceError(f"{path}: not an HDF5 file, so not an entropylens trace")


def open_h5(path: Path, mode: str) -> h5py.File:
    """Open an HDF5 file, turning h5py's low-level errors into one line that names the problem.

    ``locking=False``: HDF5's own file locks would keep a writer out while readers are open
    (and fail on file systems without locks); writers are kept exclusive by
    :class:`.locking.WriterLock` instead. Readers open in SWMR mode with bounded metadata
    read retries (:func:`_reader_fapl`), so a damaged file fails fast instead of hanging.
    """
    _check_path(path)
    try:
        if mode == "r":
            fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=_reader_fapl())
            return h5py.File(fid)
        return h5py.File(path, mode, libver="latest", locking=False)
    except OSError as exc:
        text = str(exc)
        if "already open for write" in text or "file close degree" in text or "unable to lock" in text:
            raise UncleanFile(text) from exc
        raise TraceError(f"{path}: cannot open the trace ({text.splitlines()[0]})") from exc


class UncleanFile(Exception):
    """A writer was killed while the file was open for SWMR writing."""


# SWMR readers retry a metadata read whose checksum fails, since a writer may be mid-flush.
# HDF5's default (100 attempts, backoff up to an hour in all) makes one flipped byte hang a
# reader; 20 attempts back off for about 1 ms in all (measured: 24 -> ~20 ms, 30 -> 1 s).
_METADATA_READ_ATTEMPTS = 20


def _reader_fapl() -> h5py.h5p.PropFAID:
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fapl.set_file_locking(False, True)
    set_attempts = _hdf5_function("H5Pset_metadata_read_attempts")
    if set_attempts is not None:
        set_attempts(fapl.id, _METADATA_READ_ATTEMPTS)
    return fapl


@functools.lru_cache(maxsize=None)
def _hdf5_function(name: str) -> Any:
    """A C function of the HDF5 library h5py is linked to, where it can be found (else None).

    h5py does not wrap ``H5Pset_metadata_read_attempts``; the library is already loaded,
    so find it among the process's mapped files (Linux) or next to h5py (wheels).
    """
    candidates = []
    try:
        with open("/proc/self/maps") as maps:
            candidates = [line.split()[-1] for line in maps if "libhdf5" in line and "hdf5_hl" not in line]
    except OSError:
        pass
    here = Path(h5py.__file__).parent
    candidates += [str(p) for p in sorted(here.parent.glob("h5py.libs/libhdf5-*")) + sorted(here.glob(".dylibs/libhdf5*"))]
    for candidate in dict.fromkeys(candidates):
        try:
            function = getattr(ctypes.CDLL(candidate), name)
        except (OSError, AttributeError):
            continue
        function.argtypes = [ctypes.c_int64, ctypes.c_uint]
        function.restype = ctypes.c_int
        return function
    return None


# ---------------------------------------------------------------------- disk space

_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 1, 2


class SpaceReservation:
    """Disk space set aside before a write, so HDF5 never meets a full disk half-way through.

    Why: a compressed chunk that grows is rewritten at a new place in the file; if that write
    fails (disk full, file-size limit), the file's index can point at a chunk that was never
    written, and sequences committed long before become unreadable. Reserving the blocks
    first (``fallocate`` past the end of the file, size unchanged) turns a full disk into one
    clean error before anything is touched. The reservation is released after the write.
    Where ``fallocate`` is missing, free space is checked instead (not a guarantee).
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_RDWR)
        self._reserved = 0

    def reserve(self, nbytes: int) -> None:
        """Set ``nbytes`` aside past the end of the file or raise :class:`OSError` (ENOSPC, EFBIG)."""
        size = os.fstat(self._fd).st_size
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource is not None else -1
        if limit not in (-1, getattr(resource, "RLIM_INFINITY", -1)) and size + nbytes > limit:
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        fallocate = _libc_fallocate()
        if fallocate is not None:
            if fallocate(self._fd, _FALLOC_FL_KEEP_SIZE, size, nbytes) == 0:
                self._reserved = size + nbytes
                return
            err = ctypes.get_errno()
            if err not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise OSError(err, os.strerror(err))
        vfs = os.statvfs(self.path)  # no fallocate here: check the free space instead
        if vfs.f_bavail * vfs.f_frsize < nbytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def release(self) -> None:
        """Give back the reserved blocks the write did not use."""
        if self._reserved:
            size = os.fstat(self._fd).st_size
            if self._reserved > size:
                _libc_fallocate()(self._fd, _FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE, size, self._reserved - size)
            self._reserved = 0

    def close(self) -> None:
        self.release()
        os.close(self._fd)


@functools.lru_cache(maxsize=None)
def _libc_fallocate() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


def write_error(path: Path, exc: BaseException) -> TraceError:
    """One line for a write that failed: a full disk and a size limit are named as such."""
    text = f"{getattr(exc, 'errno', '')} {exc}"
    for number, what in ((errno.ENOSPC, "no space left on device"), (errno.EFBIG, "file size limit exceeded"),
                         (errno.EDQUOT, "disk quota exceeded")):
        if getattr(exc, "errno", None) == number or f"errno = {number}," in text:
            return TraceError(
                f"{what} writing {path}; the sequences committed before are kept, make room and run again to resume"
            )
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return TraceError(f"cannot write {path} ({first}); the sequences committed before are kept")


def read_string_column(group: h5py.Group, name: str, start: int, stop: int) -> list[str]:
    ends = group[f"{name}_end"]
    if stop <= start:
        return []
    last = ends[start:stop]
    first = ends[start - 1] if start > 0 else 0
    raw = group[f"{name}_bytes"][first : last[-1]].tobytes()
    bounds = np.concatenate([[first], last]) - first
    return [raw[bounds[i] : bounds[i + 1]].decode("utf-8", errors="replace") for i in range(stop - start)]


def create_column(group: h5py.Group, name: str, dtype: Any, tail: tuple[int, ...], chunk_rows: int) -> None:
    group.create_dataset(
        name,
        shape=(0, *tail),
        maxshape=(None, *tail),
        dtype=dtype,
        chunks=(chunk_rows, *tail) if all(tail) else None,
        **(COMPRESSION if all(tail) else {}),
    )


def create_string_column(group: h5py.Group, name: str) -> None:
    # Text as UTF-8 bytes plus end offsets: fixed-size types keep SWMR appends simple.
    create_column(group, f"{name}_bytes", np.uint8, (), BYTE_CHUNK)
    create_column(group, f"{name}_end", np.int64, (), 4096)


def extend_column(dataset: h5py.Dataset, values: np.ndarray) -> None:
    n = dataset.shape[0]
    dataset.resize(n + len(values), axis=0)
    dataset[n:] = values
    # Write the chunks now: a failure then raises here, not later when h5py frees the object.
    dataset.flush()


def write_budget(datasets: Sequence[h5py.Dataset], new_bytes: int) -> int:
    """Bytes to reserve before appending ``new_bytes`` of raw data to ``datasets``.

    An upper bound: the data uncompressed, twice (old and new place of a rewritten chunk),
    plus one whole chunk per dataset (its last, partly filled chunk is rewritten), plus
    room for HDF5's own metadata.
    """
    chunks = sum(int(np.prod(d.chunks or d.shape or (1,))) * d.dtype.itemsize for d in datasets)
    return 2 * new_bytes + chunks + (256 << 10)


@dataclass(frozen=True)
class EncodedStrings:
    """Texts as a string column stores them, UTF-8 bytes and end offsets: encode once, write often.

    A trace stores its vocabulary (262k texts for Gemma 3) in every new file; encoding it costs
    more than writing it, so the recorder keeps one per tokenizer.
    """

    data: np.ndarray  # uint8, every text's bytes concatenated
    ends: np.ndarray  # int64, the end offset of each text
    # The compressed chunks of a fresh column holding these texts, as HDF5 stored them the
    # first time (column suffix -> [(filter mask, bytes)]): later files copy them verbatim.
    stored_chunks: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, texts: Sequence[str]) -> "EncodedStrings":
        encoded = [t.encode("utf-8") for t in texts]
        ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), ends)

    def __len__(self) -> int:
        return int(self.ends.shape[0])

    @property
    def longest(self) -> int:
        """Bytes of the longest text (0 when empty)."""
        return int(np.diff(self.ends, prepend=0).max()) if len(self) else 0


def write_new_strings(group: h5py.Group, name: str, strings: EncodedStrings) -> None:
    """Fill a just-created, empty string column with ``strings``, compressing them only once.

    Why: gzip of a 262k vocabulary (4 MB) is most of what a new trace file costs (85 ms on
    a 2-core CPU). The first file compresses as usual and keeps HDF5's chunks, read back
    raw; every later file of the same tokenizer writes those chunks as they are.
    """
    columns = {"_bytes": strings.data, "_end": strings.ends}
    datasets = {suffix: group[name + suffix] for suffix in columns}
    if any(d.shape[0] for d in datasets.values()):
        raise ValueError(f"string column {name!r} is not empty")
    if strings.stored_chunks and _same_layout(strings.stored_chunks, datasets):
        for suffix, dataset in datasets.items():
            dataset.resize(len(columns[suffix]), axis=0)
            rows = dataset.chunks[0]
            for i, (mask, chunk) in enumerate(strings.stored_chunks[suffix]["chunks"]):
                dataset.id.write_direct_chunk((i * rows,), chunk, mask)
            dataset.flush()
        return
    append_strings(group, name, strings)
    if strings.stored_chunks:  # kept for another layout (a trace's): keep that one
        return
    stored = {}
    for suffix, dataset in datasets.items():
        rows = dataset.chunks[0]
        stored[suffix] = {"layout": _layout(dataset),
                          "chunks": [dataset.id.read_direct_chunk((i * rows,))
                                     for i in range(-(-dataset.shape[0] // rows))]}
    strings.stored_chunks.update(stored)


def _layout(dataset: h5py.Dataset) -> tuple:
    """What a raw chunk's bytes depend on: dtype, chunk shape and filter pipeline."""
    plist = dataset.id.get_create_plist()
    return dataset.dtype.str, dataset.chunks, tuple(plist.get_filter(i)[:3] for i in range(plist.get_nfilters()))


def _same_layout(stored: dict, datasets: dict) -> bool:
    return all(suffix in stored and stored[suffix]["layout"] == _layout(d) for suffix, d in datasets.items())


def append_strings(group: h5py.Group, name: str, texts: Sequence[str] | EncodedStrings) -> None:
    strings = texts if isinstance(texts, EncodedStrings) else EncodedStrings.of(texts)
    ends_ds = group[f"{name}_end"]
    base = int(ends_ds[-1]) if ends_ds.shape[0] else 0
    extend_column(group[f"{name}_bytes"], strings.data)
    extend_column(ends_ds, base + strings.ends)

