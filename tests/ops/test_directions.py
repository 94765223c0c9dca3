"""The one direction table: names, codes, views and the neighbour stencil for every dimension."""

import itertools

import pytest
import torch

from spatialrec.ops import (
    DEFAULT_DIRECTIONS,
    DIRECTIONS,
    from_canonical_view,
    gather_neighbours,
    normalize_direction,
    normalize_directions,
    num_neighbours,
    to_canonical_view,
    valid_directions,
)


def test_codes_extend_the_published_ones():
    assert DIRECTIONS[:4] == ("right", "left", "down", "up")  # the published codes 0-3
    assert valid_directions(2) == DIRECTIONS[:4] and valid_directions(3) == DIRECTIONS
    assert [normalize_direction(c, spatial_dims=3) for c in range(6)] == list(DIRECTIONS)
    assert DEFAULT_DIRECTIONS == {2: ("right", "down"), 3: ("right", "down", "in")}
    assert num_neighbours(2) == 3 and num_neighbours(3) == 9


@pytest.mark.parametrize("bad", [{"right", "down"}, frozenset({"down"}), {"right": 1}, {"right": 1}.keys()])
@pytest.mark.parametrize("dims", [2, 3])
def test_unordered_collections_are_refused(bad, dims):
    with pytest.raises(TypeError, match="ordered sequence"):
        normalize_directions(bad, spatial_dims=dims)


def test_ordered_iterables_keep_their_order():
    assert normalize_directions(iter(["down", 0])) == ("down", "right")
    assert normalize_directions([5, "IN"], spatial_dims=3) == ("out", "in")


def test_depth_directions_exist_only_in_3d():
    with pytest.raises(ValueError, match="spatial_dims=3"):
        normalize_direction("in")
    with pytest.raises(ValueError, match="published direction code"):
        normalize_direction(4)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 3, 4, 5)])
def test_canonical_view_sweeps_its_axis_from_index_0(shape):
    x = torch.arange(torch.Size(shape).numel()).view(shape)
    for d in valid_directions(len(shape) - 2):
        v = to_canonical_view(x, d)
        torch.testing.assert_close(from_canonical_view(v, d), x)
        # dim 2 of the view is the swept axis, in sweep order; the rest keep increasing axis order
        axis = {"right": -1, "left": -1, "down": -2, "up": -2, "in": -3, "out": -3}[d]
        assert v.shape[2] == x.shape[axis]
        first = x.select(axis, 0 if d in ("right", "down", "in") else x.shape[axis] - 1)
        torch.testing.assert_close(v[:, :, 0], first)


@pytest.mark.parametrize("rest", [(5,), (3, 4)])
def test_neighbour_stencil_against_a_loop(rest):
    prev = torch.randn(2, 3, *rest)
    got = gather_neighbours(prev)
    offsets = list(itertools.product((-1, 0, 1), repeat=len(rest)))
    assert got.shape == (2, 3 * len(offsets), *rest)
    for q in itertools.product(*(range(n) for n in rest)):
        for k, o in enumerate(offsets):
            src = tuple(a + b for a, b in zip(q, o))
            inside = all(0 <= i < n for i, n in zip(src, rest))
            want = prev[(slice(None), slice(None), *src)] if inside else torch.zeros(2, 3)
            torch.testing.assert_close(got[(slice(None), slice(3 * k, 3 * k + 3), *q)], want)
