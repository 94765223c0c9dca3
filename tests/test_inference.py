"""Tests of sliding-window inference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spatialrec.inference import blend_weights, sliding_window_inference, window_starts
from spatialrec.models import UNet3d

pytestmark = pytest.mark.usefixtures("one_thread")


def test_window_starts_cover_the_axis_and_stay_inside() -> None:
    for size in range(1, 30):
        for patch in (1, 3, 4, 8, 40):
            for overlap in (0.0, 0.25, 0.5, 0.9):
                starts = window_starts(size, patch, overlap)
                p = min(patch, size)
                covered = torch.zeros(size, dtype=torch.bool)
                for s in starts:
                    assert 0 <= s and s + p <= size
                    covered[s : s + p] = True
                assert covered.all(), (size, patch, overlap, starts)
                assert starts == sorted(set(starts))
    assert window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert window_starts(10, 4, 0.0) == [0, 4, 6]


def test_gaussian_weights() -> None:
    w = blend_weights((5, 7, 4), "gaussian")
    assert w.shape == (5, 7, 4) and w.dtype == torch.float32
    assert torch.isclose(w.max(), torch.tensor(1.0)) and w.min() >= 1e-3
    # separable, symmetric, peaked at the centre
    torch.testing.assert_close(w, w.flip(0).flip(1).flip(2))
    assert w[2, 3].max() == w.max()
    assert torch.equal(blend_weights((3, 2), "constant"), torch.ones(3, 2))


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.75])
def test_blending_weights_sum_to_one(blend: str, overlap: float) -> None:
    """An identity model must come back unchanged: the blend weights of every voxel sum to 1."""
    x = torch.randn(2, 3, 11, 9, 13)
    y = sliding_window_inference(nn.Identity(), x, (4, 5, 6), overlap=overlap, blend=blend, batch_size=3)
    torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6)


def test_constant_blend_is_the_mean_over_covering_windows() -> None:
    """A model that outputs a window counter: each voxel gets the mean over the windows covering it."""
    calls = []

    def counter(x: torch.Tensor) -> torch.Tensor:
        out = []
        for _ in range(x.shape[0]):
            calls.append(len(calls))
            out.append(torch.full((1,) + tuple(x.shape[2:]), float(len(calls) - 1)))
        return torch.stack(out)

    vol = torch.zeros(1, 1, 1, 1, 6)
    y = sliding_window_inference(counter, vol, (1, 1, 4), overlap=0.5, blend="constant", batch_size=2)
    # windows along W: [0,4) -> 0, [2,6) -> 1
    torch.testing.assert_close(y.flatten(), torch.tensor([0.0, 0.0, 0.5, 0.5, 1.0, 1.0]))


def test_single_window_reproduces_whole_volume_forward() -> None:
    torch.manual_seed(0)
    model = UNet3d(1, 2, depth=2, base_width=4, encoder_sdn=(2,), state_size=4).eval()
    x = torch.randn(1, 1, 9, 10, 11)
    with torch.no_grad():
        expected = model(x)
    for patch in ((9, 10, 11), (16, 16, 16)):  # exactly the volume, and larger than it
        y = sliding_window_inference(model, x, patch, overlap=0.5, blend="gaussian")
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)


def test_matches_monai_constant_blend() -> None:
    import monai.inferers as monai_inferers
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.Tanh(), nn.Conv3d(4, 3, 3, padding=1)).eval()
    x = torch.randn(2, 2, 13, 10, 17)
    ours = sliding_window_inference(net, x, (8, 6, 8), overlap=0.5, blend="constant", batch_size=4)
    theirs = monai_inferers.sliding_window_inference(x, (8, 6, 8), 4, net, overlap=0.5, mode="constant")
    torch.testing.assert_close(ours, theirs.as_tensor() if hasattr(theirs, "as_tensor") else theirs, rtol=1e-5, atol=1e-5)


def test_works_on_2d_images_and_leaves_model_mode() -> None:
    net = nn.Conv2d(1, 1, 3, padding=1).train()
    y = sliding_window_inference(net, torch.randn(1, 1, 20, 17), 8)
    assert y.shape == (1, 1, 20, 17) and net.training


def test_bad_arguments() -> None:
    x = torch.randn(1, 1, 8, 8, 8)
    net = nn.Identity()
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_inference(net, x, 4, overlap=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        sliding_window_inference(net, x, 4, batch_size=0)
    with pytest.raises(ValueError, match="blend"):
        sliding_window_inference(net, x, 4, blend="linear")
    with pytest.raises(ValueError, match="patch_size"):
        sliding_window_inference(net, x, (4, 4))
    with pytest.raises(ValueError, match="patch_size"):
        sliding_window_inference(net, x, 0)
    with pytest.raises(ValueError, match=r"shape \(B, C, D, H, W\)"):
        sliding_window_inference(net, x[0, 0], 4)
    with pytest.raises(TypeError, match="volume must be a torch.Tensor"):
        sliding_window_inference(net, x.numpy(), 4)
    with pytest.raises(ValueError, match="model output"):
        sliding_window_inference(lambda t: t[..., :-1], x, 4)


class _ShiftModel(nn.Module):
    """Logits that reproduce the image (a 0/1 volume), optionally shifted by one plane along D."""

    def __init__(self, shift: int) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.roll(x, self.shift, dims=2) - 0.5) * 20


def _slab_volume(spacing) -> dict:
    mask = torch.zeros(1, 10, 9, 11)
    mask[:, 3:5] = 1  # two full planes
    return {"image": mask.clone(), "mask": mask, "id": "slab", "spacing": torch.tensor(spacing)}


def test_evaluate_volumes_dice_and_hd95_in_mm() -> None:
    from spatialrec.inference import evaluate_volumes

    vols = [_slab_volume([2.0, 0.5, 0.5]), _slab_volume([4.0, 0.5, 0.5])]
    perfect = evaluate_volumes(_ShiftModel(0), vols, patch_size=(16, 16, 16))
    assert perfect["num_cases"] == 2
    assert perfect["dice"]["mean"] == pytest.approx(1.0) and perfect["hd95"]["mean"] == pytest.approx(0.0)
    shifted = evaluate_volumes(_ShiftModel(1), vols, patch_size=(16, 16, 16), class_names=["slab"])
    assert [r["dice"][0] for r in shifted["per_case"]] == pytest.approx([0.5, 0.5])
    # one plane off along D: 95th percentile of the surface distances is one slice spacing, in mm
    assert [r["hd95"][0] for r in shifted["per_case"]] == pytest.approx([2.0, 4.0])
    assert shifted["hd95"]["per_class"]["slab"] == pytest.approx(3.0)


def test_evaluate_volumes_counts_undefined_hd95_and_restores_mode() -> None:
    from spatialrec.inference import evaluate_volumes

    model = _ShiftModel(0).train()
    empty = {"image": torch.zeros(1, 8, 8, 8), "mask": torch.zeros(1, 8, 8, 8), "id": "empty"}
    res = evaluate_volumes(model, [empty, _slab_volume([1.0, 1.0, 1.0])], (8, 8, 8), overlap=0.25)
    assert res["hd95"]["undefined"] == 1 and res["hd95"]["mean"] == pytest.approx(0.0)
    assert model.training
    with pytest.raises(ValueError, match="empty"):
        evaluate_volumes(model, [], 8)
