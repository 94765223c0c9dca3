"""Ready-made segmentation models and their registry.

- :class:`UNet` (SDN-UNet with ``encoder_sdn``/``decoder_sdn``; ``spatial_dims=3`` for volumes),
  :class:`UNetPlusPlus` (SDN-UNet++), :class:`TransUNet` (the Transformer hybrid, with SDN the
  SDN-Transformer hybrid).
- :func:`create_model`, :func:`list_models`, :func:`register_model`: the registry. Each model
  module registers its own entries: ``unet``, ``sdn_unet``, ``pool_unet``, ``unet3d``, ``sdn_unet3d``
  (:mod:`.unet`), ``unet_pp``, ``sdn_unet_pp`` (:mod:`.unet_pp`), ``transunet``,
  ``sdn_transunet`` (:mod:`.transunet`).

2D models map ``(B, in_channels, H, W)`` to logits ``(B, num_classes, H, W)``, 3D ones
``(B, in_channels, D, H, W)`` to ``(B, num_classes, D, H, W)``, for any size whose every side is
``>= 2**depth``. See ``docs/models.md``.
"""

from .registry import create_model, list_models, model_spatial_dims, register_model, unregister_model
from .transunet import TransformerBottleneck, TransUNet
from .unet import UNet, UNet3d, published_unet_levels
from .unet_pp import UNetPlusPlus, published_unet_pp_nodes

__all__ = [
    "TransUNet",
    "TransformerBottleneck",
    "UNet",
    "UNet3d",
    "UNetPlusPlus",
    "create_model",
    "list_models",
    "model_spatial_dims",
    "published_unet_levels",
    "published_unet_pp_nodes",
    "register_model",
    "unregister_model",
]
