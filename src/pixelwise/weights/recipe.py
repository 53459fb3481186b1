"""A recipe's `model.encoder_weights: imagenet`, resolved before any work is done.

`resolve_recipe_weights` finds which encoder the recipe's model uses (by building it on
the meta device, which allocates nothing), picks the catalogue entry for it, and
requires the verified file in the cache; when it is missing the error carries the exact
`pixelwise weights fetch ...` command. The result gives the run its normalisation (unless
the recipe sets data.mean/std), loads itself strictly into the built model, and is what
the checkpoint records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pixelwise.errors import WeightsError
from pixelwise.weights.cache import CachedWeights, require
from pixelwise.weights.catalogue import WeightsEntry, is_catalogue_reference, weights_for_encoder
from pixelwise.weights.load import KeyReport, load_into_encoder


def find_encoder(model: nn.Module, where: str = "model") -> nn.Module:
    """The one encoder inside `model` that create_encoder built (it carries `encoder_name`)."""
    found = [m for m in model.modules() if isinstance(getattr(m, "encoder_name", None), str)]
    if len(found) != 1:
        names = ", ".join(sorted(m.encoder_name for m in found))
        raise WeightsError(f"{where}: {'has no pretrainable encoder' if not found else 'has several encoders: ' + names}")
    return found[0]


def encoder_of(model_name: str, model_kwargs: dict[str, Any]) -> str:
    """The encoder name the model `model_name` builds with these kwargs (built on the meta
    device: nothing is allocated, no weights file is read)."""
    from pixelwise.models import create_model

    kwargs = {k: v for k, v in model_kwargs.items() if k != "encoder_weights"}
    kwargs.setdefault("num_classes", 2)
    with torch.device("meta"):
        model = create_model(model_name, **kwargs)
    return find_encoder(model, f"model {model_name!r}").encoder_name


def load_pretrained(model: nn.Module, spec: str = "imagenet", *, strict: bool = True) -> tuple[CachedWeights, KeyReport]:
    """Load catalogue weights (a tag such as "imagenet" or a catalogue name) into the encoder
    of `model`, from the verified cache; the Python counterpart of the recipe key."""
    encoder = find_encoder(model)
    entry = weights_for_encoder(encoder.encoder_name, spec)
    return load_into_encoder(encoder, entry, strict=strict)


def adapt_stats(values: tuple[float, ...], channels: int) -> list[float]:
    """Per-channel statistics for `channels` inputs, matching how the first conv is adapted:
    one channel takes the mean of RGB's, more repeat RGB cyclically."""
    if channels == len(values):
        return list(values)
    if channels == 1:
        return [sum(values) / len(values)]
    return [values[i % len(values)] for i in range(channels)]


@dataclass(frozen=True)
class RecipeWeights:
    entry: WeightsEntry
    cached: CachedWeights

    def normalisation(self, channels: int = 3) -> tuple[list[float], list[float]]:
        """(mean, std) the weights were trained with, for `channels` input channels."""
        return adapt_stats(self.entry.mean, channels), adapt_stats(self.entry.std, channels)

    def load_into(self, model: nn.Module) -> KeyReport:
        """Strictly load the weights into the model's encoder; WeightsError lists any key problem."""
        encoder = find_encoder(model)
        if encoder.encoder_name != self.entry.encoder:
            raise WeightsError(f"weights {self.entry.name} are for encoder {self.entry.encoder!r}, "
                               f"the model has {encoder.encoder_name!r}")
        _, report = load_into_encoder(encoder, self.entry, cached=self.cached)
        return report

    def record(self) -> dict[str, Any]:
        return self.cached.record()


def resolve_recipe_weights(model_name: str, model_kwargs: dict[str, Any], spec: str | None) -> RecipeWeights | None:
    """None when `spec` is None; else the verified cached weights, or WeightsError saying
    what to run. Call it before reading any data."""
    if spec is None:
        return None
    if not is_catalogue_reference(spec):
        raise WeightsError(f"model.encoder_weights: {spec!r} is not a catalogue name or tag "
                           f"(`pixelwise weights list`); a local file goes in model.kwargs.encoder_weights")
    entry = weights_for_encoder(encoder_of(model_name, model_kwargs), spec)
    return RecipeWeights(entry, require(entry))
