"""Configs from tensor shapes, and tensor shapes from configs, for the canonical layout.

`expected_shapes(cfg)` lists every canonical key with its shape, computed from the config alone
(no model is built), so it doubles as the frozen canonical key list. `infer_config` goes the other
way the way OpenAI's `build_model` does. Attention heads leave no trace in tensor shapes: like
`build_model`, `infer_config` assumes 64-wide heads (width // 64; ResNet attention pool
width * 32 // 64). Weights trained otherwise (open_clip's ViT-H/g/bigG use head width 80/88/104)
need their real config, e.g. from `open_clip_config_to_clip_config` or an HF config.json.
"""

from __future__ import annotations

import math
import re
from typing import Union

import torch

from ..configs import (
    Activation,
    ClipConfig,
    ResNetConfig,
    TextConfig,
    VisionTransformerConfig,
)
from .errors import CheckpointError

Shape = tuple[int, ...]


def describe(cfg: ClipConfig) -> str:
    """A one-line name for the architecture, used in error messages."""
    v, t = cfg.vision, cfg.text
    if isinstance(v, ResNetConfig):
        vision = f"ModifiedResNet(layers={tuple(v.layers)}, width={v.width}, image={v.image_size})"
    else:
        vision = (f"ViT(width={v.width}, layers={v.layers}, patch={v.patch_size}, image={v.image_size}, "
                  f"mlp={v.mlp_width})")
    text = f"text(width={t.width}, layers={t.layers}, context={t.context_length}, vocab={t.vocab_size}, mlp={t.mlp_width})"
    return f"CLIP(embed_dim={cfg.embed_dim}, {vision}, {text})"


def _transformer_shapes(prefix: str, width: int, layers: int, mlp_width: int) -> dict[str, Shape]:
    out: dict[str, Shape] = {}
    for i in range(layers):
        p = f"{prefix}transformer.resblocks.{i}."
        out.update({
            p + "attn.in_proj_weight": (3 * width, width),  # q, k, v stacked along dim 0
            p + "attn.in_proj_bias": (3 * width,),
            p + "attn.out_proj.weight": (width, width),
            p + "attn.out_proj.bias": (width,),
            p + "ln_1.weight": (width,),
            p + "ln_1.bias": (width,),
            p + "mlp.c_fc.weight": (mlp_width, width),
            p + "mlp.c_fc.bias": (mlp_width,),
            p + "mlp.c_proj.weight": (width, mlp_width),
            p + "mlp.c_proj.bias": (width,),
            p + "ln_2.weight": (width,),
            p + "ln_2.bias": (width,),
        })
    return out


def _batch_norm(prefix: str, channels: int) -> dict[str, Shape]:
    return {
        prefix + "weight": (channels,),
        prefix + "bias": (channels,),
        prefix + "running_mean": (channels,),
        prefix + "running_var": (channels,),
        prefix + "num_batches_tracked": (),
    }


def _resnet_shapes(v: ResNetConfig, embed_dim: int) -> dict[str, Shape]:
    w = v.width
    out: dict[str, Shape] = {"visual.conv1.weight": (w // 2, 3, 3, 3)}
    out.update(_batch_norm("visual.bn1.", w // 2))
    out["visual.conv2.weight"] = (w // 2, w // 2, 3, 3)
    out.update(_batch_norm("visual.bn2.", w // 2))
    out["visual.conv3.weight"] = (w, w // 2, 3, 3)
    out.update(_batch_norm("visual.bn3.", w))
    inplanes = w
    for stage, blocks in enumerate(v.layers):
        planes = w * 2**stage
        stride = 1 if stage == 0 else 2
        for b in range(blocks):
            p = f"visual.layer{stage + 1}.{b}."
            out[p + "conv1.weight"] = (planes, inplanes, 1, 1)
            out.update(_batch_norm(p + "bn1.", planes))
            out[p + "conv2.weight"] = (planes, planes, 3, 3)
            out.update(_batch_norm(p + "bn2.", planes))
            out[p + "conv3.weight"] = (planes * 4, planes, 1, 1)
            out.update(_batch_norm(p + "bn3.", planes * 4))
            # Bottleneck expansion 4: only a block that changes shape has a downsample branch.
            if b == 0 and (stride > 1 or inplanes != planes * 4):
                out[p + "downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                out.update(_batch_norm(p + "downsample.1.", planes * 4))
            inplanes = planes * 4
    c = v.output_width
    grid = v.image_size // 32
    out["visual.attnpool.positional_embedding"] = (grid * grid + 1, c)
    for name in ("k_proj", "q_proj", "v_proj"):
        out[f"visual.attnpool.{name}.weight"] = (c, c)
        out[f"visual.attnpool.{name}.bias"] = (c,)
    out["visual.attnpool.c_proj.weight"] = (embed_dim, c)
    out["visual.attnpool.c_proj.bias"] = (embed_dim,)
    return out


def _vit_shapes(v: VisionTransformerConfig, embed_dim: int) -> dict[str, Shape]:
    w = v.width
    out: dict[str, Shape] = {
        "visual.class_embedding": (w,),
        "visual.positional_embedding": (v.grid_size**2 + 1, w),
        "visual.proj": (w, embed_dim),  # [width, embed_dim]: features @ proj
        "visual.conv1.weight": (w, 3, v.patch_size, v.patch_size),
        "visual.ln_pre.weight": (w,),
        "visual.ln_pre.bias": (w,),
    }
    out.update(_transformer_shapes("visual.", w, v.layers, v.mlp_width))
    out.update({"visual.ln_post.weight": (w,), "visual.ln_post.bias": (w,)})
    return out


def expected_shapes(cfg: ClipConfig) -> dict[str, Shape]:
    """Every canonical state-dict key of `cfg`'s architecture with its shape, in state_dict order."""
    t = cfg.text
    out: dict[str, Shape] = {
        "positional_embedding": (t.context_length, t.width),
        "text_projection": (t.width, cfg.embed_dim),  # [width, embed_dim]: features @ text_projection
        "logit_scale": (),
    }
    if isinstance(cfg.vision, ResNetConfig):
        out.update(_resnet_shapes(cfg.vision, cfg.embed_dim))
    else:
        out.update(_vit_shapes(cfg.vision, cfg.embed_dim))
    out.update(_transformer_shapes("", t.width, t.layers, t.mlp_width))
    out["token_embedding.weight"] = (t.vocab_size, t.width)
    out["ln_final.weight"] = (t.width,)
    out["ln_final.bias"] = (t.width,)
    return out


# Sane limits for any config a file declares: far above every CLIP (bigG: width 1664, 48 layers;
# the 18B EVA: 5120, 64), far below sizes that would stall a machine before the first tensor.
_LIMITS = {"width": 2**16, "layers": 4096, "heads": 2**12, "image_size": 2**14, "patch_size": 2**14,
           "context_length": 2**16, "vocab_size": 2**24, "embed_dim": 2**16, "mlp_width": 2**20}


def _sane_int(value: object, name: str, low: int, high: int, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CheckpointError(f"{source}: {name}={str(value)[:40]} is not an int in [{low:,}, {high:,}]; refused")
    return value


def _sane_float(value: object, name: str, low: float, high: float, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise CheckpointError(f"{source}: {name}={str(value)[:40]} is not a number in [{low}, {high}]; refused")
    return float(value)


def check_config_limits(cfg: ClipConfig, source: str = "config") -> None:
    """Raise `CheckpointError` unless every size in `cfg` is a plain int within sane limits and
    every head count divides its width. Cheap: nothing is built or enumerated.

    A config read from a file is untrusted; this runs before it is compared with the file's tensors.
    """
    L = _LIMITS
    v, t = cfg.vision, cfg.text
    _sane_int(cfg.embed_dim, "embed_dim", 1, L["embed_dim"], source)
    if isinstance(v, ResNetConfig):
        layers = v.layers
        if not isinstance(layers, tuple) or len(layers) != 4:
            raise CheckpointError(f"{source}: vision.layers={str(layers)[:40]} is not 4 stage depths; refused")
        for i, n in enumerate(layers):
            _sane_int(n, f"vision.layers[{i}]", 1, L["layers"], source)
        _sane_int(v.width, "vision.width", 2, L["width"], source)
        _sane_int(v.heads, "vision.heads", 1, L["heads"], source)
        _sane_int(v.image_size, "vision.image_size", 32, L["image_size"], source)
        if (v.width * 32) % v.heads:
            raise CheckpointError(f"{source}: vision.heads={v.heads} does not divide the attention-pool width {v.width * 32}")
    elif isinstance(v, VisionTransformerConfig):
        _sane_int(v.layers, "vision.layers", 1, L["layers"], source)
        _sane_int(v.width, "vision.width", 1, L["width"], source)
        _sane_int(v.heads, "vision.heads", 1, L["heads"], source)
        _sane_int(v.image_size, "vision.image_size", 1, L["image_size"], source)
        _sane_int(v.patch_size, "vision.patch_size", 1, v.image_size, source)
        _sane_float(v.mlp_ratio, "vision.mlp_ratio", 0.0, 64.0, source)
        _sane_int(v.mlp_width, "vision MLP width", 1, L["mlp_width"], source)
        if v.width % v.heads:
            raise CheckpointError(f"{source}: vision.heads={v.heads} does not divide vision.width={v.width}")
    else:
        raise CheckpointError(f"{source}: vision is a {type(v).__name__}, not a ViT or ResNet config")
    if not isinstance(t, TextConfig):
        raise CheckpointError(f"{source}: text is a {type(t).__name__}, not a text config")
    _sane_int(t.layers, "text.layers", 1, L["layers"], source)
    _sane_int(t.width, "text.width", 1, L["width"], source)
    _sane_int(t.heads, "text.heads", 1, L["heads"], source)
    _sane_int(t.context_length, "text.context_length", 2, L["context_length"], source)
    _sane_int(t.vocab_size, "text.vocab_size", 3, L["vocab_size"], source)
    _sane_float(t.mlp_ratio, "text.mlp_ratio", 0.0, 64.0, source)
    _sane_int(t.mlp_width, "text MLP width", 1, L["mlp_width"], source)
    for name in ("sot_token_id", "eot_token_id", "pad_token_id"):
        _sane_int(getattr(t, name), f"text.{name}", 0, t.vocab_size - 1, source)
    if t.width % t.heads:
        raise CheckpointError(f"{source}: text.heads={t.heads} does not divide text.width={t.width}")
    _sane_float(cfg.layer_norm_eps, "layer_norm_eps", 1e-12, 1.0, source)
    _sane_float(cfg.init_logit_scale, "init_logit_scale", -100.0, 100.0, source)
    _sane_float(cfg.max_logit_scale, "max_logit_scale", 1e-6, 1e6, source)


def _layer_indices(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    """How many distinct block numbers appear under `prefix` (no order check)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state_dict if (m := pattern.match(k))})


def _check_depths(state_dict: dict[str, torch.Tensor], cfg: ClipConfig) -> None:
    """Compare the config's layer counts with the blocks in the state dict before listing every key
    of every layer: a config claiming a million layers is refused here, in microseconds."""
    towers: list[tuple[str, int, str]] = [("text", cfg.text.layers, "transformer.resblocks.")]
    if isinstance(cfg.vision, ResNetConfig):
        towers += [(f"vision stage {s}", n, f"visual.layer{s}.") for s, n in enumerate(cfg.vision.layers, start=1)]
    else:
        towers.append(("vision", cfg.vision.layers, "visual.transformer.resblocks."))
    for tower, declared, prefix in towers:
        found = _layer_indices(state_dict, prefix)
        if declared != found:
            raise CheckpointError(
                f"state dict does not match the config: {describe(cfg)} has {declared:,} {tower} layers "
                f"but the state dict has {found:,} ('{prefix}N.')"
            )


def check_config(state_dict: dict[str, torch.Tensor], cfg: ClipConfig) -> None:
    """Raise `CheckpointError` unless the canonical `state_dict` has exactly `cfg`'s keys and shapes.

    The config's sizes and depths are checked first (`check_config_limits`, then layer counts
    against the state dict), so the key list is only built for a config no bigger than the file.
    """
    check_config_limits(cfg)
    _check_depths(state_dict, cfg)
    expected = expected_shapes(cfg)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    problems = []
    for key, shape in expected.items():
        if key in state_dict and tuple(state_dict[key].shape) != shape:
            problems.append(
                f"first shape mismatch: '{key}' has shape {tuple(state_dict[key].shape)} in the checkpoint "
                f"but {shape} in {describe(cfg)}"
            )
            break
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:20]}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected[:20]}")
    if problems:
        raise CheckpointError("state dict does not match the config: " + "; ".join(problems))


def _require(state_dict: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state_dict:
        raise CheckpointError(f"cannot infer the config: canonical key '{key}' is missing")
    return state_dict[key]


def _count_layers(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    if indices != set(range(len(indices))):
        raise CheckpointError(f"layers under '{prefix}' are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def mlp_ratio_for(width: int, mlp_width: int) -> float:
    """A ratio r with int(width * r) == mlp_width, preferring open_clip's 4-decimal spelling."""
    exact = mlp_width / width
    for r in (round(exact, 4), round(exact, 6), exact, math.nextafter(exact, math.inf)):
        if int(width * r) == mlp_width:
            return r
    raise CheckpointError(f"no mlp_ratio reproduces MLP width {mlp_width} from width {width}")


def _grid(n_positions: int, key: str) -> int:
    grid = math.isqrt(n_positions - 1)
    if grid * grid + 1 != n_positions:
        raise CheckpointError(f"'{key}' has {n_positions} positions, not a square grid plus one")
    return grid


def infer_config(state_dict: dict[str, torch.Tensor], activation: Activation = "quick_gelu") -> ClipConfig:
    """Read a `ClipConfig` off the shapes of a canonical state dict, as OpenAI's build_model does.

    Heads are not stored in any shape: this follows OpenAI's rule (width // 64 for transformers,
    width * 32 // 64 for the ResNet attention pool). Activation and LayerNorm eps are not stored
    either; pass `activation` ("gelu" for most LAION/open_clip weights) and adjust eps with
    `cfg.replace(...)` if needed. Special tokens follow CLIP's BPE vocabulary, whose last two ids are
    <|startoftext|> and <|endoftext|>.
    """
    vision: Union[VisionTransformerConfig, ResNetConfig]
    if "visual.class_embedding" in state_dict or "visual.proj" in state_dict:
        conv1 = _require(state_dict, "visual.conv1.weight")
        width, patch = conv1.shape[0], conv1.shape[-1]
        grid = _grid(_require(state_dict, "visual.positional_embedding").shape[0], "visual.positional_embedding")
        mlp = _require(state_dict, "visual.transformer.resblocks.0.mlp.c_fc.weight").shape[0]
        vision = VisionTransformerConfig(
            image_size=patch * grid, patch_size=patch, width=width,
            layers=_count_layers(state_dict, "visual.transformer.resblocks."),
            heads=max(width // 64, 1), mlp_ratio=mlp_ratio_for(width, mlp),
        )
    elif "visual.attnpool.positional_embedding" in state_dict:
        width = _require(state_dict, "visual.layer1.0.conv1.weight").shape[0]
        layers = tuple(_count_layers(state_dict, f"visual.layer{s}.") for s in (1, 2, 3, 4))
        grid = _grid(state_dict["visual.attnpool.positional_embedding"].shape[0], "visual.attnpool.positional_embedding")
        vision = ResNetConfig(image_size=grid * 32, layers=layers, width=width, heads=width * 32 // 64)
    else:
        raise CheckpointError(
            "cannot infer the config: neither a ViT ('visual.class_embedding') nor a ModifiedResNet "
            "('visual.attnpool.positional_embedding') image tower in the canonical state dict"
        )
    text_width = _require(state_dict, "ln_final.weight").shape[0]
    vocab = _require(state_dict, "token_embedding.weight").shape[0]
    text_mlp = _require(state_dict, "transformer.resblocks.0.mlp.c_fc.weight").shape[0]
    text = TextConfig(
        context_length=_require(state_dict, "positional_embedding").shape[0],
        vocab_size=vocab,
        width=text_width,
        heads=max(text_width // 64, 1),
        layers=_count_layers(state_dict, "transformer.resblocks."),
        mlp_ratio=mlp_ratio_for(text_width, text_mlp),
        sot_token_id=vocab - 2,
        eot_token_id=vocab - 1,
    )
    embed_dim = _require(state_dict, "text_projection").shape[1]
    return ClipConfig(embed_dim=embed_dim, vision=vision, text=text, activation=activation)
