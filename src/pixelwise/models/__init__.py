"""Segmentation models: a registry of architectures over shared encoders and layers.

    model = create_model("unet", num_classes=6, base_channels=16, depth=4)
    logits = model(images)   # (N, 6, H, W) raw logits, any H, W

Importing this package registers every architecture below.
"""

from pixelwise.models import (  # noqa: F401  (imported for their @register_model side effect)
    deeplabv3plus,
    fcn,
    fullres_cnn,
    lraspp,
    segformer,
    segnet,
    sliding_window,
    unet,
)
from pixelwise.models.profile import model_cost
from pixelwise.models.registry import count_parameters, create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "register_model", "model_cost", "count_parameters"]
