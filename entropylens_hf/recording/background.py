"""Lens blocks resolved in a worker thread while ``generate`` goes on (CPU).

Why: on CPU a decoding step at small batches is bound by reading the weights and by Python
overhead, and gains little from more intra-op threads, while the lens product is bound by
arithmetic. Measured on a 2-core AMD EPYC (AVX2, torch 2.13.0+cpu): SmolLM2-135M's batch-1
generate took the same time with one intra-op thread as with two, so a worker thread with
the other core resolves the lens blocks almost for free; the same worker beside a generate
that kept both threads slowed it by 1.5-1.7x (its parallel regions wait for a descheduled
thread). So for the duration of a recorded call the caller's thread gives ``threads`` of its
intra-op threads to the worker (``torch.set_num_threads`` is per thread); when generation
ends, it helps the worker with the blocks still waiting.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np
import torch

from .state import HostBlock

__all__ = ["BlockWorker", "PendingBlock", "background_threads", "caller_threads", "check_background",
           "thread_counts_are_per_thread"]


def background_threads(setting: "bool | int | str", device: torch.device, threads: int) -> int:
    """Intra-op threads to give the worker (0: resolve in the caller's thread), from ``background``.

    ``"auto"`` or ``True``: half the caller's ``threads``; ``False`` or 0: none; an int: that
    many, leaving the caller at least one. None wherever it cannot pay: on an accelerator
    (its kernels already run asynchronously), with fewer than two threads, or where the
    thread count is one for the whole process (:func:`thread_counts_are_per_thread`).
    """
    check_background(setting)
    if setting is False or device.type != "cpu" or threads < 2 or not thread_counts_are_per_thread():
        return 0
    return threads // 2 if setting == "auto" or setting is True else min(setting, threads - 1)


def check_background(setting: object) -> None:
    """Refuse a ``background`` setting that is none of ``"auto"``, ``True``, ``False`` or a thread count."""
    if not (setting == "auto" or type(setting) is bool or (type(setting) is int and setting >= 0)):
        raise ValueError(f"background must be 'auto', True, False or a thread count >= 0, got {setting!r}")


_PER_THREAD: list[bool] = []  # the answer, once found


def thread_counts_are_per_thread() -> bool:
    """Whether ``torch.set_num_threads`` in one thread leaves another's count alone (OpenMP builds: yes).

    Found once by trying it (with two threads or more): in a build whose count is
    process-wide the model would get the worker's count too, and the worker would cost.
    """
    if _PER_THREAD:
        return _PER_THREAD[0]
    before = torch.get_num_threads()
    if before < 2:
        return False
    probe = threading.Thread(target=torch.set_num_threads, args=(1,), name="entropylens-thread-probe")
    probe.start()
    probe.join()
    after = torch.get_num_threads()
    if after != before:
        torch.set_num_threads(before)
    _PER_THREAD.append(after == before)
    return after == before


class PendingBlock:
    """A block handed to the worker: reads like :class:`HostBlock` once resolved."""

    def __init__(self, future: Future, compute: Callable[[], HostBlock], threads: int):
        self.future = future
        self.compute = compute
        self.threads = threads
        self._block: HostBlock | None = None

    def done(self) -> bool:
        return self._block is not None or self.future.done()

    def take_back(self) -> bool:
        """Resolve it in the calling thread (with the worker's thread count) if the worker has not started it."""
        if self._block is None and self.future.cancel():
            with caller_threads(self.threads):
                self._block = self.compute()
        return self._block is not None

    def resolve_here(self) -> None:
        """Take it back, or wait for the worker (and re-raise its error)."""
        if not self.take_back():
            self._block = self.future.result()

    def arrays(self) -> dict[str, np.ndarray]:
        self.resolve_here()
        return self._block.arrays()


class BlockWorker:
    """One worker thread with ``threads`` intra-op threads and at most ``limit`` blocks outstanding.

    Every block runs with ``threads`` intra-op threads, whichever thread resolves it, so a
    recording's numbers do not depend on timing (they match a recording made with that many
    threads; with another count, reductions may round differently in the last bit). Over the
    limit the caller resolves the block itself: generation waits either way, and both the
    caller's threads and the worker's stay at work instead of one waiting.
    """

    def __init__(self, threads: int, limit: int = 4):
        self.threads = int(threads)
        self.limit = int(limit)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="entropylens-lens", initializer=torch.set_num_threads,
                                        initargs=(self.threads,))
        self._outstanding: deque[PendingBlock] = deque()

    def submit(self, compute: Callable[[], HostBlock]) -> "PendingBlock | HostBlock":
        """Hand ``compute`` to the worker (or run it here over the limit); a failed earlier block raises now."""
        while self._outstanding and self._outstanding[0].done():
            self._outstanding.popleft().resolve_here()  # re-raises the worker's error, if any
        if len(self._outstanding) >= self.limit:
            with caller_threads(self.threads):
                return compute()
        pending = PendingBlock(self._pool.submit(compute), compute, self.threads)
        self._outstanding.append(pending)
        return pending

    def drain(self) -> None:
        """Resolve every outstanding block: the caller takes them back from the newest while the worker goes on from the oldest."""
        for pending in reversed(self._outstanding):
            if not pending.take_back():
                break  # the worker has started this one: all older ones are its too
        for pending in self._outstanding:
            pending.resolve_here()
        self._outstanding.clear()

    def abandon(self) -> None:
        """The call failed: drop what has not started, wait for what runs, ignore its errors."""
        for pending in self._outstanding:
            pending.future.cancel()
        for pending in self._outstanding:
            with contextlib.suppress(BaseException):
                if not pending.future.cancelled():
                    pending.future.result()
        self._outstanding.clear()

    def close(self) -> None:
        self.abandon()
        self._pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def caller_threads(count: int) -> Iterator[None]:
    """The calling thread runs with ``count`` intra-op threads inside the block (restored on exit)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
