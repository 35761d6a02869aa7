"""Training FLOPs of a CLIP model, counted analytically from its `ClipConfig`.

What is counted: the matrix multiplications and convolutions of `clipforge.models`, as
`torch.utils.flop_counter.FlopCounterMode` counts them (2 FLOPs per multiply-add; attention as its
two batched matmuls, QK^T and AV, over the full square even under a causal mask). Elementwise work
(LayerNorm, GELU, softmax, BatchNorm, residual adds) is not counted: it is a few percent of the
total and runs memory-bound, so the MFU assumption absorbs it. `tests/test_plan.py` checks these
formulas against FlopCounterMode on the model code, at tiny size on the CPU (forward and backward)
and at full size on the meta device (forward).

Text: every caption runs `text_tokens` positions, by default the context length (77), as OpenAI's
and open_clip's training do. clipforge's own trainer skips the padding (`encode_text`), so its text
tower costs less with short captions; pass the mean caption length to plan for that.

Training = forward + backward, the backward being twice the forward (a gradient for the input and
one for the weights of each matmul), less the input gradient of each tower's first layer (the
pixels and token ids need none). Gradient checkpointing recomputes the forward of every
transformer block once more (clipforge checkpoints transformer blocks only, not ResNet stages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from clipforge.configs import ClipConfig, ResNetConfig, VisionTransformerConfig


@dataclass(frozen=True)
class TowerFlops:
    """Forward FLOPs of one tower for one sample."""

    total: float
    blocks: float  # the part inside transformer blocks (what gradient checkpointing recomputes)
    first_layer: float  # the first matmul/conv on the input (its input gradient is never computed)


def transformer_block_flops(tokens: int, width: int, mlp_width: int) -> float:
    """One pre-norm block over `tokens` tokens: qkv, QK^T, AV, out-proj, MLP."""
    n, d, m = tokens, width, mlp_width
    return 2 * n * d * 3 * d + 4 * n * n * d + 2 * n * d * d + 4 * n * d * m


def vit_flops(cfg: VisionTransformerConfig, embed_dim: int) -> TowerFlops:
    tokens = cfg.grid_size**2 + 1
    patch = 2 * cfg.grid_size**2 * cfg.width * 3 * cfg.patch_size**2  # conv1, one output per patch
    blocks = cfg.layers * transformer_block_flops(tokens, cfg.width, cfg.mlp_width)
    head = 2 * cfg.width * embed_dim  # class token @ proj
    return TowerFlops(patch + blocks + head, blocks, patch)


def _conv(out_size: int, c_in: int, c_out: int, kernel: int) -> float:
    return 2.0 * out_size * out_size * c_out * c_in * kernel * kernel


def resnet_stages(cfg: ResNetConfig) -> list[tuple[int, int, int, int]]:
    """Each bottleneck as (in_channels, planes, stride, input_size) in the order the model runs them."""
    size = cfg.image_size // 4  # after the stem (stride-2 conv, then a 2x average pool)
    inplanes, blocks = cfg.width, []
    for stage, count in enumerate(cfg.layers):
        planes = cfg.width * 2**stage
        for i in range(count):
            stride = 2 if (stage > 0 and i == 0) else 1
            blocks.append((inplanes, planes, stride, size))
            size //= stride
            inplanes = planes * 4
    return blocks


def resnet_flops(cfg: ResNetConfig, embed_dim: int) -> TowerFlops:
    w, half = cfg.width, cfg.width // 2
    s2 = cfg.image_size // 2
    first = _conv(s2, 3, half, 3)
    total = first + _conv(s2, half, half, 3) + _conv(s2, half, w, 3)  # the 3-conv stem
    for inplanes, planes, stride, size in resnet_stages(cfg):
        out = size // stride
        total += _conv(size, inplanes, planes, 1) + _conv(size, planes, planes, 3) + _conv(out, planes, planes * 4, 1)
        if stride > 1 or inplanes != planes * 4:
            total += _conv(out, inplanes, planes * 4, 1)  # downsample (after an average pool)
    channels = cfg.output_width
    tokens = (cfg.image_size // 32) ** 2 + 1  # the mean token + the final feature map
    # Attention pool: q for the mean token only; k, v for every token; one query's attention; c_proj.
    total += 2 * channels * channels + 2 * 2 * tokens * channels * channels + 4 * tokens * channels
    total += 2 * channels * embed_dim
    return TowerFlops(total, 0.0, first)


def image_flops(config: ClipConfig) -> TowerFlops:
    if isinstance(config.vision, ResNetConfig):
        return resnet_flops(config.vision, config.embed_dim)
    return vit_flops(config.vision, config.embed_dim)


def text_flops(config: ClipConfig, text_tokens: Optional[int] = None) -> TowerFlops:
    """Forward FLOPs of the text tower for one caption of `text_tokens` positions (default: all)."""
    t = config.text
    n = t.context_length if text_tokens is None else text_tokens
    blocks = t.layers * transformer_block_flops(n, t.width, t.mlp_width)
    head = 2 * t.width * config.embed_dim  # end-of-text token @ text_projection
    return TowerFlops(blocks + head, blocks, 0.0)  # the token embedding is a lookup: no FLOPs


def loss_flops_per_sample(embed_dim: int, global_batch: int, gpus: int, local_loss: bool = True) -> float:
    """Forward FLOPs of the contrastive logits, per sample of the global batch (see train/loss.py).

    One process: one [B, E] x [E, B] matmul per step. Across ranks with the local loss, each rank
    scores its rows against all columns twice (image->text and text->image): 2 x [b, E] x [E, B].
    Without it every rank computes the whole [B, B] matrix, so the work is repeated `gpus` times.
    """
    b_total, e = global_batch, embed_dim
    if gpus <= 1:
        return 2.0 * b_total * e  # 2 B^2 E per step / B samples
    if local_loss:
        return 4.0 * b_total * e
    return 2.0 * gpus * b_total * e


@dataclass(frozen=True)
class SampleFlops:
    """FLOPs per training sample (one image-caption pair) of one step."""

    forward: float  # image + text + loss, forward only
    train: float  # forward + backward: the model FLOPs of MFU
    recompute: float  # extra forward that gradient checkpointing runs (transformer blocks)
    image_forward: float
    text_forward: float
    loss_forward: float


def sample_flops(
    config: ClipConfig,
    global_batch: int,
    gpus: int = 1,
    *,
    text_tokens: Optional[int] = None,
    local_loss: bool = True,
) -> SampleFlops:
    image, text = image_flops(config), text_flops(config, text_tokens)
    loss = loss_flops_per_sample(config.embed_dim, global_batch, gpus, local_loss)
    forward = image.total + text.total + loss
    train = 3 * forward - image.first_layer - text.first_layer
    return SampleFlops(forward, train, image.blocks + text.blocks, image.total, text.total, loss)
