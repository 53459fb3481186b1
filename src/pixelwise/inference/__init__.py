"""Inference: `Predictor` (image -> label map), tiling for large images, test-time augmentation."""

from pixelwise.inference.predictor import DEFAULT_MAX_PIXELS, Prediction, Predictor, Preprocessing, iter_images
from pixelwise.inference.tiling import predict_tiled, tiled_logits, tiled_probabilities
from pixelwise.inference.tta import parse_tta, tta_probabilities, with_tta

__all__ = [
    "DEFAULT_MAX_PIXELS", "Prediction", "Predictor", "Preprocessing", "iter_images",
    "predict_tiled", "tiled_logits", "tiled_probabilities", "parse_tta", "tta_probabilities", "with_tta",
]
