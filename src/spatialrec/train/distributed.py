"""Data-parallel plumbing for the training loop: process group, per-rank data shards, reductions.

The loop runs unchanged in one process or under ``torchrun``. ``torchrun`` sets the environment
variables ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`setup` reads them, starts the
process group (``gloo`` on CPU, ``nccl`` on CUDA) if nobody has yet, and picks this process's
device (``cuda:LOCAL_RANK`` on GPUs). Everything here is a no-op in a single process.
"""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Optional, cast

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from .. import options

logger = logging.getLogger("spatialrec.train")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) data-parallel run.

    Attributes:
        rank: global rank of this process, 0 in a single process.
        world_size: number of processes, 1 in a single process.
        local_rank: rank within this node (selects the GPU).
        device: the device this process trains on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes checkpoints, logs and progress bars."""
        return self.rank == 0


def resolve_device(device: "str | torch.device") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` into a device.

    ``"auto"`` means CUDA when available, else CPU.

    Raises:
        TypeError: ``device`` is neither a string nor a ``torch.device``.
        ValueError: the string names no device, or CUDA is asked for but not available.
    """
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        if device.strip().lower() == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"device={device!r} is not a device; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    else:
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(dev)!r} was asked for but CUDA is not available here; use device='cpu'")
    return dev


def setup(device: "str | torch.device" = "auto") -> DistContext:
    """The :class:`DistContext` of this process, starting the process group if needed (see the module docstring).

    In a single process (no ``WORLD_SIZE`` > 1 in the environment and no process group yet) this
    only resolves ``device`` (``"auto"``, ``"cpu"``, ``"cuda"`` or a device). A process group
    started here is destroyed at interpreter exit.
    """
    dev = resolve_device(device)
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = options.launcher_int("LOCAL_RANK", rank)
    else:
        world, rank, local_rank = options.launcher_int("WORLD_SIZE", 1), options.launcher_int("RANK", 0), options.launcher_int("LOCAL_RANK", 0)
        if world > 1:
            if not dist.is_available():
                raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if dev.type == "cuda":
                torch.cuda.set_device(local_rank)  # NCCL needs the device bound before the group starts
            dist.init_process_group(backend=backend)
            atexit.register(cleanup)
            logger.info("started process group: backend=%s rank=%d world_size=%d", backend, rank, world)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup() -> None:
    """Destroy the default process group if one is running (safe to call more than once)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over all processes (returns ``t`` itself in a single process)."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise maximum of ``t`` over all processes (``t`` itself in a single process)."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier(ctx: DistContext) -> None:
    """Wait for all processes (no-op in a single process)."""
    if ctx.distributed:
        dist.barrier()


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` of a run seeded with ``seed``: the data order depends on both only."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1)


class ShardedEpochSampler(DistributedSampler):
    """Indices of one process's share of a data set, in an order fixed by ``(seed, epoch)``.

    A :class:`torch.utils.data.DistributedSampler` that is also used in a single process, so that
    one code path gives the data order of both, and that can split evaluation sets without
    repeating samples. With ``shuffle`` the whole data set is permuted with a generator seeded by
    :func:`epoch_seed`; process ``rank`` then takes every ``world_size``-th index starting at
    ``rank``. So a run on ``n`` processes sees the same global batches as a single-process run
    with ``n`` times the batch size.

    Args:
        length: number of samples in the data set.
        shuffle: permute per epoch (training) or keep the data set order (evaluation).
        seed: run seed.
        rank, world_size: this process and the number of processes.
        pad: repeat the first indices so that every process gets the same number of samples
            (needed for training, where processes step together); without it the shares differ
            by at most one and nothing is repeated (evaluation).

    Call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self, length: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1, pad: bool = True
    ) -> None:
        if length < 1:
            raise ValueError(f"the data set is empty (length {length}); it needs at least one sample")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        # DistributedSampler sets rank, shuffle, seed, epoch = 0 and set_epoch.
        # Only the length of the data set matters here: a range is a map-style stand-in.
        super().__init__(cast(Dataset, range(length)), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        self.length, self.world_size, self.pad = length, world_size, pad

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        if self.pad and self.length % self.world_size:
            extra = self.world_size - self.length % self.world_size
            order += (order * (extra // self.length + 1))[:extra]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        if self.pad:
            return -(-self.length // self.world_size)
        return len(range(self.rank, self.length, self.world_size))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper, else ``model``."""
    inner: Optional[torch.nn.Module] = getattr(model, "module", None)
    if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)) and inner is not None:
        return inner
    return model


__all__ = [
    "DistContext",
    "ShardedEpochSampler",
    "all_gather_objects",
    "all_reduce_max",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup",
    "epoch_seed",
    "resolve_device",
    "setup",
    "unwrap",
]
