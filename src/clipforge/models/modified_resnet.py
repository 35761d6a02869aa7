"""OpenAI's modified ResNet image tower (He et al. 2016, as changed for CLIP: Radford et al. 2021).

Differences from torchvision's ResNet: a 3-convolution stem with an average pool instead of a max
pool; anti-aliased strided convolutions (an average pool before every stride-2 convolution, Zhang
2019); and a QKV attention pool in place of the global average pool.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.configs import ResNetConfig


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        # All convolutions have stride 1; an average pool does the striding (anti-aliasing).
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)

        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            # Key "-1" keeps the conv/bn at "0"/"1", the names OpenAI's checkpoints use.
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * self.expansion)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """Attention pooling: the mean of the feature map queries the whole map (one query per image).

    OpenAI's version computes only this single query; computing all HW+1 queries and keeping the
    first (as open_clip does) gives the same result for HW+1 times the attention work.
    """

    def __init__(self, spatial_dim: int, embed_dim: int, heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spatial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        x = x.flatten(2).transpose(1, 2)  # [batch, HW, channels]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # [batch, HW + 1, channels]
        x = x + self.positional_embedding.to(x.dtype)
        head_width = channels // self.heads
        q = self.q_proj(x[:, :1]).view(batch, 1, self.heads, head_width).transpose(1, 2)
        k = self.k_proj(x).view(batch, -1, self.heads, head_width).transpose(1, 2)
        v = self.v_proj(x).view(batch, -1, self.heads, head_width).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # [batch, heads, 1, head_width]
        return self.c_proj(out.reshape(batch, channels))  # [batch, output_dim]


class ModifiedResNet(nn.Module):
    def __init__(self, cfg: ResNetConfig, output_dim: int):
        super().__init__()
        self.cfg = cfg
        width = cfg.width
        # 3-layer stem
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)

        self._inplanes = width
        self.layer1 = self._make_layer(width, cfg.layers[0])
        self.layer2 = self._make_layer(width * 2, cfg.layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, cfg.layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, cfg.layers[3], stride=2)
        self.attnpool = AttentionPool2d(cfg.image_size // 32, cfg.output_width, cfg.heads, output_dim)
        # Channels-last (NHWC) convolutions: oneDNN on CPU and cuDNN on GPU run them faster (RN50 went
        # from level with open_clip to 1.2x on CPU; BENCHMARKS.md). Weights are kept channels-last,
        # also after load_state_dict(assign=True), which would otherwise bring in the file's layout.
        self._to_channels_last()
        self.register_load_state_dict_post_hook(ModifiedResNet._to_channels_last)

    def _to_channels_last(self, *_: object) -> None:
        self.to(memory_format=torch.channels_last)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.contiguous(memory_format=torch.channels_last)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.avgpool(self.relu3(self.bn3(self.conv3(x))))  # [batch, width, S/4, S/4]
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [batch, width*32, S/32, S/32]
        return self.attnpool(x)
