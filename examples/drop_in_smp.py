"""Drop spatial recurrence into a segmentation_models_pytorch Unet without losing what it has learned.

The same demonstration as ``examples/drop_in_monai.py`` (whose helpers it imports), on an smp
``Unet`` with a ResNet-18 encoder. The encoder starts from random weights because nothing can be
downloaded here; with ``encoder_weights="imagenet"`` the conversion is the same. Steps:

1. train the plain Unet for ``--pretrain-steps`` on the synthetic long-range task;
2. ``add_spatial_recurrence`` on the convolutions matching ``--select`` and check, in eval mode,
   that the converted network computes what the original computed (max abs difference <= 1e-5);
3. fine-tune for ``--steps`` (the first ``--freeze-steps`` train only the new layers), and the
   plain network for the same steps as a control;
4. print the validation Dice of each stage.

segmentation_models_pytorch needs torchvision, which must be built for the installed torch:
install torch and torchvision together (``pip install torch torchvision``), then
``pip install 'spatialrec[interop]'``.
"""

from __future__ import annotations

import os
import sys

from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drop_in_monai import common_arguments, run_drop_in  # noqa: E402


def build_smp_unet(image_size: int) -> nn.Module:
    """An smp Unet, ResNet-18 encoder of depth 4 (random weights), 1 input channel, 1 output (logits)."""
    if image_size % 16:
        raise SystemExit(f"--image-size must be a multiple of 16 for a depth-4 encoder, got {image_size}")
    try:
        import segmentation_models_pytorch as smp
    except Exception as err:  # a torchvision built for another torch raises RuntimeError, not ImportError
        raise ImportError(
            "this example needs segmentation_models_pytorch with a torchvision built for the installed torch: "
            f"pip install torch torchvision, then pip install 'spatialrec[interop]' ({type(err).__name__}: {err})"
        ) from err
    return smp.Unet(
        "resnet18", encoder_weights=None, encoder_depth=4, decoder_channels=(32, 16, 8, 8), in_channels=1, classes=1
    )


def main() -> None:
    parser = common_arguments(
        __doc__.splitlines()[0],
        # The second convolution of the decoder blocks at 1/4 and 1/2 resolution.
        select_default="decoder.blocks.[12].conv2.0",
    )
    args = parser.parse_args()
    run_drop_in(lambda: build_smp_unet(args.image_size), args, "segmentation_models_pytorch Unet")


if __name__ == "__main__":
    main()
