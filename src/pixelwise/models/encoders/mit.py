"""Mix Transformer (MiT) encoder of SegFormer (Xie et al. 2021), B0 to B2.

Four stages, each: an overlapping patch embedding (a strided conv, 7x7/4 then 3x3/2),
transformer blocks of efficient self-attention (keys and values come from the tokens
shrunk by a strided conv, the spatial-reduction ratio 8, 4, 2, 1) and a Mix-FFN (linear,
depthwise 3x3 conv, GELU, linear; the conv gives position information, so there is no
position embedding and any input size works), then a LayerNorm. Outputs at strides 4..32.

Parameter names follow Hugging Face's `SegformerModel` (the layout of the released
nvidia/mit-b0..b2 files: `patch_embeddings.i.proj`, `block.i.j.attention.self.query`,
`mlp.dwconv.dwconv`, `layer_norm.i`, ...), so those weights load with strict key matching.
LayerNorms use PyTorch's default eps (1e-5), as that implementation does (the authors'
code used 1e-6 inside the blocks: a relative change near 5e-6 for unit-variance tokens).

Unlike the CNN encoders (five maps, strides 2..32; encoders/base.py), MiT has no stride-2
map, so it is not registered for the CNN decoders; SegFormer's own decoder uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MiTConfig:
    hidden_sizes: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: int = 4
    patch_sizes: tuple[int, int, int, int] = (7, 3, 3, 3)
    strides: tuple[int, int, int, int] = (4, 2, 2, 2)


# The released sizes (SegFormer paper, Table 6).
MIT_VARIANTS: dict[str, MiTConfig] = {
    "b0": MiTConfig(hidden_sizes=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "b1": MiTConfig(hidden_sizes=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "b2": MiTConfig(hidden_sizes=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
}


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch for a random subset of samples."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device) < keep
        return x * mask / keep  # rescaled so the expected value is unchanged


def tokens_to_map(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, H*W, C) -> (N, C, H, W)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlapping windows (padding k//2), then LayerNorm over channels."""

    def __init__(self, in_ch: int, out_ch: int, patch_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, out_ch, patch_size, stride=stride, padding=patch_size // 2)
        self.layer_norm = nn.LayerNorm(out_ch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)  # (N, C, H/s, W/s)
        height, width = x.shape[2], x.shape[3]
        return self.layer_norm(x.flatten(2).transpose(1, 2)), height, width  # (N, L, C)


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys and values come from tokens reduced by `sr_ratio` per side."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not a multiple of {num_heads} heads")
        self.num_heads, self.head_dim, self.sr_ratio = num_heads, dim // num_heads, sr_ratio
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.layer_norm = nn.LayerNorm(dim)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, C) -> (N, heads, L, C/heads)."""
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        q = self.heads(self.query(x))  # (N, h, L, d)
        kv = x
        if self.sr_ratio > 1:
            kv = self.sr(tokens_to_map(x, height, width))  # (N, C, H/r, W/r)
            kv = self.layer_norm(kv.flatten(2).transpose(1, 2))  # (N, L/r^2, C)
        k, v = self.heads(self.key(kv)), self.heads(self.value(kv))
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim ** -0.5, dim=-1)  # (N, h, L, L/r^2)
        out = (attn @ v).transpose(1, 2)  # (N, L, h, d)
        return out.reshape(x.shape[0], x.shape[1], -1)  # (N, L, C)


class SelfOutput(nn.Module):
    """The attention's output projection; a module of its own only for the key name `output.dense`."""

    def __init__(self, dim: int):
        super().__init__()
        self.dense = nn.Linear(dim, dim)


class Attention(nn.Module):
    """Efficient self-attention plus its output projection (keys `self.*`, `output.dense`)."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int):
        super().__init__()
        self.self = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.output = SelfOutput(dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.output.dense(self.self(x, height, width))


class DepthwiseConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.dwconv(tokens_to_map(x, height, width)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """Linear -> depthwise 3x3 conv -> GELU -> linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.dense1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.dense2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.dense2(F.gelu(self.dwconv(self.dense1(x), height, width)))


class MiTBlock(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MixFFN(LN(x))."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: int, drop_path: float):
        super().__init__()
        self.layer_norm_1 = nn.LayerNorm(dim)
        self.attention = Attention(dim, num_heads, sr_ratio)
        self.drop_path = DropPath(drop_path)
        self.layer_norm_2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = x + self.drop_path(self.attention(self.layer_norm_1(x), height, width))
        return x + self.drop_path(self.mlp(self.layer_norm_2(x), height, width))


class MiTEncoder(nn.Module):
    """forward(x: (N, in_channels, H, W)) -> 4 maps (N, hidden_sizes[i], H/4..H/32 rounded up)."""

    first_conv = "patch_embeddings.0.proj.weight"  # adapted by the weight loader for in_channels != 3

    def __init__(self, cfg: MiTConfig, in_channels: int = 3, drop_path_rate: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.cfg = cfg
        self.out_channels = list(cfg.hidden_sizes)
        self.strides = [4, 8, 16, 32]
        # Stochastic depth grows linearly from 0 at the first block to drop_path_rate at the last.
        total = sum(cfg.depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        chans = [in_channels, *cfg.hidden_sizes]
        self.patch_embeddings = nn.ModuleList(
            [OverlapPatchEmbed(chans[i], chans[i + 1], cfg.patch_sizes[i], cfg.strides[i]) for i in range(4)]
        )
        blocks, start = [], 0
        for i, depth in enumerate(cfg.depths):
            blocks.append(nn.ModuleList([
                MiTBlock(cfg.hidden_sizes[i], cfg.num_heads[i], cfg.sr_ratios[i], cfg.mlp_ratio, rates[start + j])
                for j in range(depth)
            ]))
            start += depth
        self.block = nn.ModuleList(blocks)
        self.layer_norm = nn.ModuleList([nn.LayerNorm(c) for c in cfg.hidden_sizes])
        self.apply(init_weights)

    @property
    def output_stride(self) -> int:
        return self.strides[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for embed, blocks, norm in zip(self.patch_embeddings, self.block, self.layer_norm):
            x, height, width = embed(x)  # (N, L, C) tokens of an (height, width) grid
            for block in blocks:
                x = block(x, height, width)
            x = tokens_to_map(norm(x), height, width)  # (N, C, H/s, W/s)
            features.append(x)
        return features


def init_weights(module: nn.Module) -> None:
    """SegFormer's initialisation: truncated normal (std 0.02) for linear layers, He (fan-out) for convs."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, std=(2.0 / fan_out) ** 0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
