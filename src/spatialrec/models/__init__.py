"""Ready-made segmentation models and their registry.

- :class:`UNet` (SDN-UNet with ``encoder_sdn``/``decoder_sdn``), :class:`UNetPlusPlus`
  (SDN-UNet++), :class:`TransUNet` (the Transformer hybrid, with SDN the SDN-Transformer hybrid).
- :func:`create_model`, :func:`list_models`, :func:`register_model`: the registry, with the
  entries ``unet``, ``sdn_unet``, ``unet_pp``, ``sdn_unet_pp``, ``transunet``, ``sdn_transunet``,
  and the volumetric ``unet3d``, ``sdn_unet3d`` (:class:`UNet3d`, ``(B, C, D, H, W)`` inputs).

Every model maps ``(B, in_channels, H, W)`` to logits ``(B, num_classes, H, W)`` for any
``H, W >= 2**depth``. See ``docs/models.md``.
"""

from .registry import create_model, list_models, register_model, unregister_model
from .transunet import TransformerBottleneck, TransUNet
from .unet import UNet, published_unet_levels
from .unet_pp import UNetPlusPlus, published_unet_pp_nodes
from .unet3d import UNet3d  # registers unet3d, sdn_unet3d

__all__ = [
    "TransUNet",
    "TransformerBottleneck",
    "UNet",
    "UNetPlusPlus",
    "UNet3d",
    "create_model",
    "list_models",
    "published_unet_levels",
    "published_unet_pp_nodes",
    "register_model",
    "unregister_model",
]
