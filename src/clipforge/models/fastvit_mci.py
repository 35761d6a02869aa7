"""FastViT-MCi, the image tower of MobileCLIP-S0..S2 / MobileCLIP2-S0..S4 (Vasu et al. 2023,
"FastViT: A Fast Hybrid Vision Transformer using Structural Reparameterization"; MobileCLIP 2024),
in the training ("unfolded") form open_clip runs and saves (timm's `fastvit_mci*`).

Structural reparameterisation: at training time most convolutions are sums of branches (a kxk
conv + BatchNorm, a 1x1 conv + BatchNorm, a BatchNorm identity), which at inference fold into one
conv. open_clip's checkpoints hold the branches and open_clip evaluates them unfolded, so this
module computes the same sums (in eval mode, BatchNorm with its stored statistics) and reproduces
open_clip's numbers exactly; folding would change the rounding. Parameter names are timm's so the
key map is a prefix change.

Layout: a stem of three MobileOne blocks (stride 4 in all), then stages of RepMixer blocks
(depthwise token mixing) and, last, attention blocks with a conditional positional encoding (a
7x7 depthwise conv added to its input); a grouped 3x3 MobileOne block with squeeze-excite
doubles the channels, global average pooling, a linear head into the joint space.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.configs import FastVitMciConfig

__all__ = ["FastVitMci"]


def make_divisible(v: float, divisor: int, round_limit: float = 0.0) -> int:
    """timm's channel rounding (the squeeze-excite widths)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class ConvBN(nn.Module):
    """conv (no bias, 'same'-style padding (k - 1 + s - 1) // 2) -> BatchNorm: one branch."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, ((stride - 1) + (kernel - 1)) // 2, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(relu(fc1(mean over space))))."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * s.sigmoid()


class MobileOneBlock(nn.Module):
    """act(se(identity BN(x) + 1x1 conv-BN(x) + sum of kxk conv-BN(x))), each branch optional."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1,
                 use_se: bool = False, use_act: bool = True, scale_branch: bool = True, conv_branches: int = 1):
        super().__init__()
        self.identity = nn.BatchNorm2d(in_chs) if in_chs == out_chs and stride == 1 else None
        self.conv_kxk = nn.ModuleList([ConvBN(in_chs, out_chs, kernel, stride, groups) for _ in range(conv_branches)]) \
            if conv_branches > 0 else None
        self.conv_scale = ConvBN(in_chs, out_chs, 1, stride, groups) if kernel > 1 and scale_branch else None
        self.se = SqueezeExcite(out_chs, make_divisible(out_chs / 16, 1)) if use_se else None
        self.act = nn.GELU() if use_act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The reference's order of additions (scale + identity, then each kxk branch).
        out = (self.conv_scale(x) if self.conv_scale is not None else 0) + \
            (self.identity(x) if self.identity is not None else 0)
        if self.conv_kxk is not None:
            for branch in self.conv_kxk:
                out = out + branch(x)
        if self.se is not None:
            out = self.se(out)
        return self.act(out) if self.act is not None else out


class ReparamLargeKernelConv(nn.Module):
    """act(se(large kxk conv-BN(x) + small 3x3 conv-BN(x))): the downsampling conv of a stage."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, groups: int, use_se: bool, use_act: bool):
        super().__init__()
        self.large_conv = ConvBN(in_chs, out_chs, kernel, stride, groups)
        self.small_conv = ConvBN(in_chs, out_chs, 3, stride, groups)
        self.se = SqueezeExcite(out_chs, make_divisible(out_chs * 0.25, 8)) if use_se else None
        self.act = nn.GELU() if use_act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.large_conv(x) + self.small_conv(x)
        if self.se is not None:
            out = self.se(out)
        return self.act(out) if self.act is not None else out


class PatchEmbed(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, config: FastVitMciConfig, use_se: bool):
        super().__init__()
        self.proj = nn.Sequential(
            ReparamLargeKernelConv(in_chs, out_chs, config.down_patch_size, config.down_stride, in_chs, use_se,
                                   config.lkc_use_act),
            MobileOneBlock(out_chs, out_chs, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class LayerScale2d(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class RepMixer(nn.Module):
    """x + layer_scale(mixer(x) - norm(x)): depthwise token mixing, both terms MobileOne blocks."""

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.norm = MobileOneBlock(dim, dim, kernel, groups=dim, use_act=False, scale_branch=False, conv_branches=0)
        self.mixer = MobileOneBlock(dim, dim, kernel, groups=dim, use_act=False)
        self.layer_scale = LayerScale2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale(self.mixer(x) - self.norm(x))


class ConvMlp(nn.Module):
    """7x7 depthwise conv-BN, then 1x1 conv, GELU, 1x1 conv."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.conv = ConvBN(dim, dim, 7, groups=dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class RepMixerBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, kernel: int):
        super().__init__()
        self.token_mixer = RepMixer(dim, kernel)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale = LayerScale2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.layer_scale(self.mlp(x))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of [batch, channels, H, W] (MCi3/MCi4's attention norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map (32-wide heads, no qkv bias)."""

    def __init__(self, dim: int, head_dim: int = 32):
        super().__init__()
        self.heads = dim // head_dim
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        n = height * width
        x = x.flatten(2).transpose(-2, -1)  # [batch, n, channels]
        q, k, v = self.qkv(x).reshape(batch, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)  # [batch, heads, n, head_dim]
        x = self.proj(x.transpose(1, 2).reshape(batch, n, channels))
        return x.transpose(-2, -1).reshape(batch, channels, height, width)


class AttentionBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, norm: str):
        super().__init__()
        self.norm = nn.BatchNorm2d(dim) if norm == "batchnorm" else LayerNorm2d(dim, eps=1e-5)
        self.token_mixer = Attention(dim)
        self.layer_scale_1 = LayerScale2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale_2 = LayerScale2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1(self.token_mixer(self.norm(x)))
        return x + self.layer_scale_2(self.mlp(x))


class RepConditionalPosEnc(nn.Module):
    """x + a 7x7 depthwise conv of x: positions from the content around each location."""

    def __init__(self, dim: int, kernel: int = 7):
        super().__init__()
        self.pos_enc = nn.Conv2d(dim, dim, kernel, 1, kernel // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos_enc(x) + x


class FastVitStage(nn.Module):
    def __init__(self, config: FastVitMciConfig, index: int, dim_in: int):
        super().__init__()
        dim = config.embed_dims[index]
        downsample = config.downsamples[index] or dim_in != dim
        self.downsample = PatchEmbed(dim_in, dim, config, config.se_downsamples[index]) if downsample else None
        self.pos_emb = RepConditionalPosEnc(dim) if config.pos_embs[index] else None
        mixer, ratio = config.token_mixers[index], config.mlp_ratios[index]
        self.blocks = nn.Sequential(*[
            RepMixerBlock(dim, ratio, config.repmixer_kernel_size) if mixer == "repmixer"
            else AttentionBlock(dim, ratio, config.attention_norm)
            for _ in range(config.layers[index])
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        if self.pos_emb is not None:
            x = self.pos_emb(x)
        return self.blocks(x)


class Head(nn.Module):
    def __init__(self, features: int, embed_dim: int):
        super().__init__()
        self.fc = nn.Linear(features, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))  # global average pooling (timm's op), projection


class FastVitMci(nn.Module):
    """[batch, 3, S, S] pixels -> [batch, embed_dim]."""

    def __init__(self, config: FastVitMciConfig, embed_dim: int):
        super().__init__()
        self.config = config
        d0 = config.embed_dims[0]
        scale = config.stem_scale_branch
        self.stem = nn.Sequential(
            MobileOneBlock(3, d0, 3, stride=2, scale_branch=scale),
            MobileOneBlock(d0, d0, 3, stride=2, groups=d0, scale_branch=scale),
            MobileOneBlock(d0, d0, 1, scale_branch=scale),
        )
        stages, dim = [], d0
        for i in range(len(config.layers)):
            stages.append(FastVitStage(config, i, dim))
            dim = config.embed_dims[i]
        self.stages = nn.Sequential(*stages)
        self.final_conv = MobileOneBlock(dim, config.num_features, 3, groups=dim, use_se=True)
        self.head = Head(config.num_features, embed_dim)
        self.grad_checkpointing = False  # not implemented for this tower: training runs without it

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """[batch, 3, S, S] -> [batch, num_features, S/32, S/32] (after the final conv)."""
        return self.final_conv(self.stages(self.stem(pixels)))

    def forward_full(
        self, pixels: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[list[torch.Tensor]]]:
        """(final feature map as tokens [batch, (S/32)**2, features], pooled [batch, features], embedding,
        [stem output, after stage 1, ...] as token grids or None). A convolutional tower has no class token."""
        x = self.stem(pixels)
        hidden = [x] if output_hidden_states else None
        for stage in self.stages:
            x = stage(x)
            if hidden is not None:
                hidden.append(x)
        x = self.final_conv(x)
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        tokens = x.flatten(2).transpose(1, 2)
        hidden = [h.flatten(2).transpose(1, 2) for h in hidden] if hidden is not None else None
        return tokens, pooled, self.head.fc(pooled), hidden

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(pixels))
