"""A bounded CPU workspace: the buffers a fused training forward keeps for its backward, reused across steps.

Why. glibc's default allocator returns every block of 32 MiB or more to the system when it is
freed (``munmap``) and maps a fresh one on the next request, whose pages then fault in on first
touch: about 0.3 ms per MB on the project's test machine. The largest such buffers of a training
step are the states and gates the fused 2D forward keeps for its backward (at the paper size, 4 x
128 x 128 with S = 150, two sweeps: 300 MB), the same shapes at every step. The CUDA caching
allocator, jemalloc and tcmalloc keep freed memory for reuse; torch's CPU allocator does not.
This workspace keeps those buffers instead, so that a user who does not tune the allocator pays
fewer faults (measured with ``benchmarks/bench_scan.py --workspace on|off``, docs/kernels.md).

Only tensors that are in use at a training step's peak anyway (kept for the backward) come from
here, so holding them between steps never raises the peak; short-lived scratch does not (held
free at the peak, it would: measured +20% peak memory when every large buffer came from here).

How. :func:`empty` is ``torch.empty`` for CPU tensors of at least :data:`MIN_BYTES`: it hands out
a tensor over a buffer the workspace holds, reusing one of the same shape and dtype that nothing
else references any more, or allocating a new one. Whether anything else references a buffer is
read from its storage's reference count (:func:`spatialrec.torch_private.storage_use_count`): a
buffer is reused only when the workspace's own tensor is its storage's only user, so a buffer that
autograd saved for a backward, or that a caller still holds, is never handed out twice.

Off by default. Held between steps, the buffers a backward has freed stay mapped while the
backward of another sweep or layer runs: measured +6% peak memory of a training step of one
two-sweep layer (614 -> 652 MB at the paper size, 545 -> 578 MB at 512 x 512), for 7% less time
at 2 x 256 x 256 and 512 x 512 (none at the paper size). A program that wants the time and has
the memory turns it on with :func:`set_limit` (e.g. ``set_limit(4 << 30)``, :data:`SUGGESTED_LIMIT`).

Bounds. The buffers held in total never exceed :func:`get_limit` bytes: past it, a request
evicts free buffers of other shapes, least recently used first, and is served by a plain
allocation when nothing can be evicted. :func:`release` drops every free buffer (as
``torch.cuda.empty_cache`` does for CUDA); :func:`set_limit` ``(0)`` turns the workspace off
again. The workspace never holds a buffer on a device other than the CPU.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Optional

import torch

from ..torch_private import storage_use_count

MIN_BYTES = 1 << 20
"""Buffers below this size go to ``torch.empty`` directly (the allocator reuses small blocks)."""

DEFAULT_LIMIT = 0
"""The limit a process starts with: 0, the workspace is off (see the module docstring)."""

SUGGESTED_LIMIT = 4 << 30
"""A limit for turning the workspace on: 4 GiB."""

_Key = tuple[tuple[int, ...], torch.dtype]

_lock = threading.Lock()
_buffers: "OrderedDict[_Key, list[torch.Tensor]]" = OrderedDict()  # least recently used first
_held = 0
_limit = DEFAULT_LIMIT


def _free(buf: torch.Tensor) -> bool:
    return storage_use_count(buf) == 1


def _alias(buf: torch.Tensor) -> torch.Tensor:
    """A new tensor over ``buf``'s memory that autograd does not know as a view of ``buf``."""
    return torch.empty(0, dtype=buf.dtype).set_(buf.untyped_storage(), 0, buf.shape, buf.stride())


def _drop_free(key: _Key, budget: Optional[int] = None) -> int:
    """Drop free buffers of ``key`` (all, or until ``budget`` bytes are dropped); returns the bytes."""
    global _held
    kept, dropped = [], 0
    for buf in _buffers[key]:
        if (budget is None or dropped < budget) and _free(buf):
            dropped += buf.numel() * buf.element_size()
        else:
            kept.append(buf)
    if kept:
        _buffers[key] = kept
    else:
        del _buffers[key]
    _held -= dropped
    return dropped


def _evict(need: int, keep: Optional[_Key] = None) -> None:
    """Drop free buffers of keys other than ``keep``, least recently used first, until ``need``
    more bytes fit."""
    for key in list(_buffers):
        if _held + need <= _limit:
            return
        if key != keep:
            _drop_free(key, _held + need - _limit)


def empty(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype, device=device)``, contiguous, its memory reused across
    calls on the CPU (see the module docstring). The contents are undefined.

    Example:
        >>> set_limit(SUGGESTED_LIMIT)
        >>> a = empty((512, 1024), torch.float32, torch.device("cpu"))
        >>> ptr = a.data_ptr(); del a
        >>> empty((512, 1024), torch.float32, torch.device("cpu")).data_ptr() == ptr
        True
        >>> set_limit(0)  # off again, the buffers released
    """
    global _held
    shape = tuple(int(n) for n in shape)
    if _limit == 0 or device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    nbytes = torch.Size(shape).numel() * dtype.itemsize
    if nbytes < MIN_BYTES:
        return torch.empty(shape, dtype=dtype, device=device)
    key = (shape, dtype)
    with _lock:
        bufs = _buffers.get(key)
        if bufs is not None:
            _buffers.move_to_end(key)
            for buf in bufs:
                if _free(buf):
                    return _alias(buf)
        if _held + nbytes > _limit:
            _evict(nbytes, key)
        if _held + nbytes > _limit:
            return torch.empty(shape, dtype=dtype, device=device)
        buf = torch.empty(shape, dtype=dtype, device=device)
        _buffers.setdefault(key, []).append(buf)
        _buffers.move_to_end(key)
        _held += nbytes
        return _alias(buf)


def release() -> int:
    """Drop every buffer nothing else references; returns the bytes released. Buffers still in
    use stay until a later call (or until the process ends)."""
    with _lock:
        return sum(_drop_free(key) for key in list(_buffers))


def held_bytes() -> int:
    """The bytes of all buffers the workspace holds now (in use or free)."""
    return _held


def get_limit() -> int:
    """The bound on :func:`held_bytes` (0: the workspace is off)."""
    return _limit


def set_limit(nbytes: int) -> None:
    """Bound the bytes the workspace holds (0 turns it off); free buffers above it are released.

    Raises:
        TypeError: ``nbytes`` is not an integer.
        ValueError: ``nbytes`` is negative.
    """
    global _limit
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"the workspace limit is a number of bytes (int), got {type(nbytes).__name__}")
    if nbytes < 0:
        raise ValueError(f"the workspace limit must be >= 0 bytes, got {nbytes}")
    with _lock:
        _limit = nbytes
        _evict(0)


__all__ = ["DEFAULT_LIMIT", "MIN_BYTES", "SUGGESTED_LIMIT", "empty", "get_limit", "held_bytes", "release", "set_limit"]
