"""MobileCLIP (family "mobileclip"): open_clip's MobileCLIP / MobileCLIP2 files onto the canonical
layout, and back.

open_clip builds these as `CustomTextCLIP`: a timm image tower under `visual.trunk.` (its classifier
head is the projection: `timm_proj` is null) and open_clip's text tower under `text.`. Two towers:
`vit_base_mci_224` (MobileCLIP-B, MobileCLIP2-B) and `fastvit_mci0..4` (the S models).

Canonical layout: the text tower and `logit_scale` as CLIP's (OpenAI's top-level names). The ViT
tower under `visual.`: `stem.{0,1}.conv/bn` and `stem.2` (the conv stem), `cls_token`, `pos_embed`,
`transformer.resblocks.N.*` with OpenAI's block names (timm's fused qkv is `in_proj_weight`),
`norm`, `head` (table-driven renames, `_VISION_RENAMES`). The FastViT tower under `visual.` with
timm's names (`stem`, `stages`, `final_conv`, `head.fc`), unfolded (training-form branches, as open_clip
saves and runs them). Every map is a rename.

MobileCLIP2-L-14 (a plain timm ViT-L with a bidirectional text tower) is not implemented: refused by name.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

import torch

from ..configs import FastVitMciConfig, MobileClipConfig, MobileClipVisionConfig
from .errors import CheckpointError
from .open_clip_text import (
    NEUTRAL_OPEN_CLIP_TEXT,
    check_text_limits,
    compare_shapes,
    infer_text_config,
    layer_count,
    text_config_from_open_clip,
    text_shapes,
)
from .infer_config import _sane_float, _sane_int, mlp_ratio_for
from .open_clip import open_clip_to_canonical as clip_open_clip_to_canonical
from .open_clip import strip_wrapper_prefix

StateDict = dict[str, torch.Tensor]
Shape = tuple[int, ...]

# timm model name -> MobileClipVisionConfig fields (timm/models/vision_transformer_hybrid.py).
TIMM_MOBILECLIP_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "vit_base_mci_224": dict(image_size=224, width=768, layers=12, heads=12, mlp_width=3072, stem_width=192),
}

_MCI012 = dict(image_size=256, mlp_ratios=(3.0,) * 4, token_mixers=("repmixer",) * 3 + ("attention",),
               downsamples=(False, True, True, True), se_downsamples=(False, False, True, True),
               pos_embs=(False, False, False, True))
_MCI34 = dict(image_size=256, mlp_ratios=(4.0,) * 5, token_mixers=("repmixer",) * 3 + ("attention",) * 2,
              downsamples=(False, True, True, True, True), se_downsamples=(False,) * 5,
              pos_embs=(False, False, False, True, True), attention_norm="layernorm", stem_scale_branch=False)
# timm model name -> FastVitMciConfig fields (timm/models/fastvit.py, `fastvit_mci*`).
TIMM_FASTVIT_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "fastvit_mci0": dict(_MCI012, layers=(2, 6, 10, 2), embed_dims=(64, 128, 256, 512)),
    "fastvit_mci1": dict(_MCI012, layers=(4, 12, 20, 4), embed_dims=(64, 128, 256, 512)),
    "fastvit_mci2": dict(_MCI012, layers=(4, 12, 24, 4), embed_dims=(80, 160, 320, 640)),
    "fastvit_mci3": dict(_MCI34, layers=(2, 12, 24, 4, 2), embed_dims=(96, 192, 384, 768, 1536)),
    "fastvit_mci4": dict(_MCI34, layers=(2, 12, 24, 4, 4), embed_dims=(128, 256, 512, 1024, 2048)),
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


def _is_fastvit(keys: Any, prefix: str) -> bool:
    return any(k.startswith(prefix + "stages.") for k in keys)


def open_clip_to_canonical(state_dict: StateDict) -> StateDict:
    out: StateDict = {}
    fastvit = _is_fastvit(state_dict, "visual.trunk.")
    for key, value in clip_open_clip_to_canonical(state_dict).items():
        if fastvit and key.startswith("visual."):
            if not key.startswith("visual.trunk."):
                raise CheckpointError(f"'{key}': not a key of open_clip's FastViT-MCi image tower")
            key = "visual." + key[len("visual.trunk."):]
        elif key.startswith("visual."):
            renamed = _rename(key[len("visual."):], _VISION_RENAMES)
            if renamed is None:
                raise CheckpointError(f"'{key}': not a key of open_clip's MobileCLIP-B image tower")
            key = "visual." + renamed
        out[key] = value
    return out


def canonical_to_open_clip(state_dict: StateDict) -> StateDict:
    inverse = [(target, source) for source, target in _VISION_RENAMES]
    fastvit = _is_fastvit(state_dict, "visual.")
    out: StateDict = {}
    for key, value in state_dict.items():
        if fastvit and key.startswith("visual."):
            key = "visual.trunk." + key[len("visual."):]
        elif key.startswith("visual."):
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
    if "visual.trunk.stem.0.conv_kxk.0.conv.weight" in bare and "visual.trunk.final_conv.se.fc1.weight" in bare:
        return "open_clip"
    if "visual.stem.0.conv_kxk.0.conv.weight" in bare and "visual.final_conv.se.fc1.weight" in bare:
        return "clipforge"
    return None


# ---- shapes and configs ----------------------------------------------------------------------------


def describe(cfg: MobileClipConfig) -> str:
    v, t = cfg.vision, cfg.text
    tower = (f"FastViT-MCi {'-'.join(map(str, v.layers))} x {'-'.join(map(str, v.embed_dims))}"
             if isinstance(v, FastVitMciConfig) else f"conv-stem ViT {v.layers}x{v.width}")
    return (f"MobileCLIP ({tower}, {v.image_size}px; text {t.layers}x{t.width}"
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


def _make_divisible(v: float, divisor: int) -> int:
    return max(divisor, int(v + divisor / 2) // divisor * divisor)  # timm's, round_limit 0


def _conv_bn(p: str, cin: int, cout: int, k: int, groups: int = 1) -> dict[str, Shape]:
    return {p + "conv.weight": (cout, cin // groups, k, k), **_batch_norm(p + "bn.", cout)}


def _se(p: str, channels: int, reduced: int) -> dict[str, Shape]:
    return {p + "fc1.weight": (reduced, channels, 1, 1), p + "fc1.bias": (reduced,),
            p + "fc2.weight": (channels, reduced, 1, 1), p + "fc2.bias": (channels,)}


def _mobileone(p: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, se: bool = False,
               scale: bool = True, branches: int = 1) -> dict[str, Shape]:
    """models/fastvit_mci.py MobileOneBlock, in its parameter order."""
    out: dict[str, Shape] = {}
    if cin == cout and stride == 1:
        out.update(_batch_norm(p + "identity.", cin))
    for i in range(branches):
        out.update(_conv_bn(f"{p}conv_kxk.{i}.", cin, cout, k, groups))
    if k > 1 and scale:
        out.update(_conv_bn(p + "conv_scale.", cin, cout, 1, groups))
    if se:
        out.update(_se(p + "se.", cout, _make_divisible(cout / 16, 1)))
    return out


def _conv_mlp(p: str, dim: int, hidden: int) -> dict[str, Shape]:
    return {**_conv_bn(p + "conv.", dim, dim, 7, dim), p + "fc1.weight": (hidden, dim, 1, 1), p + "fc1.bias": (hidden,),
            p + "fc2.weight": (dim, hidden, 1, 1), p + "fc2.bias": (dim,)}


def fastvit_shapes(v: FastVitMciConfig, embed_dim: int) -> dict[str, Shape]:
    d0 = v.embed_dims[0]
    out: dict[str, Shape] = {}
    out.update(_mobileone("visual.stem.0.", 3, d0, 3, 2, scale=v.stem_scale_branch))
    out.update(_mobileone("visual.stem.1.", d0, d0, 3, 2, groups=d0, scale=v.stem_scale_branch))
    out.update(_mobileone("visual.stem.2.", d0, d0, 1, scale=v.stem_scale_branch))
    dim_in = d0
    for i, dim in enumerate(v.embed_dims):
        p = f"visual.stages.{i}."
        if v.downsamples[i] or dim_in != dim:
            k = v.down_patch_size
            out.update(_conv_bn(p + "downsample.proj.0.large_conv.", dim_in, dim, k, dim_in))
            out.update(_conv_bn(p + "downsample.proj.0.small_conv.", dim_in, dim, 3, dim_in))
            if v.se_downsamples[i]:
                out.update(_se(p + "downsample.proj.0.se.", dim, _make_divisible(dim * 0.25, 8)))
            out.update(_mobileone(p + "downsample.proj.1.", dim, dim, 1))
        if v.pos_embs[i]:
            out.update({p + "pos_emb.pos_enc.weight": (dim, 1, 7, 7), p + "pos_emb.pos_enc.bias": (dim,)})
        hidden = int(dim * v.mlp_ratios[i])
        for b in range(v.layers[i]):
            q = f"{p}blocks.{b}."
            if v.token_mixers[i] == "repmixer":
                kk = v.repmixer_kernel_size
                out.update(_mobileone(q + "token_mixer.norm.", dim, dim, kk, groups=dim, scale=False, branches=0))
                out.update(_mobileone(q + "token_mixer.mixer.", dim, dim, kk, groups=dim))
                out[q + "token_mixer.layer_scale.gamma"] = (dim, 1, 1)
                out.update(_conv_mlp(q + "mlp.", dim, hidden))
                out[q + "layer_scale.gamma"] = (dim, 1, 1)
            else:
                out.update(_batch_norm(q + "norm.", dim) if v.attention_norm == "batchnorm"
                           else {q + "norm.weight": (dim,), q + "norm.bias": (dim,)})
                out.update({q + "token_mixer.qkv.weight": (3 * dim, dim), q + "token_mixer.proj.weight": (dim, dim),
                            q + "token_mixer.proj.bias": (dim,), q + "layer_scale_1.gamma": (dim, 1, 1)})
                out.update(_conv_mlp(q + "mlp.", dim, hidden))
                out[q + "layer_scale_2.gamma"] = (dim, 1, 1)
        dim_in = dim
    out.update(_mobileone("visual.final_conv.", dim_in, v.num_features, 3, groups=dim_in, se=True))
    out.update({"visual.head.fc.weight": (embed_dim, v.num_features), "visual.head.fc.bias": (embed_dim,)})
    return out


def expected_shapes(cfg: MobileClipConfig) -> dict[str, Shape]:
    v = cfg.vision
    vision = fastvit_shapes(v, cfg.embed_dim) if isinstance(v, FastVitMciConfig) else vision_shapes(v, cfg.embed_dim)
    return {**vision, **text_shapes(cfg.text, cfg.embed_dim)}


def _check_fastvit_limits(v: FastVitMciConfig, source: str) -> None:
    n = len(v.layers) if isinstance(v.layers, tuple) else -1
    if not 1 <= n <= 16 or any(not isinstance(getattr(v, k), tuple) or len(getattr(v, k)) != n for k in (
            "embed_dims", "mlp_ratios", "token_mixers", "downsamples", "se_downsamples", "pos_embs")):
        raise CheckpointError(f"{source}: a FastViT-MCi config needs 1 to 16 stages, every per-stage tuple of one length")
    for i in range(n):
        _sane_int(v.layers[i], f"vision.layers[{i}]", 1, 4096, source)
        _sane_int(v.embed_dims[i], f"vision.embed_dims[{i}]", 1, 2**16, source)
        _sane_float(v.mlp_ratios[i], f"vision.mlp_ratios[{i}]", 0.0, 64.0, source)
        if v.token_mixers[i] not in ("repmixer", "attention"):
            raise CheckpointError(f"{source}: vision.token_mixers[{i}]={str(v.token_mixers[i])[:20]!r} is not "
                                  "'repmixer' or 'attention'")
        if v.token_mixers[i] == "attention" and v.embed_dims[i] % 32:
            raise CheckpointError(f"{source}: attention stage {i} width {v.embed_dims[i]} is not a multiple of 32")
    if v.attention_norm not in ("batchnorm", "layernorm"):
        raise CheckpointError(f"{source}: vision.attention_norm must be 'batchnorm' or 'layernorm'")
    for name in ("image_size", "repmixer_kernel_size", "down_patch_size", "down_stride"):
        _sane_int(getattr(v, name), f"vision.{name}", 1, 2**14, source)
    _sane_float(v.cls_ratio, "vision.cls_ratio", 0.0, 64.0, source)
    _sane_int(v.num_features, "vision.num_features", 1, 2**17, source)


def check_config_limits(cfg: MobileClipConfig, source: str = "config") -> None:
    v = cfg.vision
    if isinstance(v, FastVitMciConfig):
        _check_fastvit_limits(v, source)
        _sane_int(cfg.embed_dim, "embed_dim", 1, 2**16, source)
        check_text_limits(cfg.text, source)
        _sane_float(cfg.layer_norm_eps, "layer_norm_eps", 1e-12, 1.0, source)
        return
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
    if isinstance(cfg.vision, FastVitMciConfig):
        depths = [(f"vision stage {i}", n, f"visual.stages.{i}.blocks.") for i, n in enumerate(cfg.vision.layers)]
    else:
        depths = [("vision", cfg.vision.layers, "visual.transformer.resblocks.")]
    depths.append(("text", cfg.text.layers, "transformer.resblocks."))
    for tower, declared, prefix in depths:
        found = layer_count(state_dict, prefix)
        if found != declared:
            raise CheckpointError(f"state dict does not match the config: {describe(cfg)} has {declared:,} {tower} "
                                  f"layers but the state dict has {found:,} ('{prefix}N.')")
    compare_shapes(state_dict, expected_shapes(cfg), describe(cfg))


def infer_fastvit_config(state_dict: StateDict) -> FastVitMciConfig:
    """A FastViT-MCi config off canonical shapes (stages, widths, mixers, branches). Not in any shape:
    the image size (256, every MobileCLIP-S release's; the tower is convolutional and reads any size
    divisible by 32) and the downsampling conv's activation (on, as in every MCi)."""
    n = len({k.split(".")[2] for k in state_dict if k.startswith("visual.stages.")})
    dims, layers, ratios, mixers, downs, ses, poss = [], [], [], [], [], [], []
    norm = "batchnorm"
    for i in range(n):
        p = f"visual.stages.{i}."
        attention = p + "blocks.0.token_mixer.qkv.weight" in state_dict
        dim = state_dict[p + "blocks.0.mlp.fc2.weight"].shape[0] if p + "blocks.0.mlp.fc2.weight" in state_dict else 0
        if not dim:
            raise CheckpointError(f"cannot infer the config: stage {i} has no blocks")
        dims.append(dim)
        layers.append(layer_count(state_dict, p + "blocks."))
        ratios.append(state_dict[p + "blocks.0.mlp.fc1.weight"].shape[0] / dim)
        mixers.append("attention" if attention else "repmixer")
        downs.append(p + "downsample.proj.0.large_conv.conv.weight" in state_dict)
        ses.append(p + "downsample.proj.0.se.fc1.weight" in state_dict)
        poss.append(p + "pos_emb.pos_enc.weight" in state_dict)
        if attention and p + "blocks.0.norm.running_mean" not in state_dict:
            norm = "layernorm"
    final = state_dict.get("visual.final_conv.conv_kxk.0.conv.weight")
    if final is None:
        raise CheckpointError("cannot infer the config: canonical key 'visual.final_conv.conv_kxk.0.conv.weight' is missing")
    return FastVitMciConfig(
        layers=tuple(layers), embed_dims=tuple(dims), mlp_ratios=tuple(ratios), token_mixers=tuple(mixers),
        downsamples=tuple(downs), se_downsamples=tuple(ses), pos_embs=tuple(poss), attention_norm=norm,
        stem_scale_branch="visual.stem.0.conv_scale.conv.weight" in state_dict, cls_ratio=final.shape[0] / dims[-1],
        down_patch_size=next((v.shape[-1] for k, v in state_dict.items() if k.endswith("large_conv.conv.weight")), 7),
    )


def infer_mobileclip_config(state_dict: StateDict, activation: str = "gelu") -> MobileClipConfig:
    """A MobileClipConfig off canonical shapes. Not in any shape: heads (width // 64), whether the text
    tower is causal (assumed: yes, as MobileCLIP-B's), the activation (GELU); for FastViT, see
    `infer_fastvit_config`."""
    if _is_fastvit(state_dict, "visual."):
        return MobileClipConfig(embed_dim=state_dict["visual.head.fc.weight"].shape[0],
                                vision=infer_fastvit_config(state_dict), text=infer_text_config(state_dict),
                                activation=activation)  # type: ignore[arg-type]
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


def _fastvit_from_open_clip(name: str, vcfg: dict[str, Any], tcfg: dict[str, Any], model_cfg: dict[str, Any]) -> MobileClipConfig:
    if name not in TIMM_FASTVIT_ARCHITECTURES:
        raise CheckpointError(f"timm tower {name[:60]!r} is not one clipforge knows; it reads {sorted(TIMM_FASTVIT_ARCHITECTURES)}")
    odd = [k for k in model_cfg if k not in ("embed_dim", "vision_cfg", "text_cfg", "custom_text", "quick_gelu")]
    if vcfg.get("timm_pool", "avg") != "avg":
        odd.append(f"vision_cfg.timm_pool={vcfg['timm_pool']!r}")
    if vcfg.get("timm_proj") not in (None, "none", ""):
        odd.append(f"vision_cfg.timm_proj={vcfg['timm_proj']!r}")
    odd += [f"vision_cfg.{k}" for k, v in vcfg.items() if k not in _NEUTRAL_VISION and v not in (None, False)]
    if odd:
        raise CheckpointError(f"open_clip config fields clipforge does not support for MobileCLIP: {sorted(odd)}")
    arch = dict(TIMM_FASTVIT_ARCHITECTURES[name])
    arch["image_size"] = vcfg.get("image_size", arch["image_size"])
    causal = not tcfg.pop("no_causal_mask", False)
    return MobileClipConfig(
        embed_dim=model_cfg["embed_dim"], vision=FastVitMciConfig(**arch),
        text=text_config_from_open_clip(tcfg, NEUTRAL_OPEN_CLIP_TEXT), text_causal=causal,
        activation="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
    )


_NEUTRAL_VISION = {"image_size", "timm_model_name", "timm_model_pretrained", "timm_drop", "timm_drop_path",
                   "patch_dropout", "output_tokens", "timm_pool", "timm_proj"}


def open_clip_config_to_mobileclip_config(model_cfg: dict[str, Any]) -> MobileClipConfig:
    """A MobileClipConfig from open_clip's MobileCLIP-B / MobileCLIP2-B model config."""
    vcfg, tcfg = dict(model_cfg.get("vision_cfg", {})), dict(model_cfg.get("text_cfg", {}))
    name = vcfg.get("timm_model_name")
    if isinstance(name, str) and name.startswith("fastvit_mci"):
        return _fastvit_from_open_clip(name, vcfg, tcfg, model_cfg)
    if name not in TIMM_MOBILECLIP_ARCHITECTURES:
        raise CheckpointError(f"timm tower {str(name)[:60]!r} is not one clipforge knows for MobileCLIP; it reads "
                              f"{sorted(TIMM_MOBILECLIP_ARCHITECTURES) + sorted(TIMM_FASTVIT_ARCHITECTURES)}")
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
        text=text_config_from_open_clip(tcfg, NEUTRAL_OPEN_CLIP_TEXT), text_causal=causal,
        activation="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
    )


def mobileclip_config_to_open_clip_config(cfg: MobileClipConfig) -> dict[str, Any]:
    if isinstance(cfg.vision, FastVitMciConfig):
        defaults = FastVitMciConfig()
        fixed = ("lkc_use_act", "repmixer_kernel_size", "down_patch_size", "down_stride", "cls_ratio")
        names = [n for n, a in TIMM_FASTVIT_ARCHITECTURES.items()
                 if FastVitMciConfig(**dict(a, image_size=cfg.vision.image_size)) == cfg.vision
                 and all(getattr(cfg.vision, k) == getattr(defaults, k) for k in fixed)]
        pool = "avg"
    else:
        fields = {k: getattr(cfg.vision, k) for k in ("image_size", "width", "layers", "heads", "mlp_width", "stem_width")}
        names = [n for n, a in TIMM_MOBILECLIP_ARCHITECTURES.items() if a == fields
                 and (cfg.vision.layer_norm_eps, cfg.vision.batch_norm_eps) == (1e-6, 1e-5)]
        pool = "token"
    if not names:
        raise CheckpointError(f"open_clip names no timm MobileCLIP tower of this shape ({describe(cfg)}): write 'clipforge'")
    t = cfg.text
    if cfg.layer_norm_eps != 1e-5 or t.eot_token_id != t.vocab_size - 1:
        raise CheckpointError("open_clip's text tower uses LayerNorm eps 1e-5 and pools at the largest token id")
    return {
        "embed_dim": cfg.embed_dim, "quick_gelu": cfg.activation == "quick_gelu",
        "vision_cfg": {"image_size": cfg.vision.image_size, "timm_model_name": names[0], "timm_model_pretrained": False,
                       "timm_pool": pool, "timm_proj": None},
        "text_cfg": {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width,
                     "heads": t.heads, "layers": t.layers, "mlp_ratio": mlp_ratio_for(t.width, t.mlp_width),
                     "no_causal_mask": not cfg.text_causal},
        "custom_text": True,
    }
