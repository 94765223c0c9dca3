"""spatialrec.ops.workspace: large CPU buffers reused across calls, never while still in use."""

from __future__ import annotations

import pytest
import torch

from spatialrec import SpatialDependencyLayer
from spatialrec.ops import workspace

CPU = torch.device("cpu")
BIG = (256, 1024)  # 1 MiB of float32: the smallest size the workspace keeps


def test_off_by_default():
    assert workspace.DEFAULT_LIMIT == 0 and workspace.get_limit() == 0
    workspace.empty(BIG, torch.float32, CPU)
    assert workspace.held_bytes() == 0


@pytest.fixture(autouse=True)
def _fresh_workspace(request):
    limit = workspace.get_limit()
    workspace.release()
    if request.function.__name__ != "test_off_by_default":
        workspace.set_limit(workspace.SUGGESTED_LIMIT)
    yield
    workspace.set_limit(limit)
    workspace.release()


def test_a_freed_buffer_is_reused_and_a_held_one_is_not():
    a = workspace.empty(BIG, torch.float32, CPU)
    ptr = a.data_ptr()
    b = workspace.empty(BIG, torch.float32, CPU)  # a is still alive: a new buffer
    assert b.data_ptr() != ptr
    view = a[1:]  # a view keeps the memory in use after a is gone
    del a
    c = workspace.empty(BIG, torch.float32, CPU)
    assert c.data_ptr() not in (ptr, b.data_ptr())
    del view
    d = workspace.empty(BIG, torch.float32, CPU)
    assert d.data_ptr() == ptr
    assert workspace.held_bytes() == 3 * 2**20


def test_shape_dtype_size_and_device_select_what_is_kept():
    a = workspace.empty(BIG, torch.float32, CPU)
    ptr = a.data_ptr()
    del a
    assert workspace.empty((1024, 256), torch.float32, CPU).data_ptr() != ptr  # another shape
    assert workspace.empty(BIG, torch.float64, CPU).data_ptr() != ptr  # another dtype
    small = workspace.empty((4, 4), torch.float32, CPU)  # below MIN_BYTES: a plain tensor
    assert small.shape == (4, 4) and workspace.held_bytes() == 2**20 + 2**20 + 2**21
    t = workspace.empty(BIG, torch.float32, CPU)
    assert t.shape == BIG and t.is_contiguous() and t.dtype == torch.float32 and not t.requires_grad


def test_limit_evicts_free_buffers_and_falls_back_to_plain_tensors():
    workspace.set_limit(2 * 2**20)
    a = workspace.empty(BIG, torch.float32, CPU)
    b = workspace.empty((512, 1024), torch.float32, CPU)  # 2 MiB: would exceed the limit while a lives
    assert workspace.held_bytes() == 2**20
    del a
    c = workspace.empty((512, 1024), torch.float32, CPU)  # a is free: evicted to make room
    assert workspace.held_bytes() == 2 * 2**20
    del b, c
    assert workspace.release() == 2 * 2**20 and workspace.held_bytes() == 0
    workspace.set_limit(0)  # off
    workspace.empty(BIG, torch.float32, CPU)
    assert workspace.held_bytes() == 0


def test_set_limit_checks_its_argument():
    with pytest.raises(TypeError, match="bytes"):
        workspace.set_limit(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        workspace.set_limit(-1)


def test_two_forwards_before_one_backward_keep_their_own_states():
    """A layer called twice before its backward: the first call's saved states and gates stay
    its own (the workspace hands out only buffers nothing references), so both gradients equal
    those computed with the workspace off."""
    torch.manual_seed(0)
    layer = SpatialDependencyLayer(4, 4, state_size=48, directions=("right", "down", "left", "up"), backend="fused")
    x1, x2 = torch.randn(2, 4, 40, 48), torch.randn(2, 4, 40, 48)

    def grads():
        layer.zero_grad()
        (layer(x1).square().sum() + 2 * layer(x2).sum()).backward()
        return [p.grad.clone() for p in layer.parameters()]

    with_workspace = [grads() for _ in range(2)]  # the second run reuses the first run's buffers
    assert workspace.held_bytes() > 0
    workspace.set_limit(0)
    without = grads()
    for got in with_workspace:
        for a, b in zip(got, without):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_release_and_eviction_with_several_buffers_of_one_shape():
    bufs = [workspace.empty(BIG, torch.float32, CPU) for _ in range(3)]
    keep = bufs[1]
    del bufs
    assert workspace.release() == 2 * 2**20 and workspace.held_bytes() == 2**20  # keep is in use
    again = [workspace.empty(BIG, torch.float32, CPU) for _ in range(2)]
    workspace.set_limit(3 * 2**20)
    del again
    # 3 MiB would exceed the limit: both free buffers of BIG are evicted, which is still not
    # enough room beside the one in use, so the request gets a plain tensor.
    t = workspace.empty((768, 1024), torch.float32, CPU)
    assert workspace.held_bytes() == 2**20 and t.shape == (768, 1024)
    assert keep.shape == BIG


def _free_and_used_bytes() -> tuple[int, int]:
    from spatialrec.torch_private import storage_use_count

    free = used = 0
    for bufs in workspace._buffers.values():
        for buf in bufs:
            n = buf.numel() * buf.element_size()
            free, used = (free + n, used) if storage_use_count(buf) == 1 else (free, used + n)
    return free, used


def test_only_what_the_backward_reads_comes_from_the_workspace():
    """At a training step's peak (after the forward) nothing the workspace holds is free: it
    serves only the states and gates kept for the backward, so it never raises the peak; an
    inference forward takes nothing from it."""
    torch.manual_seed(0)
    layer = SpatialDependencyLayer(4, 4, state_size=48, directions=("right", "down"), backend="fused")
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        layer(x)
    assert workspace.held_bytes() == 0
    for _ in range(2):
        y = layer(x.requires_grad_())
        free, used = _free_and_used_bytes()
        assert free == 0 and used > 0
        y.sum().backward()
        del y
        assert _free_and_used_bytes() == (0 + used, 0)  # all back, reused at the next step
