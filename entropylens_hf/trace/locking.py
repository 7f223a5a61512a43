"""One writer per trace: an exclusive advisory lock on a sidecar file ``TRACE.lock``.

Why a lock of our own: HDF5's "file is already open for write" flag stays set when a writer
is killed, so it cannot tell a live writer from a dead one, and HDF5's own file locks would
also keep a writer out while readers are open. ``flock`` is released by the kernel when the
holder dies, so a lock file left by a killed writer never blocks, and crash recovery runs
only when the lock could be taken, i.e. when the previous writer is really gone. The lock
file names the holder (pid and host) for the message a second writer gets.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from ..errors import TraceError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, one writer is on the user
    fcntl = None

__all__ = ["WriterLock", "lock_path", "lock_holder"]


def lock_path(path: Path) -> Path:
    """The sidecar lock file of a trace: ``run.h5`` -> ``run.h5.lock``."""
    return path.with_name(path.name + ".lock")


def _describe_holder(lock: Path, fd: int) -> str:
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", errors="replace").split()
    except OSError:
        text = []
    if len(text) >= 2 and text[0].isdigit():
        pid, host = int(text[0]), text[1]
        who = "this process" if pid == os.getpid() and host == socket.gethostname() else "process"
        return f"{who} {pid} on {host}"
    return "another process"


def _busy(path: Path, lock: Path, fd: int) -> TraceError:
    holder = _describe_holder(lock, fd)
    hint = (
        "close the other TraceWriter / record() block on this file first"
        if holder.startswith("this process")
        else "wait for it to finish or record into another file"
    )
    return TraceError(f"{path}: being recorded by {holder} (lock {lock.name}); {hint}")


def lock_holder(path: Path) -> TraceError | None:
    """The error a writer would get now if another writer holds ``path``, else None; takes no lock."""
    lock = lock_path(Path(path))
    if fcntl is None:
        return None
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _busy(Path(path), lock, fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


class WriterLock:
    """The exclusive lock a :class:`TraceWriter` holds from before it touches the file until close."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = lock_path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`TraceError` naming the process that holds it."""
        if fcntl is None:
            return
        while True:
            try:
                fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise TraceError(
                    f"{self.path}: cannot create the lock file {self.lock.name} ({exc.strerror}); "
                    f"the folder {self.path.parent} must be writable"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                error = _busy(self.path, self.lock, fd)
                os.close(fd)
                raise error from None
            except OSError as exc:  # a file system without locks (some network mounts)
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    return
                raise
            # The previous holder unlinks the lock file on release; if we locked an unlinked
            # file, another writer may hold the new one: start again on the current file.
            try:
                same = os.stat(self.lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in that order, see :meth:`acquire`)."""
        if self._fd is None:
            return
        try:
            self.lock.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
