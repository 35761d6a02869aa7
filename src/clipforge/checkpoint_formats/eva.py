"""EVA02-CLIP (family "eva_clip"): open_clip's EVA02-* files onto the canonical layout, and back.

open_clip builds these models as `CustomTextCLIP`: the image tower is timm's `Eva` under
`visual.trunk.` (open_clip adds no head of its own: `timm_proj` is null, timm's classifier head is
the projection), the text tower is open_clip's standard one under `text.`.

Canonical layout: the text tower and `logit_scale` exactly as CLIP's (OpenAI's top-level names);
the image tower under `visual.` with timm's names, except that the patch-embedding conv is
`visual.patch_embed` (timm: `patch_embed.proj`). Both maps are renames only.

The architecture cannot all be read off shapes (heads, the rotary grid), so an open_clip file's
`open_clip_config.json` is read through `TIMM_EVA02_ARCHITECTURES` (timm's `eva02_*_clip_*`
arguments); a bare weights file gets `infer_eva_config`'s defaults (64-wide heads, the 16x16
rotary grid every EVA02-CLIP release uses).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from ..configs import EvaClipConfig, EvaVisionConfig
from .errors import CheckpointError
from .infer_config import _sane_float, _sane_int, mlp_ratio_for
from .open_clip_text import (
    check_text_limits,
    compare_shapes,
    infer_text_config,
    layer_count,
    require,
    text_config_from_open_clip,
    text_shapes,
)
from .open_clip import open_clip_to_canonical as clip_open_clip_to_canonical
from .open_clip import strip_wrapper_prefix

StateDict = dict[str, torch.Tensor]
Shape = tuple[int, ...]

# timm model name -> EvaVisionConfig fields (timm/models/eva.py, `eva02_*_clip_*`). EVA02-E (post-norm,
# no RoPE) and EVA01 (fused qkv) are other architectures: not here, refused by name.
TIMM_EVA02_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "eva02_base_patch16_clip_224": dict(image_size=224, patch_size=16, width=768, layers=12, heads=12, mlp_width=2048),
    "eva02_large_patch14_clip_224": dict(image_size=224, patch_size=14, width=1024, layers=24, heads=16, mlp_width=2730),
    "eva02_large_patch14_clip_336": dict(image_size=336, patch_size=14, width=1024, layers=24, heads=16, mlp_width=2730),
}

_TEXT_TOP = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


# ---- key maps --------------------------------------------------------------------------------------


def open_clip_to_canonical(state_dict: StateDict) -> StateDict:
    """open_clip's CustomTextCLIP keys -> canonical (an unknown key passes through, and check_config names it)."""
    out: StateDict = {}
    for key, value in _clip_text_to_canonical(state_dict).items():
        if key.startswith("visual.trunk.patch_embed.proj."):
            key = "visual.patch_embed." + key[len("visual.trunk.patch_embed.proj."):]
        elif key.startswith("visual.trunk."):
            key = "visual." + key[len("visual.trunk."):]
        elif key.startswith("visual.head."):
            raise CheckpointError(f"'{key}': an open_clip projection head after the timm tower (timm_proj set); "
                                  "EVA02-CLIP uses timm's own head, clipforge reads no other")
        out[key] = value
    return out


def _clip_text_to_canonical(state_dict: StateDict) -> StateDict:
    return clip_open_clip_to_canonical(state_dict)  # `text.` nesting and the TorchScript attn_mask, as CLIP's


def canonical_to_open_clip(state_dict: StateDict) -> StateDict:
    """canonical -> the state dict open_clip's EVA02 CustomTextCLIP loads (strict)."""
    out: StateDict = {}
    for key, value in state_dict.items():
        if key.startswith("visual.patch_embed."):
            key = "visual.trunk.patch_embed.proj." + key[len("visual.patch_embed."):]
        elif key.startswith("visual."):
            key = "visual.trunk." + key[len("visual."):]
        elif key.startswith(_TEXT_TOP):
            key = "text." + key
        out[key] = value
    return out


def identity(state_dict: StateDict) -> StateDict:
    return dict(state_dict)


def detect_format(keys: list[str]) -> Optional[str]:
    """"open_clip" for timm EVA towers under `visual.trunk.`, "clipforge" for the canonical names."""
    bare = {strip_wrapper_prefix(k) for k in keys}
    if "visual.trunk.blocks.0.mlp.fc1_g.weight" in bare and "visual.trunk.blocks.0.attn.q_proj.weight" in bare:
        return "open_clip"
    if "visual.blocks.0.mlp.fc1_g.weight" in bare and "visual.blocks.0.attn.q_proj.weight" in bare:
        return "clipforge"
    return None


# ---- shapes and configs ----------------------------------------------------------------------------


def describe(cfg: EvaClipConfig) -> str:
    v, t = cfg.vision, cfg.text
    return (f"EVA02-CLIP (vision {v.layers}x{v.width}, patch {v.patch_size}, {v.image_size}px; "
            f"text {t.layers}x{t.width}; embed {cfg.embed_dim})")


def vision_shapes(v: EvaVisionConfig, embed_dim: int) -> dict[str, Shape]:
    w, h = v.width, v.mlp_width
    out: dict[str, Shape] = {
        "visual.cls_token": (1, 1, w),
        "visual.pos_embed": (1, v.grid_size**2 + 1, w),
        "visual.patch_embed.weight": (w, 3, v.patch_size, v.patch_size),
        "visual.patch_embed.bias": (w,),
    }
    for i in range(v.layers):
        p = f"visual.blocks.{i}."
        out.update({
            p + "norm1.weight": (w,), p + "norm1.bias": (w,),
            p + "attn.q_proj.weight": (w, w), p + "attn.q_proj.bias": (w,),
            p + "attn.k_proj.weight": (w, w),
            p + "attn.v_proj.weight": (w, w), p + "attn.v_proj.bias": (w,),
            p + "attn.norm.weight": (w,), p + "attn.norm.bias": (w,),
            p + "attn.proj.weight": (w, w), p + "attn.proj.bias": (w,),
            p + "norm2.weight": (w,), p + "norm2.bias": (w,),
            p + "mlp.fc1_g.weight": (h, w), p + "mlp.fc1_g.bias": (h,),
            p + "mlp.fc1_x.weight": (h, w), p + "mlp.fc1_x.bias": (h,),
            p + "mlp.norm.weight": (h,), p + "mlp.norm.bias": (h,),
            p + "mlp.fc2.weight": (w, h), p + "mlp.fc2.bias": (w,),
        })
    out.update({"visual.norm.weight": (w,), "visual.norm.bias": (w,),
                "visual.head.weight": (embed_dim, w), "visual.head.bias": (embed_dim,)})
    return out


def expected_shapes(cfg: EvaClipConfig) -> dict[str, Shape]:
    return {**vision_shapes(cfg.vision, cfg.embed_dim), **text_shapes(cfg.text, cfg.embed_dim)}


def check_config_limits(cfg: EvaClipConfig, source: str = "config") -> None:
    """Every size a sane int (cheap; before any key list is built), heads dividing widths."""
    v = cfg.vision
    if not isinstance(v, EvaVisionConfig):
        raise CheckpointError(f"{source}: vision is a {type(v).__name__}, not an EVA vision config")
    _sane_int(cfg.embed_dim, "embed_dim", 1, 2**16, source)
    for name, low, high in (("layers", 1, 4096), ("width", 1, 2**16), ("heads", 1, 2**12), ("image_size", 1, 2**14),
                            ("mlp_width", 1, 2**20), ("rope_ref_grid", 1, 2**14)):
        _sane_int(getattr(v, name), f"vision.{name}", low, high, source)
    _sane_int(v.patch_size, "vision.patch_size", 1, v.image_size, source)
    if v.width % v.heads or (v.width // v.heads) % 4:
        raise CheckpointError(f"{source}: vision.heads={v.heads} must divide vision.width={v.width} into head "
                              "widths divisible by 4 (2D rotary embedding)")
    _sane_float(v.rope_temperature, "vision.rope_temperature", 1.0, 1e9, source)
    _sane_float(v.layer_norm_eps, "vision.layer_norm_eps", 1e-12, 1.0, source)
    check_text_limits(cfg.text, source)
    _sane_float(cfg.layer_norm_eps, "layer_norm_eps", 1e-12, 1.0, source)
    _sane_float(cfg.init_logit_scale, "init_logit_scale", -100.0, 100.0, source)


def check_config(state_dict: StateDict, cfg: EvaClipConfig) -> None:
    check_config_limits(cfg)
    for tower, declared, prefix in (("vision", cfg.vision.layers, "visual.blocks."),
                                    ("text", cfg.text.layers, "transformer.resblocks.")):
        found = layer_count(state_dict, prefix)
        if found != declared:
            raise CheckpointError(f"state dict does not match the config: {describe(cfg)} has {declared:,} {tower} "
                                  f"layers but the state dict has {found:,} ('{prefix}N.')")
    compare_shapes(state_dict, expected_shapes(cfg), describe(cfg))


def infer_eva_config(state_dict: StateDict, activation: str = "gelu") -> EvaClipConfig:
    """An EvaClipConfig off canonical shapes. Not in any shape: heads (width // 64, as every EVA02-CLIP
    tower has), the rotary grid (16x16, idem), activation (GELU, open_clip's for EVA02)."""
    conv = require(state_dict, "visual.patch_embed.weight")
    width, _, patch, _ = conv.shape
    positions = require(state_dict, "visual.pos_embed").shape[1]
    grid = math.isqrt(positions - 1)
    if grid * grid + 1 != positions:
        raise CheckpointError(f"'visual.pos_embed' has {positions} positions, not a square grid plus one")
    vision = EvaVisionConfig(
        image_size=grid * patch, patch_size=patch, width=width, layers=layer_count(state_dict, "visual.blocks."),
        heads=max(1, width // 64), mlp_width=require(state_dict, "visual.blocks.0.mlp.fc1_g.weight").shape[0],
    )
    embed_dim = require(state_dict, "visual.head.weight").shape[0]
    return EvaClipConfig(embed_dim=embed_dim, vision=vision, text=infer_text_config(state_dict),
                         activation=activation)  # type: ignore[arg-type]


# ---- open_clip model configs -----------------------------------------------------------------------

_NEUTRAL_VISION = {"image_size", "timm_model_name", "timm_model_pretrained", "timm_drop", "timm_drop_path",
                   "patch_dropout", "output_tokens"}


def is_open_clip_config(model_cfg: dict[str, Any]) -> bool:
    name = model_cfg.get("vision_cfg", {}).get("timm_model_name") if isinstance(model_cfg.get("vision_cfg"), dict) else None
    return isinstance(name, str) and name.startswith("eva02_")


def open_clip_config_to_eva_config(model_cfg: dict[str, Any]) -> EvaClipConfig:
    """An EvaClipConfig from open_clip's EVA02-* model config (`open_clip.get_model_config("EVA02-B-16")`)."""
    vcfg, tcfg = dict(model_cfg.get("vision_cfg", {})), dict(model_cfg.get("text_cfg", {}))
    name = vcfg.get("timm_model_name")
    if name not in TIMM_EVA02_ARCHITECTURES:
        raise CheckpointError(f"timm tower {str(name)[:60]!r} is not one clipforge knows; it reads "
                              f"{sorted(TIMM_EVA02_ARCHITECTURES)}")
    odd = [k for k in model_cfg if k not in ("embed_dim", "vision_cfg", "text_cfg", "custom_text", "quick_gelu")]
    if vcfg.get("timm_pool", "token") != "token":
        odd.append(f"vision_cfg.timm_pool={vcfg['timm_pool']!r}")
    if vcfg.get("timm_proj") not in (None, "none", ""):
        odd.append(f"vision_cfg.timm_proj={vcfg['timm_proj']!r}")
    odd += [f"vision_cfg.{k}" for k, v in vcfg.items()
            if k not in _NEUTRAL_VISION | {"timm_pool", "timm_proj"} and v not in (None, False)]
    if odd:
        raise CheckpointError(f"open_clip config fields clipforge does not support for EVA02: {sorted(odd)}")
    arch = dict(TIMM_EVA02_ARCHITECTURES[name])
    image_size = vcfg.get("image_size", arch["image_size"])
    if image_size != arch["image_size"]:
        raise CheckpointError(f"image_size {image_size} differs from {name}'s {arch['image_size']}")
    return EvaClipConfig(
        embed_dim=model_cfg["embed_dim"], vision=EvaVisionConfig(**arch), text=text_config_from_open_clip(tcfg),
        activation="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
    )


def eva_config_to_open_clip_config(cfg: EvaClipConfig) -> dict[str, Any]:
    """The open_clip model config of `cfg`: only the timm towers open_clip can name (TIMM_EVA02_ARCHITECTURES)."""
    fields = {k: getattr(cfg.vision, k) for k in ("image_size", "patch_size", "width", "layers", "heads", "mlp_width")}
    defaults = EvaVisionConfig()
    names = [n for n, a in TIMM_EVA02_ARCHITECTURES.items() if a == fields
             and (cfg.vision.rope_ref_grid, cfg.vision.rope_temperature, cfg.vision.layer_norm_eps)
             == (defaults.rope_ref_grid, defaults.rope_temperature, defaults.layer_norm_eps)]
    if not names:
        raise CheckpointError(f"open_clip names no timm EVA02 tower of this shape ({describe(cfg)}): write 'clipforge'")
    t = cfg.text
    if cfg.layer_norm_eps != 1e-5 or t.eot_token_id != t.vocab_size - 1:
        raise CheckpointError("open_clip's text tower uses LayerNorm eps 1e-5 and pools at the largest token id")
    return {
        "embed_dim": cfg.embed_dim, "quick_gelu": cfg.activation == "quick_gelu",
        "vision_cfg": {"image_size": cfg.vision.image_size, "timm_model_name": names[0], "timm_model_pretrained": False,
                       "timm_pool": "token", "timm_proj": None},
        "text_cfg": {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width,
                     "heads": t.heads, "layers": t.layers, "mlp_ratio": mlp_ratio_for(t.width, t.mlp_width)},
        "custom_text": True,
    }
