"""Data-parallel recording under the launchers people already use: torchrun, accelerate, Slurm.

The one module that reads the launcher's variables (``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` from torchrun and ``accelerate launch``, ``SLURM_PROCID`` / ``SLURM_NTASKS`` /
``SLURM_LOCALID`` from ``srun``). Each process records its own share of the prompts into its
own shard file; nothing is exchanged while recording. Shares are decided by a stable hash of
the prompt key, not by position, so a rerun with another process count still records every
missing prompt exactly once (see :func:`take_share`). When a torch.distributed rendezvous is
available (``MASTER_ADDR`` / ``MASTER_PORT``), :class:`RunGroup` joins a gloo process group
only to wait for the others at the end and print one summary.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from ..errors import EntropyLensError
from ..trace.locking import lock_holder
from ..trace.schema import TraceMetadata
from ..trace.shards import ShardedTrace, shard_files, write_order

__all__ = ["Launch", "launch", "shard_of", "take_share", "shard_name", "pick_device", "Share", "prepare_share",
           "RunGroup"]

P = TypeVar("P")


@dataclass(frozen=True)
class Launch:
    """Where this process stands in a launch: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"  # "torch" (torchrun, accelerate), "slurm" or "none"
    rendezvous: bool = False  # MASTER_ADDR and MASTER_PORT are set: a process group can be joined

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int(env: Mapping[str, str], name: str) -> int:
    text = env[name]
    try:
        return int(text)
    except ValueError:
        raise EntropyLensError(f"the launcher variable {name}={text!r} is not an integer; check how the job was started") from None


def launch(env: Mapping[str, str] | None = None) -> Launch:
    """This process's :class:`Launch`, read from the launcher's environment variables.

    torchrun's and accelerate's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` win over Slurm's
    ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID`` (torchrun started inside an
    ``sbatch`` job sees both, and its own are the ones that count); neither set: one process.
    """
    env = os.environ if env is None else env
    rendezvous = bool(env.get("MASTER_ADDR")) and bool(env.get("MASTER_PORT"))
    for launcher, names in (("torch", ("RANK", "WORLD_SIZE", "LOCAL_RANK")),
                            ("slurm", ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"))):
        if names[0] in env or names[1] in env:
            given, missing = (names[0], names[1]) if names[0] in env else (names[1], names[0])
            if missing not in env:
                raise EntropyLensError(f"{given} is set but {missing} is not; a launcher sets both "
                                       "(torchrun, accelerate launch, srun)")
            rank, world = _int(env, names[0]), _int(env, names[1])
            local = _int(env, names[2]) if names[2] in env else rank
            if world < 1 or not 0 <= rank < world or local < 0:
                raise EntropyLensError(f"{names[0]}={rank}, {names[1]}={world}, {names[2]}={local}: the rank must lie in "
                                       "0..world size - 1; check how the job was started")
            return Launch(rank, world, local, launcher, rendezvous)
    return Launch(rendezvous=rendezvous)


def shard_of(key: str, world_size: int) -> int:
    """The process (0 .. world_size - 1) that records the prompt with this key: sha256(key) mod world_size.

    A cryptographic hash spreads any set of keys evenly and is the same in every process,
    on every machine, in every Python (unlike ``hash()``, which is salted per process).
    """
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % world_size


def take_share(prompts: Sequence[P], done: Iterable[str], rank: int, world_size: int) -> list[P]:
    """The prompts this process records: not yet recorded anywhere in the run, and hashed to ``rank``.

    ``done`` holds the keys recorded in every shard of the run folder, whatever process
    count wrote them; so a rerun with another count skips them all and splits only the
    rest, each missing prompt going to exactly one process. Prompts keep their order.
    """
    done = set(done)
    return [p for p in prompts if p.key not in done and shard_of(p.key, world_size) == rank]


def shard_name(launch: Launch) -> str:
    """The shard file a process writes: ``rank-00001-of-00004.h5``.

    The process count is part of the name, so a rerun with another count writes new files
    and leaves the old ones (still read for resuming) untouched; a rerun with the same
    count appends to the same files, recovering one left open by a killed process.
    """
    return f"rank-{launch.rank:05d}-of-{launch.world_size:05d}.h5"


@dataclass(frozen=True)
class Share:
    """What one process records in a run folder: ``prompts`` into its ``shard`` file.

    ``skipped``: prompts of the list already recorded in the folder (by any process count);
    ``metadata``: the folder's settings, which this recording must match (None: a new run).
    """

    shard: Path
    prompts: tuple
    skipped: int
    metadata: TraceMetadata | None


def prepare_share(folder: Path, prompts: Sequence[P], launch: Launch,
                  check: Callable[[TraceMetadata], None] | None = None) -> Share:
    """Read the run folder (creating it) and work out this process's share; no model needed.

    Refuses (:class:`EntropyLensError`, one line) shards that disagree, a live writer of
    this process's shard (the same command started twice), and a live writer of a shard
    from another process count (two launches would record the same prompts); ``check``
    may refuse the folder's settings. Then rank 0 adds the prompt list to the folder's
    order file, which orders the sequences when read.
    """
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise EntropyLensError(f"--out {folder}: cannot create the run folder ({exc.strerror})") from None
    mine = folder / shard_name(launch)
    suffix = shard_name(launch)[len("rank-00000"):]
    for path in shard_files(folder):
        if path == mine or not path.name.endswith(suffix):  # siblings of this launch are busy by design
            busy = lock_holder(path)
            if busy is not None:
                raise EntropyLensError(str(busy))
    done: set[str] = set()
    metadata = None
    if shard_files(folder):
        with ShardedTrace.open(folder) as run:
            done, metadata = set(run.keys), run.metadata
        if check is not None:
            check(metadata)
    if launch.rank == 0:
        write_order(folder, [p.key for p in prompts])
    todo = take_share(prompts, done, launch.rank, launch.world_size)
    return Share(mine, tuple(todo), sum(p.key in done for p in prompts), metadata)


def pick_device(launch: Launch, device: str) -> str:
    """The device for ``--device``: under a launcher, ``auto`` means ``cuda:LOCAL_RANK`` where GPUs exist.

    A process that sees exactly one GPU (``CUDA_VISIBLE_DEVICES`` set per process) takes
    ``cuda:0``. Without CUDA, ``auto`` stays as it is (MPS or CPU, as for one process).
    """
    if device != "auto" or not launch.distributed:
        return device
    import torch

    if not torch.cuda.is_available():
        return device
    count = torch.cuda.device_count()
    if count == 1:
        return "cuda:0"
    if launch.local_rank >= count:
        raise EntropyLensError(
            f"local rank {launch.local_rank} but this process sees {count} GPUs; start at most {count} processes "
            "per node, or give each process its GPUs with CUDA_VISIBLE_DEVICES and --device-map auto"
        )
    return f"cuda:{launch.local_rank}"


class RunGroup:
    """The end-of-run meeting of all processes: a gloo process group, when one can be joined.

    gloo and not nccl: only a few integers are exchanged, once, and gloo needs no GPU, so the
    same code runs on CPU-only nodes. Without a rendezvous (``srun`` alone sets no
    ``MASTER_ADDR``) or with one process, :meth:`gather` returns this process's own summary
    only, and each process prints its own line.
    """

    def __init__(self, launch: Launch, timeout: timedelta = timedelta(hours=2)):
        self.launch = launch
        self._joined = False
        if launch.distributed and launch.rendezvous:
            import torch.distributed as dist

            dist.init_process_group("gloo", rank=launch.rank, world_size=launch.world_size, timeout=timeout)
            self._joined = True

    @property
    def joined(self) -> bool:
        return self._joined

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for without a process group)."""
        if self._joined:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, summary: Any) -> list[Any] | None:
        """Wait for every process; rank 0 gets every process's ``summary`` (in rank order), others None.

        Without a process group every process gets ``[summary]``.
        """
        if not self._joined:
            return [summary]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.launch.world_size if self.launch.rank == 0 else None
        dist.gather_object(summary, gathered, dst=0)
        return gathered

    def close(self) -> None:
        if self._joined:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._joined = False

    def __enter__(self) -> "RunGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
