"""MobileCLIP (family "mobileclip"): open_clip's MobileCLIP-B / MobileCLIP2-B files onto the
canonical layout, and back.

open_clip builds these as `CustomTextCLIP`: timm's `vit_base_mci_224` under `visual.trunk.` (its
classifier head is the projection: `timm_proj` is null), open_clip's text tower under `text.`.

Canonical layout: the text tower and `logit_scale` as CLIP's (OpenAI's top-level names); the image
tower under `visual.`: `stem.{0,1}.conv/bn` and `stem.2` (the conv stem), `cls_token`, `pos_embed`,
`transformer.resblocks.N.*` with OpenAI's block names (timm's fused qkv is `in_proj_weight`),
`norm`, `head`. The maps are renames only (table-driven, `_VISION_RENAMES`).

The FastViT-MCi towers of MobileCLIP-S0..S4 / MobileCLIP2-S* are not implemented: their open_clip
configs are refused by name.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

import torch

from ..configs import MobileClipConfig, MobileClipVisionConfig
from .errors import CheckpointError
from .eva import (
    check_text_limits,
    compare_shapes,
    infer_text_config,
    layer_count,
    text_config_from_open_clip,
    text_shapes,
)
from .eva import _NEUTRAL_TEXT
from .infer_config import _sane_float, _sane_int, mlp_ratio_for
from .open_clip import open_clip_to_canonical as clip_open_clip_to_canonical
from .open_clip import strip_wrapper_prefix

StateDict = dict[str, torch.Tensor]
Shape = tuple[int, ...]

# timm model name -> MobileClipVisionConfig fields (timm/models/vision_transformer_hybrid.py).
TIMM_MOBILECLIP_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "vit_base_mci_224": dict(image_size=224, width=768, layers=12, heads=12, mlp_width=3072, stem_width=192),
}

# (open_clip name, canonical name) for the image tower, both under `visual.`; `N` is a block number.
_VISION_RENAMES: list[tuple[str, str]] = [
    ("trunk.patch_embed.backbone.0.conv.", "stem.0.conv."),
    ("trunk.patch_embed.backbone.0.bn.", "stem.0.bn."),
    ("trunk.patch_embed.backbone.1.conv.", "stem.1.conv."),
    ("trunk.patch_embed.backbone.1.bn.", "stem.1.bn."),
    ("trunk.patch_embed.backbone.2.conv.", "stem.2."),
    ("trunk.cls_token", "cls_token"),
    ("trunk.pos_embed", "pos_embed"),
    ("trunk.blocks.N.norm1.", "transformer.resblocks.N.ln_1."),
    ("trunk.blocks.N.attn.qkv.weight", "transformer.resblocks.N.attn.in_proj_weight"),
    ("trunk.blocks.N.attn.qkv.bias", "transformer.resblocks.N.attn.in_proj_bias"),
    ("trunk.blocks.N.attn.proj.", "transformer.resblocks.N.attn.out_proj."),
    ("trunk.blocks.N.norm2.", "transformer.resblocks.N.ln_2."),
    ("trunk.blocks.N.mlp.fc1.", "transformer.resblocks.N.mlp.c_fc."),
    ("trunk.blocks.N.mlp.fc2.", "transformer.resblocks.N.mlp.c_proj."),
    ("trunk.norm.", "norm."),
    ("trunk.head.", "head."),
]
_TEXT_TOP = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def _rename(key: str, table: list[tuple[str, str]]) -> Optional[str]:
    """`key` (without `visual.`) renamed by the first matching (source, target) pair, or None."""
    for source, target in table:
        if "N" in source:
            head, tail = source.split("N", 1)
            m = re.match(re.escape(head) + r"(\d+)" + re.escape(tail), key)
            if m:
                return target.replace("N", m.group(1), 1) + key[m.end():]
        elif key.startswith(source):
            return target + key[len(source):]
    return None


def open_clip_to_canonical(state_dict: StateDict) -> StateDict:
    out: StateDict = {}
    for key, value in clip_open_clip_to_canonical(state_dict).items():
        if key.startswith("visual."):
            renamed = _rename(key[len("visual."):], _VISION_RENAMES)
            if renamed is None:
                raise CheckpointError(f"'{key}': not a key of open_clip's MobileCLIP-B image tower")
            key = "visual." + renamed
        out[key] = value
    return out


def canonical_to_open_clip(state_dict: StateDict) -> StateDict:
    inverse = [(target, source) for source, target in _VISION_RENAMES]
    out: StateDict = {}
    for key, value in state_dict.items():
        if key.startswith("visual."):
            renamed = _rename(key[len("visual."):], inverse)
            if renamed is None:
                raise CheckpointError(f"'{key}': not a canonical MobileCLIP image-tower key")
            key = "visual." + renamed
        elif key.startswith(_TEXT_TOP):
            key = "text." + key
        out[key] = value
    return out


def identity(state_dict: StateDict) -> StateDict:
    return dict(state_dict)


def detect_format(keys: list[str]) -> Optional[str]:
    bare = {strip_wrapper_prefix(k) for k in keys}
    if "visual.trunk.patch_embed.backbone.0.conv.weight" in bare and "visual.trunk.blocks.0.attn.qkv.weight" in bare:
        return "open_clip"
    if "visual.stem.0.conv.weight" in bare and "visual.transformer.resblocks.0.attn.in_proj_weight" in bare:
        return "clipforge"
    return None


# ---- shapes and configs ----------------------------------------------------------------------------


def describe(cfg: MobileClipConfig) -> str:
    v, t = cfg.vision, cfg.text
    return (f"MobileCLIP (conv-stem ViT {v.layers}x{v.width}, {v.image_size}px; text {t.layers}x{t.width}"
            f"{'' if cfg.text_causal else ', bidirectional'}; embed {cfg.embed_dim})")


def _batch_norm(prefix: str, channels: int) -> dict[str, Shape]:
    return {prefix + "weight": (channels,), prefix + "bias": (channels,), prefix + "running_mean": (channels,),
            prefix + "running_var": (channels,), prefix + "num_batches_tracked": ()}


def vision_shapes(v: MobileClipVisionConfig, embed_dim: int) -> dict[str, Shape]:
    w, s = v.width, v.stem_width
    out: dict[str, Shape] = {"visual.cls_token": (1, 1, w), "visual.pos_embed": (1, v.grid_size**2, w)}
    out["visual.stem.0.conv.weight"] = (s, 3, 4, 4)
    out.update(_batch_norm("visual.stem.0.bn.", s))
    out["visual.stem.1.conv.weight"] = (s, s, 2, 2)
    out.update(_batch_norm("visual.stem.1.bn.", s))
    out.update({"visual.stem.2.weight": (w, s, 2, 2), "visual.stem.2.bias": (w,)})
    for i in range(v.layers):
        p = f"visual.transformer.resblocks.{i}."
        out.update({
            p + "ln_1.weight": (w,), p + "ln_1.bias": (w,),
            p + "attn.in_proj_weight": (3 * w, w), p + "attn.in_proj_bias": (3 * w,),
            p + "attn.out_proj.weight": (w, w), p + "attn.out_proj.bias": (w,),
            p + "ln_2.weight": (w,), p + "ln_2.bias": (w,),
            p + "mlp.c_fc.weight": (v.mlp_width, w), p + "mlp.c_fc.bias": (v.mlp_width,),
            p + "mlp.c_proj.weight": (w, v.mlp_width), p + "mlp.c_proj.bias": (w,),
        })
    out.update({"visual.norm.weight": (w,), "visual.norm.bias": (w,),
                "visual.head.weight": (embed_dim, w), "visual.head.bias": (embed_dim,)})
    return out


def expected_shapes(cfg: MobileClipConfig) -> dict[str, Shape]:
    return {**vision_shapes(cfg.vision, cfg.embed_dim), **text_shapes(cfg.text, cfg.embed_dim)}


def check_config_limits(cfg: MobileClipConfig, source: str = "config") -> None:
    v = cfg.vision
    if not isinstance(v, MobileClipVisionConfig):
        raise CheckpointError(f"{source}: vision is a {type(v).__name__}, not a MobileCLIP vision config")
    _sane_int(cfg.embed_dim, "embed_dim", 1, 2**16, source)
    for name, low, high in (("layers", 1, 4096), ("width", 1, 2**16), ("heads", 1, 2**12), ("mlp_width", 1, 2**20),
                            ("stem_width", 1, 2**16), ("image_size", v.patch_size, 2**14)):
        _sane_int(getattr(v, name), f"vision.{name}", low, high, source)
    if v.width % v.heads:
        raise CheckpointError(f"{source}: vision.heads={v.heads} does not divide vision.width={v.width}")
    _sane_float(v.layer_norm_eps, "vision.layer_norm_eps", 1e-12, 1.0, source)
    _sane_float(v.batch_norm_eps, "vision.batch_norm_eps", 1e-12, 1.0, source)
    if not isinstance(cfg.text_causal, bool):
        raise CheckpointError(f"{source}: text_causal must be true or false")
    check_text_limits(cfg.text, source)
    _sane_float(cfg.layer_norm_eps, "layer_norm_eps", 1e-12, 1.0, source)
    _sane_float(cfg.init_logit_scale, "init_logit_scale", -100.0, 100.0, source)


def check_config(state_dict: StateDict, cfg: MobileClipConfig) -> None:
    check_config_limits(cfg)
    for tower, declared, prefix in (("vision", cfg.vision.layers, "visual.transformer.resblocks."),
                                    ("text", cfg.text.layers, "transformer.resblocks.")):
        found = layer_count(state_dict, prefix)
        if found != declared:
            raise CheckpointError(f"state dict does not match the config: {describe(cfg)} has {declared:,} {tower} "
                                  f"layers but the state dict has {found:,} ('{prefix}N.')")
    compare_shapes(state_dict, expected_shapes(cfg), describe(cfg))


def infer_mobileclip_config(state_dict: StateDict, activation: str = "gelu") -> MobileClipConfig:
    """A MobileClipConfig off canonical shapes. Not in any shape: heads (width // 64), whether the text
    tower is causal (assumed: yes, as MobileCLIP-B's), the activation (GELU)."""
    for key in ("visual.stem.2.weight", "visual.pos_embed", "visual.head.weight",
                "visual.transformer.resblocks.0.mlp.c_fc.weight"):
        if key not in state_dict:
            raise CheckpointError(f"cannot infer the config: canonical key '{key}' is missing")
    width, stem = state_dict["visual.stem.2.weight"].shape[:2]
    positions = state_dict["visual.pos_embed"].shape[1]
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise CheckpointError(f"'visual.pos_embed' has {positions} positions, not a square grid")
    vision = MobileClipVisionConfig(
        image_size=grid * MobileClipVisionConfig.patch_size, width=width, stem_width=stem,
        layers=layer_count(state_dict, "visual.transformer.resblocks."), heads=max(1, width // 64),
        mlp_width=state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
    )
    return MobileClipConfig(embed_dim=state_dict["visual.head.weight"].shape[0], vision=vision,
                            text=infer_text_config(state_dict), activation=activation)  # type: ignore[arg-type]


def is_open_clip_config(model_cfg: dict[str, Any]) -> bool:
    vcfg = model_cfg.get("vision_cfg")
    name = vcfg.get("timm_model_name") if isinstance(vcfg, dict) else None
    return isinstance(name, str) and (name in TIMM_MOBILECLIP_ARCHITECTURES or name.startswith("fastvit_mci"))


_NEUTRAL_VISION = {"image_size", "timm_model_name", "timm_model_pretrained", "timm_drop", "timm_drop_path",
                   "patch_dropout", "output_tokens", "timm_pool", "timm_proj"}


def open_clip_config_to_mobileclip_config(model_cfg: dict[str, Any]) -> MobileClipConfig:
    """A MobileClipConfig from open_clip's MobileCLIP-B / MobileCLIP2-B model config."""
    vcfg, tcfg = dict(model_cfg.get("vision_cfg", {})), dict(model_cfg.get("text_cfg", {}))
    name = vcfg.get("timm_model_name")
    if name not in TIMM_MOBILECLIP_ARCHITECTURES:
        raise CheckpointError(f"timm tower {str(name)[:60]!r} (MobileCLIP's FastViT-MCi) is not implemented; clipforge "
                              f"reads MobileCLIP towers {sorted(TIMM_MOBILECLIP_ARCHITECTURES)} (MobileCLIP-B, MobileCLIP2-B)")
    odd = [k for k in model_cfg if k not in ("embed_dim", "vision_cfg", "text_cfg", "custom_text", "quick_gelu")]
    if vcfg.get("timm_pool", "token") != "token":
        odd.append(f"vision_cfg.timm_pool={vcfg['timm_pool']!r}")
    if vcfg.get("timm_proj") not in (None, "none", ""):
        odd.append(f"vision_cfg.timm_proj={vcfg['timm_proj']!r}")
    odd += [f"vision_cfg.{k}" for k, v in vcfg.items() if k not in _NEUTRAL_VISION and v not in (None, False)]
    if odd:
        raise CheckpointError(f"open_clip config fields clipforge does not support for MobileCLIP: {sorted(odd)}")
    arch = TIMM_MOBILECLIP_ARCHITECTURES[name]
    if vcfg.get("image_size", arch["image_size"]) != arch["image_size"]:
        raise CheckpointError(f"image_size {vcfg.get('image_size')} differs from {name}'s {arch['image_size']}")
    causal = not tcfg.pop("no_causal_mask", False)
    return MobileClipConfig(
        embed_dim=model_cfg["embed_dim"], vision=MobileClipVisionConfig(**arch),
        text=text_config_from_open_clip(tcfg, _NEUTRAL_TEXT), text_causal=causal,
        activation="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
    )


def mobileclip_config_to_open_clip_config(cfg: MobileClipConfig) -> dict[str, Any]:
    fields = {k: getattr(cfg.vision, k) for k in ("image_size", "width", "layers", "heads", "mlp_width", "stem_width")}
    names = [n for n, a in TIMM_MOBILECLIP_ARCHITECTURES.items() if a == fields
             and (cfg.vision.layer_norm_eps, cfg.vision.batch_norm_eps) == (1e-6, 1e-5)]
    if not names:
        raise CheckpointError(f"open_clip names no timm MobileCLIP tower of this shape ({describe(cfg)}): write 'clipforge'")
    t = cfg.text
    if cfg.layer_norm_eps != 1e-5 or t.eot_token_id != t.vocab_size - 1:
        raise CheckpointError("open_clip's text tower uses LayerNorm eps 1e-5 and pools at the largest token id")
    return {
        "embed_dim": cfg.embed_dim, "quick_gelu": cfg.activation == "quick_gelu",
        "vision_cfg": {"image_size": cfg.vision.image_size, "timm_model_name": names[0], "timm_model_pretrained": False,
                       "timm_pool": "token", "timm_proj": None},
        "text_cfg": {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width,
                     "heads": t.heads, "layers": t.layers, "mlp_ratio": mlp_ratio_for(t.width, t.mlp_width),
                     "no_causal_mask": not cfg.text_causal},
        "custom_text": True,
    }
