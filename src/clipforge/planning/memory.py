"""Memory of one training process: parameters, optimizer state and activations, from a `ClipConfig`.

The activation formulas list the tensors autograd keeps for the backward pass in clipforge's model
code (`nn/layers.py`, `models/`), per sample; they were written by listing the saved tensors of
tiny models (torch.autograd.graph.saved_tensors_hooks) and are checked that way in tests/test_plan.py.

Transformer block over n tokens, width d, MLP width m, h heads, activations of `a` bytes (4 in
fp32, 2 under bf16/fp16 autocast):
    n * (8d + 16 + a * (6d + 2m)) + 4hn   [+ a*n*m with QuickGELU]
    8d + 16: the two LayerNorm inputs and their mean/rstd, in fp32 (LayerNorm runs in fp32; under
        autocast the `.float()` copies are what is saved); 6d: ln_1 output, q/k/v (3d, one
        storage), the attention output (already in the [n, d] layout out_proj reads), ln_2 output;
        2m: the MLP hidden before and after GELU (QuickGELU keeps one more: the sigmoid);
        4hn: attention's fp32 log-sum-exp.
With gradient checkpointing a block keeps only its input (a*n*d); its backward recomputes it.
ResNet stages are walked conv by conv (BatchNorm input and ReLU output per conv; the average-pooled
tensors; the attention pool's tokens, keys and values); clipforge does not checkpoint them.

When the peak comes: the text tower runs after the image tower, so its backward runs first.
    end of forward + loss backward:  all activations + the contrastive logits
    text tower backward:             all activations + the recomputed text block (checkpointing)
    image tower backward:            image activations + the recomputed image block + text gradients
    optimizer step:                  gradients + AdamW's temporary (activations are gone)
A backward's working set is one recomputed block plus one MLP-hidden gradient (a*n*m; two with
QuickGELU); without checkpointing it fits in what the text tower frees first, so the peak is the end
of the forward.

Per process, on top of the activations:
    weights 4 B/param (fp32 master weights also under mixed precision), AdamW exp_avg + exp_avg_sq
    8 B/param, gradients 4 B/param (during the backward and the step), autocast's bf16/fp16 copies
    of the matmul weights 2 B/param (kept for the backward), DDP's gradient buckets 4 B/param with
    more than one process, the contrastive loss: about four fp32 [local batch, global batch]
    matrices (logits and log-softmax of both directions, then their gradients), and the gathered
    features. Not modelled: the CUDA context, cuBLAS/cuDNN workspaces and allocator fragmentation
    (the plan keeps a margin of GPU memory free for them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from clipforge.configs import (
    ClipConfig,
    ResNetConfig,
    TextConfig,
    VisionTransformerConfig,
)
from clipforge.planning.flops import resnet_stages

GB = 1e9


# ---- parameters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamCount:
    total: int  # parameters (what the optimizer holds)
    matmul: int  # those autocast casts to bf16/fp16 (linear, conv and projection weights and biases)
    buffers: int  # BatchNorm running statistics (in checkpoints, not in the optimizer)


def _transformer_params(width: int, layers: int, mlp_width: int) -> tuple[int, int]:
    w, m = width, mlp_width
    matmul = (3 * w * w + 3 * w) + (w * w + w) + (w * m + m) + (m * w + w)  # in_proj, out_proj, c_fc, c_proj
    return layers * (matmul + 4 * w), layers * matmul  # + ln_1, ln_2


def _vit_params(cfg: VisionTransformerConfig, embed_dim: int) -> tuple[int, int, int]:
    w = cfg.width
    blocks, blocks_mm = _transformer_params(w, cfg.layers, cfg.mlp_width)
    conv, proj = 3 * cfg.patch_size**2 * w, w * embed_dim
    total = conv + w + (cfg.grid_size**2 + 1) * w + 2 * w + blocks + 2 * w + proj
    return total, conv + blocks_mm + proj, 0


def _resnet_params(cfg: ResNetConfig, embed_dim: int) -> tuple[int, int, int]:
    w, half = cfg.width, cfg.width // 2
    convs = 3 * half * 9 + half * half * 9 + half * w * 9
    bn_channels = half + half + w
    for inplanes, planes, stride, _ in resnet_stages(cfg):
        convs += inplanes * planes + 9 * planes * planes + planes * 4 * planes
        bn_channels += planes + planes + 4 * planes
        if stride > 1 or inplanes != planes * 4:
            convs += inplanes * planes * 4
            bn_channels += planes * 4
    c = cfg.output_width
    pool_mm = 3 * (c * c + c) + c * embed_dim + embed_dim
    total = convs + 2 * bn_channels + ((cfg.image_size // 32) ** 2 + 1) * c + pool_mm
    buffers = 2 * bn_channels  # running mean and variance (and a step counter per BatchNorm, ignored)
    return total, convs + pool_mm, buffers


def _text_params(t: TextConfig, embed_dim: int) -> tuple[int, int]:
    blocks, blocks_mm = _transformer_params(t.width, t.layers, t.mlp_width)
    proj = t.width * embed_dim
    total = t.vocab_size * t.width + t.context_length * t.width + blocks + 2 * t.width + proj
    return total, blocks_mm + proj


def param_count(config: ClipConfig) -> ParamCount:
    """`sum(p.numel() for p in ClipModel(config).parameters())`, without building the model."""
    if isinstance(config.vision, ResNetConfig):
        v_total, v_mm, buffers = _resnet_params(config.vision, config.embed_dim)
    else:
        v_total, v_mm, buffers = _vit_params(config.vision, config.embed_dim)
    t_total, t_mm = _text_params(config.text, config.embed_dim)
    return ParamCount(v_total + t_total + 1, v_mm + t_mm, buffers)  # + logit_scale


# ---- activations -----------------------------------------------------------------------------------


def block_activation_bytes(tokens: int, width: int, mlp_width: int, heads: int, act_bytes: int,
                           quick_gelu: bool) -> float:
    """What one transformer block keeps for its backward, per sample (see the module docstring)."""
    n, d, m, a = tokens, width, mlp_width, act_bytes
    return n * (8 * d + 16 + a * (6 * d + 2 * m + (m if quick_gelu else 0))) + 4 * heads * n


@dataclass(frozen=True)
class TowerActivations:
    """Bytes per sample one tower keeps for its backward pass, and what its backward adds."""

    held: float  # kept from the forward until this tower's backward
    backward_extra: float  # the working set while its backward runs (a recomputed block, a gradient)
    checkpointed: bool


def _transformer_tower(n: int, d: int, m: int, heads: int, layers: int, a: int, quick_gelu: bool,
                       stem: float, head: float, checkpointing: bool) -> TowerActivations:
    block = block_activation_bytes(n, d, m, heads, a, quick_gelu)
    gradient = a * n * m * (2 if quick_gelu else 1)  # the MLP hidden's gradient (QuickGELU: two of them)
    if checkpointing:
        return TowerActivations(stem + layers * a * n * d + head, block + gradient, True)
    return TowerActivations(stem + layers * block + head, gradient, False)


def _vit_activations(cfg: VisionTransformerConfig, a: int, quick_gelu: bool, checkpointing: bool) -> TowerActivations:
    n, d, pixels = cfg.grid_size**2 + 1, cfg.width, 3 * cfg.image_size**2
    # the fp32 pixel batch, its autocast copy (kept by conv1), ln_pre's input and statistics
    stem = 4 * pixels + (a * pixels if a != 4 else 0) + 4 * n * d + 8 * n
    # ln_post reads the class token x[:, 0]: in fp32 that view keeps the whole last residual alive
    head = (4 * n * d if a == 4 else 4 * d) + 8 + a * d
    return _transformer_tower(n, d, cfg.mlp_width, cfg.heads, cfg.layers, a, quick_gelu, stem, head, checkpointing)


def _text_activations(t: TextConfig, tokens: int, a: int, quick_gelu: bool, checkpointing: bool) -> TowerActivations:
    n, d = tokens, t.width
    stem = 8 * n  # token ids (int64), kept by the embedding lookup
    head = 4 * n * d + 8 * n + a * d + 16  # ln_final input and statistics, pooled state, eot index
    return _transformer_tower(n, d, t.mlp_width, t.heads, t.layers, a, quick_gelu, stem, head, checkpointing)


def _resnet_activations(cfg: ResNetConfig, a: int) -> TowerActivations:
    w, half, s = cfg.width, cfg.width // 2, cfg.image_size
    pixels = 3 * s * s
    elements = 0.0  # in the activation dtype
    # stem: each conv keeps BatchNorm's input and ReLU's (in-place) output; then the 2x average pool
    elements += 2 * half * (s // 2) ** 2 * 2 + 2 * w * (s // 2) ** 2 + w * (s // 4) ** 2
    for inplanes, planes, stride, size in resnet_stages(cfg):
        out = size // stride
        elements += 2 * planes * size**2 * 2  # conv1 and conv2: BN input + ReLU output
        if stride > 1:
            elements += planes * out**2  # the anti-aliasing average pool's output (conv3's input)
        elements += 2 * planes * 4 * out**2  # conv3: BN input + ReLU output after the residual add
        if stride > 1 or inplanes != planes * 4:
            elements += inplanes * out**2 + planes * 4 * out**2  # downsample: pooled input, BN input
    c, tokens = cfg.output_width, (s // 32) ** 2 + 1
    elements += 3 * tokens * c + 2 * c  # attention pool: tokens (+pos), keys, values; query, output
    # the fp32 pixel batch and its channels-last (fp32) or autocast (bf16/fp16) copy, kept by conv1
    held = (4 + a) * pixels + a * elements + 4 * cfg.heads
    # the backward's largest gradient: one stem feature map (fp32 grads for BatchNorm's input)
    return TowerActivations(held, a * w * (s // 2) ** 2, False)


def tower_activations(config: ClipConfig, precision: str, grad_checkpointing: bool = False,
                      text_tokens: Optional[int] = None) -> tuple[TowerActivations, TowerActivations, float]:
    """(image tower, text tower, features) bytes per sample."""
    a = 4 if precision == "fp32" else 2
    quick = config.activation == "quick_gelu"
    if isinstance(config.vision, ResNetConfig):
        image = _resnet_activations(config.vision, a)
    else:
        image = _vit_activations(config.vision, a, quick, grad_checkpointing)
    tokens = config.text.context_length if text_tokens is None else text_tokens
    text = _text_activations(config.text, tokens, a, quick, grad_checkpointing)
    # per tower: projection output, normalized features, their fp32 copy for the loss, scaled copy
    features = 2 * (2 * a + 8) * config.embed_dim
    return image, text, features


# ---- one process -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of one training process (one GPU) for one optimizer step."""

    weights: float
    optimizer: float
    gradients: float
    autocast_copies: float
    ddp_buckets: float
    activations: float  # at the peak: activations and the backward's working set
    loss: float  # the contrastive loss's logits and gathered features, when they are live at the peak
    optimizer_temp: float  # AdamW's parameter-sized temporary, when the peak is the optimizer step
    peak_phase: str  # "forward" (end of forward and the loss), "text backward", "image backward", "step"

    @property
    def total(self) -> float:
        return (self.weights + self.optimizer + self.gradients + self.autocast_copies + self.ddp_buckets
                + self.activations + self.loss + self.optimizer_temp)

    def to_dict(self) -> dict[str, float]:
        names = ("weights", "optimizer", "gradients", "autocast_copies", "ddp_buckets", "activations", "loss",
                 "optimizer_temp")
        return {name: getattr(self, name) / GB for name in names} | {"total": self.total / GB}


def loss_bytes(local_batch: int, global_batch: int, gpus: int, embed_dim: int, local_loss: bool = True) -> float:
    """The contrastive loss's fp32 buffers on one process at their peak (see train/loss.py).

    About four [rows, columns] fp32 matrices: the logits and log-softmax of both directions in the
    forward; the log-softmax outputs and their gradients in the backward. Rows are the process's
    local batch with the local loss, the global batch without it. Plus the gathered image and
    text features when there is more than one process.
    """
    if gpus <= 1:
        return 16.0 * local_batch * local_batch
    rows = local_batch if local_loss else global_batch
    return 16.0 * rows * global_batch + 2 * 4.0 * global_batch * embed_dim


def estimate_memory(
    config: ClipConfig,
    micro_batch: int,
    *,
    precision: str = "bf16",
    grad_checkpointing: bool = False,
    gpus: int = 1,
    global_batch: Optional[int] = None,
    local_batch: Optional[int] = None,
    local_loss: bool = True,
    text_tokens: Optional[int] = None,
    params: Optional[ParamCount] = None,
) -> MemoryEstimate:
    """Peak memory of one process running micro-batches of `micro_batch` pairs.

    `local_batch` (default: micro_batch) is the process's share of the global batch per optimizer
    step; with contrastive accumulation (clipforge's accum_steps) the loss still scores all of it.
    """
    params = params or param_count(config)
    local_batch = local_batch or micro_batch
    global_batch = global_batch or local_batch * gpus
    p, b = params.total, micro_batch
    image, text, features = tower_activations(config, precision, grad_checkpointing, text_tokens)
    text_grads = 4.0 * param_count_text(config)
    gathered = 2 * 4.0 * global_batch * config.embed_dim if gpus > 1 else 0.0
    loss = loss_bytes(local_batch, global_batch, gpus, config.embed_dim, local_loss)
    casts = 2.0 * params.matmul if precision != "fp32" else 0.0
    phases = {  # name -> (activations, loss buffers, gradients, autocast copies, AdamW temporary)
        "forward": (b * (image.held + text.held + features), loss, 0.0, casts, 0.0),
        "text backward": (b * (image.held + text.held + text.backward_extra), gathered, 0.0, casts, 0.0),
        "image backward": (b * (image.held + image.backward_extra), gathered, text_grads, casts, 0.0),
        "step": (0.0, 0.0, 4.0 * p, 0.0, 4.0 * p),
    }
    phase = max(phases, key=lambda k: sum(phases[k]))
    acts, loss_live, grads, copies, temp = phases[phase]
    return MemoryEstimate(
        weights=4.0 * p + 4.0 * params.buffers,
        optimizer=8.0 * p,
        gradients=grads,
        autocast_copies=copies,
        ddp_buckets=4.0 * p if gpus > 1 else 0.0,
        activations=acts,
        loss=loss_live,
        optimizer_temp=temp,
        peak_phase=phase,
    )


def param_count_text(config: ClipConfig) -> int:
    return _text_params(config.text, config.embed_dim)[0]


def max_micro_batch(fits, limit: int = 1 << 22) -> int:
    """The largest b >= 1 with fits(b) (fits must be monotone), or 0 if even b = 1 does not fit."""
    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
