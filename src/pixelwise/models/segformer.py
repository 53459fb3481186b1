"""SegFormer (Xie et al. 2021): a Mix Transformer encoder and an all-MLP decoder.

The decoder projects each of the encoder's four maps (strides 4, 8, 16, 32) to
`decoder_channels` with a linear layer, upsamples them to stride 4, concatenates them
(deepest first), fuses them with a 1x1 conv + BatchNorm + ReLU and classifies with a 1x1
conv; the logits are then resized to the input. Keys follow Hugging Face's
`SegformerForSemanticSegmentation` without its `segformer.` prefix (`encoder.*`,
`decode_head.linear_c.i.proj`, `decode_head.linear_fuse`, ...), so its files load as is.

Inputs are zero-padded to a multiple of 32 (SegmentationModel): then every stage's grid
divides its spatial-reduction ratio and inputs smaller than 32 pixels still work.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelwise.models.encoders.mit import MIT_VARIANTS, MiTEncoder
from pixelwise.models.layers import SegmentationModel, resize_to
from pixelwise.models.registry import register_model

# Decoder width of the released models: 256 for B0/B1, 768 from B2 up (paper, Table 1).
DECODER_CHANNELS = {"b0": 256, "b1": 256, "b2": 768}


class MLPProjection(nn.Module):
    """(N, C, h, w) -> (N, D, h, w) by one linear layer over channels (key `proj`)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.proj = nn.Linear(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class AllMLPDecoder(nn.Module):
    def __init__(self, in_channels: list[int], channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.linear_c = nn.ModuleList([MLPProjection(c, channels) for c in in_channels])
        self.linear_fuse = nn.Conv2d(channels * len(in_channels), channels, 1, bias=False)
        self.batch_norm = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = [features[0].shape[2], features[0].shape[3]]
        maps = [resize_to(proj(f), size) for proj, f in zip(self.linear_c, features)]  # each (N, D, H/4, W/4)
        x = self.linear_fuse(torch.cat(maps[::-1], dim=1))  # (N, D, H/4, W/4)
        x = self.dropout(torch.relu(self.batch_norm(x)))
        return self.classifier(x)  # (N, K, H/4, W/4)


class SegFormer(SegmentationModel):
    output_stride = 32

    def __init__(self, num_classes: int, in_channels: int, variant: str, decoder_channels: int,
                 drop_path_rate: float, dropout: float):
        super().__init__()
        if variant not in MIT_VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(MIT_VARIANTS)}")
        if not isinstance(decoder_channels, int) or decoder_channels < 1:
            raise ValueError(f"decoder_channels must be a positive integer, got {decoder_channels!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.encoder = MiTEncoder(MIT_VARIANTS[variant], in_channels, drop_path_rate)
        self.encoder.encoder_name = f"mit_{variant}"  # the weights catalogue's name (mit_b0.imagenet is for it)
        self.decode_head = AllMLPDecoder(self.encoder.out_channels, decoder_channels, num_classes, dropout)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.decode_head(self.encoder(x))  # (N, K, H/4, W/4)
        return resize_to(logits, [x.shape[2], x.shape[3]])  # (N, K, H, W)


@register_model(
    "segformer",
    "SegFormer: Mix Transformer encoder (variant b0, b1, b2) and all-MLP decoder; Hugging Face key layout",
    small_kwargs={"decoder_channels": 32},
)
def segformer(num_classes: int, in_channels: int = 3, variant: str = "b0", decoder_channels: int | None = None,
              drop_path_rate: float = 0.1, dropout: float = 0.1, encoder_weights: str | None = None) -> SegFormer:
    if not isinstance(variant, str):
        raise ValueError(f"variant must be one of {', '.join(MIT_VARIANTS)}, got {variant!r}")
    for key, value in (("drop_path_rate", drop_path_rate), ("dropout", dropout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number in [0, 1), got {value!r}")
    channels = DECODER_CHANNELS.get(variant, 256) if decoder_channels is None else decoder_channels
    model = SegFormer(num_classes, in_channels, variant, channels, float(drop_path_rate), float(dropout))
    if encoder_weights:
        from pixelwise.models.pretrained import load_encoder_weights

        load_encoder_weights(model.encoder, encoder_weights)
    return model
