"""Gate maths shared by the fast backends (:mod:`~spatialrec.ops.fused`, :mod:`~spatialrec.ops.triton`).

The parameters keep the published ``(r, z, n)`` row order. The fast kernels permute the rows of
``weight_ih`` (and ``bias_ih``) to ``(n, r, z)`` so that one buffer per line holds the
pre-activations in the order the gate arithmetic consumes them, and fold the biases: the ``r``
and ``z`` pre-activations only ever see ``b_ih + b_hh``, while the ``n`` gate needs ``b_hh_n``
apart because ``r`` multiplies it.
"""

from __future__ import annotations

import torch


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype the gates are computed in: float64 if any operand is float64, else float32.

    Half-precision inputs (bfloat16, float16) are therefore computed with float32 arithmetic and
    accumulation; the result is cast back to the input's dtype by the caller.
    """
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def permute_gates_ih(w: torch.Tensor, s: int) -> torch.Tensor:
    """Rows ``(r, z, n)`` -> ``(n, r, z)`` along dim 0 (weights ``(3S, kS)`` or biases ``(3S,)``)."""
    return torch.cat([w[2 * s :], w[: 2 * s]], dim=0)


def unpermute_gates_ih(w: torch.Tensor, s: int) -> torch.Tensor:
    """Inverse of :func:`permute_gates_ih`."""
    return torch.cat([w[s:], w[:s]], dim=0)


def fold_biases(bias_ih: torch.Tensor, bias_hh: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(b_prior (3S,), b_ih_n (S,))``: the prior term's bias ``[b_ih + b_hh for r, z | b_hh_n]``
    (order r, z, n) and the ``n`` gate's own input bias."""
    b_prior = torch.cat([bias_ih[: 2 * s] + bias_hh[: 2 * s], bias_hh[2 * s :]])
    return b_prior, bias_ih[2 * s :].contiguous()


CARRIES: tuple[str, ...] = ("line", "prior")
"""What the update gate's ``(1 - z)`` term keeps at a position (see ``docs/maths.md``):

- ``"line"``: the previous line's state at the same position, ``h_i = z n + (1 - z) h_{i-1}``.
  An identity path along the sweep, as in a GRU over time: a far line's state reaches line
  ``i`` attenuated only by the product of the ``(1 - z)`` factors on the way.
- ``"prior"``: the position's own value, ``h_i = z n + (1 - z) p_i``, the published SDN cell.
  The previous line reaches line ``i`` only through the squashed candidate ``n``, so a far
  line's influence shrinks geometrically with the distance (docs/holistic.md measures it).
"""


def check_carry(carry: object) -> str:
    """Return ``carry`` if it names a cell of :data:`CARRIES`, else raise.

    Raises:
        TypeError: ``carry`` is not a string.
        ValueError: ``carry`` is not one of :data:`CARRIES`.
    """
    if not isinstance(carry, str):
        raise TypeError(f"carry must be a string, one of {CARRIES}, got {type(carry).__name__}")
    if carry not in CARRIES:
        raise ValueError(f"carry={carry!r} is not a cell; expected one of {CARRIES}")
    return carry


__all__ = ["CARRIES", "check_carry", "compute_dtype", "fold_biases", "permute_gates_ih", "unpermute_gates_ih"]
