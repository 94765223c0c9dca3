"""The directional GRU scan on volumes ``(B, S, D, H, W)`` against a naive per-voxel implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spatialrec import options
from spatialrec.ops import (
    DIRECTIONS,
    directional_gru_scan,
    from_canonical_view,
    normalize_direction,
    normalize_directions,
    resolve_backend,
    to_canonical_view,
)
from spatialrec.ops import scan as scan_module

DIRECTIONS_3D = DIRECTIONS  # all six directions exist in 3D


pytestmark = pytest.mark.usefixtures("one_thread")


BACKENDS = ("reference", "fused")

# direction -> (swept axis of (D, H, W), sense); written out independently of the library.
_NAIVE_AXIS = {"in": (0, 1), "out": (0, -1), "down": (1, 1), "up": (1, -1), "right": (2, 1), "left": (2, -1)}


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def naive_scan3d(x, w_ih, w_hh, b_ih, b_hh, direction: str, carry: str = "prior") -> np.ndarray:
    """One voxel at a time, straight from the written maths, in the volume's own coordinates
    (``carry="line"``: the update keeps the previous plane's voxel at the same place)."""
    x = x.detach().double().numpy()
    w_ih, w_hh, b_ih, b_hh = (p.detach().double().numpy() for p in (w_ih, w_hh, b_ih, b_hh))
    bsz, s = x.shape[:2]
    sizes = x.shape[2:]
    axis, sense = _NAIVE_AXIS[direction]
    others = [ax for ax in range(3) if ax != axis]  # the plane's axes, in increasing axis order
    order = list(range(sizes[axis])) if sense > 0 else list(range(sizes[axis] - 1, -1, -1))
    h = x.copy()
    for k in range(1, len(order)):
        cur, prev = order[k], order[k - 1]
        for b in range(bsz):
            for u in range(sizes[others[0]]):
                for v in range(sizes[others[1]]):
                    neigh = []
                    for du in (-1, 0, 1):
                        for dv in (-1, 0, 1):
                            pos = [0, 0, 0]
                            pos[axis], pos[others[0]], pos[others[1]] = prev, u + du, v + dv
                            inside = 0 <= pos[others[0]] < sizes[others[0]] and 0 <= pos[others[1]] < sizes[others[1]]
                            neigh.append(h[b, :, pos[0], pos[1], pos[2]] if inside else np.zeros(s))
                    a = np.concatenate(neigh)
                    here = [0, 0, 0]
                    here[axis], here[others[0]], here[others[1]] = cur, u, v
                    p = x[b, :, here[0], here[1], here[2]]
                    gi = w_ih @ a + b_ih
                    gh = w_hh @ p + b_hh
                    r = _sigmoid(gi[:s] + gh[:s])
                    z = _sigmoid(gi[s : 2 * s] + gh[s : 2 * s])
                    n = np.tanh(gi[2 * s :] + r * gh[2 * s :])
                    keep = neigh[4] if carry == "line" else p  # neighbour (0, 0): the same place
                    h[b, :, here[0], here[1], here[2]] = z * n + (1 - z) * keep
    return h


def _params(s: int, dtype=torch.float64, scale: float = 0.6, seed: int = 0, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3 * s, 9 * s), (3 * s, s), (3 * s,), (3 * s,)]
    return [(torch.randn(sh, generator=g, dtype=dtype) * scale).requires_grad_(requires_grad) for sh in shapes]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", DIRECTIONS_3D)
def test_matches_naive_per_voxel(backend: str, direction: str) -> None:
    s = 2
    x = torch.randn(2, s, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    params = _params(s)
    y = directional_gru_scan(x, *params, direction, backend=backend)
    expected = naive_scan3d(x, *params, direction)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_codes_match_names(backend: str) -> None:
    s = 2
    x = torch.randn(1, s, 3, 2, 4, dtype=torch.float64)
    params = _params(s)
    for code, name in enumerate(DIRECTIONS_3D):
        torch.testing.assert_close(
            directional_gru_scan(x, *params, code, backend=backend),
            directional_gru_scan(x, *params, name, backend=backend),
        )
    assert normalize_direction(" IN ", spatial_dims=3) == "in"
    assert normalize_directions([0, "down", 4], spatial_dims=3) == ("right", "down", "in")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", DIRECTIONS_3D)
def test_first_plane_unchanged_and_causal(backend: str, direction: str) -> None:
    """Plane t of the sweep depends on planes <= t only, within a light cone of half-width t - t0."""
    s = 3
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, s, 5, 6, 7, dtype=torch.float64, generator=gen)
    params = _params(s)
    y = directional_gru_scan(x, *params, direction, backend=backend)
    yc = to_canonical_view(y, direction)
    xc = to_canonical_view(x, direction)
    torch.testing.assert_close(yc[:, :, 0], xc[:, :, 0], rtol=0, atol=0)

    t0, a0, b0 = 1, 2, 1
    xc_perturbed = xc.clone()
    xc_perturbed[:, :, t0, a0, b0] += 1.0
    x2 = from_canonical_view(xc_perturbed, direction)
    y2c = to_canonical_view(directional_gru_scan(x2, *params, direction, backend=backend), direction)
    changed = (y2c - yc).abs().amax(dim=(0, 1)) > 0  # (L, A, Bb)
    length, a_len, b_len = changed.shape
    for t in range(length):
        for a in range(a_len):
            for b in range(b_len):
                inside = t >= t0 and abs(a - a0) <= t - t0 and abs(b - b0) <= t - t0
                if not inside:
                    assert not changed[t, a, b], f"voxel {(t, a, b)} outside the cone changed"
    assert changed[t0, a0, b0]
    # The cone really widens: the change reaches the corners of the cone two planes later.
    assert changed[t0 + 2, a0 + 2, b0 + 2] and changed[t0 + 2, a0 - 2, b0 - 1]



@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", DIRECTIONS_3D)
def test_gradcheck(backend: str, direction: str) -> None:
    s = 2
    x = torch.randn(1, s, 3, 2, 4, dtype=torch.float64, requires_grad=True)
    params = _params(s, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *args: directional_gru_scan(*args, direction, backend=backend), (x, *params), eps=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("direction", DIRECTIONS_3D)
def test_fused_matches_reference_float32(direction: str) -> None:
    s = 6
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, s, 6, 9, 7, generator=gen)
    params = _params(s, dtype=torch.float32, scale=0.4)
    outs, grads = [], []
    g = torch.randn(2, s, 6, 9, 7, generator=gen)
    for backend in BACKENDS:
        xi = x.clone().requires_grad_(True)
        pi = [p.clone().requires_grad_(True) for p in params]
        y = directional_gru_scan(xi, *pi, direction, backend=backend)
        y.backward(g)
        outs.append(y.detach())
        grads.append([xi.grad] + [p.grad for p in pi])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for gf, gr in zip(grads[1], grads[0]):
        torch.testing.assert_close(gf, gr, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_plane_is_identity_with_zero_param_grads(backend: str) -> None:
    s = 2
    x = torch.randn(2, s, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    params = _params(s, requires_grad=True)
    y = directional_gru_scan(x, *params, "in", backend=backend)
    torch.testing.assert_close(y, x, rtol=0, atol=0)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))
    for p in params:
        assert p.grad is None or torch.count_nonzero(p.grad) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision_input_float32_params(backend: str) -> None:
    s = 4
    x = torch.randn(1, s, 4, 5, 3)
    params = _params(s, dtype=torch.float32, scale=0.4)
    y16 = directional_gru_scan(x.bfloat16().requires_grad_(True), *params, "down", backend=backend)
    assert y16.dtype == torch.bfloat16
    y32 = directional_gru_scan(x.bfloat16().float(), *params, "down", backend=backend)
    torch.testing.assert_close(y16.float(), y32, rtol=2e-2, atol=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya = directional_gru_scan(x, *params, "down", backend=backend)
    assert ya.dtype == torch.float32  # the op keeps its input's dtype under autocast
    torch.testing.assert_close(ya, directional_gru_scan(x, *params, "down", backend=backend))


def test_fused_gradient_dtypes_follow_inputs() -> None:
    s = 3
    x = torch.randn(1, s, 3, 4, 2).bfloat16().requires_grad_(True)
    params = _params(s, dtype=torch.float32, requires_grad=True)
    directional_gru_scan(x, *params, "left", backend="fused").float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_input(backend: str) -> None:
    s = 2
    base = torch.randn(1, 4, 3, 5, s, dtype=torch.float64)
    x = base.permute(0, 4, 1, 2, 3)  # (1, S, 4, 3, 5), channels-last-like strides
    params = _params(s)
    torch.testing.assert_close(
        directional_gru_scan(x, *params, "right", backend=backend),
        directional_gru_scan(x.contiguous(), *params, "right", backend=backend),
    )


def test_canonical_view_round_trip() -> None:
    x = torch.arange(2 * 3 * 4 * 5).reshape(1, 2, 3, 4, 5)
    for d in DIRECTIONS_3D:
        v = to_canonical_view(x, d)
        torch.testing.assert_close(from_canonical_view(v, d), x)
    assert to_canonical_view(x, "right").shape == (1, 2, 5, 3, 4)
    assert to_canonical_view(x, "up").shape == (1, 2, 4, 3, 5)


def test_backend_resolution(option_env) -> None:
    vol = torch.zeros(1, 1, 1, 1, 1)
    option_env("backend", None)
    assert resolve_backend("auto", vol) == "fused"
    assert resolve_backend("triton", vol) == "triton"  # the N-d Triton kernels
    assert resolve_backend("Reference", vol) == "reference"
    option_env("backend", "reference")
    assert resolve_backend("auto", vol) == "reference"
    assert resolve_backend("fused", vol) == "fused"
    option_env("backend", "bogus")
    with pytest.raises(ValueError, match="SPATIALREC_BACKEND"):
        resolve_backend("auto", vol)


def test_auto_dispatches_to_the_resolved_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []

    real_kernel = scan_module._kernel

    def spy(name: str, spatial_dims: int):
        fn = real_kernel(name, spatial_dims)

        def wrapped(*args):
            calls.append((name, spatial_dims))
            return fn(*args)

        return wrapped

    monkeypatch.setattr(scan_module, "_kernel", spy)
    s = 2
    x = torch.randn(1, s, 2, 2, 2)
    params = _params(s, dtype=torch.float32)
    with options.override(backend="reference"):
        directional_gru_scan(x, *params, "in")
    directional_gru_scan(x, *params, "in")
    assert calls == [("reference", 3), ("fused", 3)]  # CPU tensors: "auto" never runs triton


def test_bad_inputs() -> None:
    s = 2
    x = torch.randn(1, s, 2, 3, 4)
    w_ih, w_hh, b_ih, b_hh = _params(s, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"weight_ih has shape \(6, 18\).*\(6, 6\).*2D scan"):
        directional_gru_scan(x[:, :, 0], w_ih, w_hh, b_ih, b_hh, "down")
    with pytest.raises(ValueError, match=r"x must have shape \(B, S, H, W\) or \(B, S, D, H, W\)"):
        directional_gru_scan(x[:, :, 0, 0], w_ih, w_hh, b_ih, b_hh, "in")
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        directional_gru_scan(x.numpy(), w_ih, w_hh, b_ih, b_hh, "in")
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        directional_gru_scan(x.long(), w_ih, w_hh, b_ih, b_hh, "in")
    with pytest.raises(ValueError, match="non-zero"):
        directional_gru_scan(x[:, :, :0], w_ih, w_hh, b_ih, b_hh, "in")
    with pytest.raises(ValueError, match=r"weight_ih has shape \(6, 6\).*\(6, 18\)"):
        directional_gru_scan(x, w_ih[:, : 3 * s], w_hh, b_ih, b_hh, "in")
    with pytest.raises(ValueError, match="weight_hh"):
        directional_gru_scan(x, w_ih, w_hh[:, :1], b_ih, b_hh, "in")
    with pytest.raises(ValueError, match="bias_hh"):
        directional_gru_scan(x, w_ih, w_hh, b_ih, b_hh[:-1], "in")
    with pytest.raises(TypeError, match="bias_ih must have a floating-point dtype"):
        directional_gru_scan(x, w_ih, w_hh, b_ih.long(), b_hh, "in")
    with pytest.raises(ValueError, match="'forward' is not a 3D direction"):
        directional_gru_scan(x, w_ih, w_hh, b_ih, b_hh, "forward")
    with pytest.raises(ValueError, match="code"):
        directional_gru_scan(x, w_ih, w_hh, b_ih, b_hh, 6)
    with pytest.raises(TypeError, match="bool"):
        directional_gru_scan(x, w_ih, w_hh, b_ih, b_hh, True)
    with pytest.raises(ValueError, match="backend='cuda'"):
        directional_gru_scan(x, w_ih, w_hh, b_ih, b_hh, "in", backend="cuda")
    with pytest.raises(TypeError, match="sequence of directions"):
        normalize_directions("in", spatial_dims=3)
    with pytest.raises(ValueError, match="at least one"):
        normalize_directions([], spatial_dims=3)
