"""An independent, deliberately naive per-pixel directional GRU scan used as a test oracle.

It does not share code with spatialrec: it visits every pixel with explicit Python loops and
writes each direction's neighbour rule out by hand (no transposes, no flips). Tiny sizes only.
"""

from __future__ import annotations

import math

import torch


def _gru_pixel(a, p, w_ih, w_hh, b_ih, b_hh, keep=None):
    s = p.shape[0]
    g_i = w_ih @ a + b_ih
    g_h = w_hh @ p + b_hh
    r = 1 / (1 + torch.exp(-(g_i[:s] + g_h[:s])))
    z = 1 / (1 + torch.exp(-(g_i[s : 2 * s] + g_h[s : 2 * s])))
    n = torch.tanh(g_i[2 * s :] + r * g_h[2 * s :])
    return z * n + (1 - z) * (p if keep is None else keep)


def naive_scan(x, w_ih, w_hh, b_ih, b_hh, direction, carry="prior"):
    """x: (B, S, H, W) -> (B, S, H, W), computed pixel by pixel in float64. ``carry="line"``: the
    update keeps the already swept pixel one step back along the sweep, not the pixel's own input."""
    x = x.detach().double()
    w_ih, w_hh, b_ih, b_hh = (t.detach().double() for t in (w_ih, w_hh, b_ih, b_hh))
    bsz, s, height, width = x.shape
    out = x.clone()

    def at(b, i, j):
        if 0 <= i < height and 0 <= j < width:
            return out[b, :, i, j]
        return torch.zeros(s, dtype=torch.float64)

    for b in range(bsz):
        if direction == "down":
            for i in range(1, height):
                for j in range(width):
                    a = torch.cat([at(b, i - 1, j - 1), at(b, i - 1, j), at(b, i - 1, j + 1)])
                    out[b, :, i, j] = _gru_pixel(a, x[b, :, i, j], w_ih, w_hh, b_ih, b_hh, a[s : 2 * s] if carry == "line" else None)
        elif direction == "up":
            for i in range(height - 2, -1, -1):
                for j in range(width):
                    a = torch.cat([at(b, i + 1, j - 1), at(b, i + 1, j), at(b, i + 1, j + 1)])
                    out[b, :, i, j] = _gru_pixel(a, x[b, :, i, j], w_ih, w_hh, b_ih, b_hh, a[s : 2 * s] if carry == "line" else None)
        elif direction == "right":
            for j in range(1, width):
                for i in range(height):
                    a = torch.cat([at(b, i - 1, j - 1), at(b, i, j - 1), at(b, i + 1, j - 1)])
                    out[b, :, i, j] = _gru_pixel(a, x[b, :, i, j], w_ih, w_hh, b_ih, b_hh, a[s : 2 * s] if carry == "line" else None)
        elif direction == "left":
            for j in range(width - 2, -1, -1):
                for i in range(height):
                    a = torch.cat([at(b, i - 1, j + 1), at(b, i, j + 1), at(b, i + 1, j + 1)])
                    out[b, :, i, j] = _gru_pixel(a, x[b, :, i, j], w_ih, w_hh, b_ih, b_hh, a[s : 2 * s] if carry == "line" else None)
        else:
            raise ValueError(direction)
    return out


def random_params(s, generator=None, dtype=torch.float64):
    """Parameters drawn as docs/maths.md's initialisation (uniform in +-1/sqrt(S)), scaled up a little
    so the gates are far from their linear regime."""
    bound = 2.0 / math.sqrt(s)

    def u(*shape):
        return (torch.rand(*shape, generator=generator, dtype=dtype) * 2 - 1) * bound

    return u(3 * s, 3 * s), u(3 * s, s), u(3 * s), u(3 * s)
