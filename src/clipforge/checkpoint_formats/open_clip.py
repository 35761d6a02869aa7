"""open_clip's layout and model configs.

open_clip's default `CLIP` class uses the canonical (OpenAI) key names. What differs is around
the keys: training wrappers (`module.` from DDP, `_orig_mod.` from torch.compile), the
`CustomTextCLIP` variant that nests the text tower under `text.`, and SigLIP's `logit_bias`.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..configs import ClipConfig, ResNetConfig, TextConfig, VisionTransformerConfig
from .errors import CheckpointError
from .infer_config import mlp_ratio_for

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def strip_wrapper_prefix(key: str) -> str:
    """`key` without DDP / torch.compile prefixes, in any nesting (`module._orig_mod.x` -> `x`)."""
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def strip_wrapper_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDP / torch.compile prefixes from every key."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = strip_wrapper_prefix(key)
        if name in out:
            raise CheckpointError(f"key '{key}' collides with another key once wrapper prefixes are removed")
        out[name] = value
    return out


def open_clip_to_canonical(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if "logit_bias" in state_dict:
        raise CheckpointError(
            "'logit_bias' found: this is a SigLIP-style (sigmoid loss) model, which clipforge does not support"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key == "attn_mask":
            # open_clip's causal mask is a non-persistent buffer, but TorchScript has no such thing:
            # traced / scripted open_clip archives store it. Every model rebuilds it; drop it.
            continue
        # CustomTextCLIP keeps the same text-tower names one level down, under `text.`.
        if key.startswith("text.") and key[5:].startswith(_TEXT_KEYS):
            key = key[5:]
        if key in out:
            raise CheckpointError(f"key '{key}' appears both with and without the 'text.' prefix")
        out[key] = value
    return out


def canonical_to_open_clip(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(state_dict)


# open_clip config fields that change nothing clipforge models (tokenizer, training-only settings;
# eos_id only matters with pool_type "eos", which is refused).
_NEUTRAL_VISION = {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "patch_dropout",
                   "output_tokens"}
_NEUTRAL_TEXT = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "hf_tokenizer_name",
                 "tokenizer_kwargs", "tokenizer_mode", "pad_id", "eos_id", "output_tokens"}
_NEUTRAL_TOP = {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg", "custom_text"}


def open_clip_config_to_clip_config(model_cfg: dict[str, Any], quick_gelu: Optional[bool] = None) -> ClipConfig:
    """A `ClipConfig` from an open_clip model config (e.g. `open_clip.get_model_config("ViT-H-14")`).

    `quick_gelu` overrides the config's flag, as open_clip's `force_quick_gelu` does. Fields that
    select an architecture clipforge does not implement (timm / HF towers, SigLIP, CoCa, layer
    scale, attentional pooling, ...) are refused by name.
    """
    vcfg, tcfg = dict(model_cfg.get("vision_cfg", {})), dict(model_cfg.get("text_cfg", {}))
    odd = sorted(
        [k for k in model_cfg if k not in _NEUTRAL_TOP]
        + [f"vision_cfg.{k}" for k, v in vcfg.items() if k not in _NEUTRAL_VISION and v not in (None, False)]
        + [f"text_cfg.{k}" for k, v in tcfg.items()
           if k not in _NEUTRAL_TEXT and not (k == "pool_type" and v == "argmax") and v not in (None, False)]
    )
    if model_cfg.get("custom_text"):
        odd.append("custom_text")
    if odd:
        raise CheckpointError(f"open_clip config fields clipforge does not support: {odd}")

    image_size = vcfg.get("image_size", 224)
    if isinstance(image_size, (list, tuple)):
        if len(set(image_size)) != 1:
            raise CheckpointError(f"non-square image_size {image_size} is not supported")
        image_size = image_size[0]
    head_width = vcfg.get("head_width", 64)
    width = vcfg.get("width", 768)
    layers = vcfg.get("layers", 12)
    vision: VisionTransformerConfig | ResNetConfig
    if isinstance(layers, (list, tuple)):
        vision = ResNetConfig(image_size=image_size, layers=tuple(layers), width=width, heads=width * 32 // head_width)
    else:
        vision = VisionTransformerConfig(
            image_size=image_size, patch_size=vcfg.get("patch_size", 16), width=width, layers=layers,
            heads=width // head_width, mlp_ratio=vcfg.get("mlp_ratio", 4.0),
        )
    vocab = tcfg.get("vocab_size", 49408)
    text = TextConfig(
        context_length=tcfg.get("context_length", 77), vocab_size=vocab, width=tcfg.get("width", 512),
        heads=tcfg.get("heads", 8), layers=tcfg.get("layers", 12), mlp_ratio=tcfg.get("mlp_ratio", 4.0),
        sot_token_id=vocab - 2, eot_token_id=vocab - 1, pad_token_id=tcfg.get("pad_id", 0),
    )
    use_quick_gelu = model_cfg.get("quick_gelu", False) if quick_gelu is None else quick_gelu
    return ClipConfig(
        embed_dim=model_cfg["embed_dim"], vision=vision, text=text,
        activation="quick_gelu" if use_quick_gelu else "gelu",
    )


def clip_config_to_open_clip_config(cfg: ClipConfig) -> dict[str, Any]:
    """An open_clip model config (for `open_clip.add_model_config`) describing `cfg`."""
    v, t = cfg.vision, cfg.text
    if cfg.layer_norm_eps != 1e-5:
        raise CheckpointError(f"open_clip's CLIP uses LayerNorm eps 1e-5, cfg has {cfg.layer_norm_eps}")
    if t.eot_token_id != t.vocab_size - 1:
        raise CheckpointError("open_clip's CLIP pools text at argmax: eot_token_id must be the largest id")
    if isinstance(v, ResNetConfig):
        if (v.width * 32) % v.heads:
            raise CheckpointError(f"ResNet attention-pool width {v.width * 32} is not divisible by {v.heads} heads")
        vision = {"image_size": v.image_size, "layers": list(v.layers), "width": v.width,
                  "head_width": v.width * 32 // v.heads, "patch_size": None}
    else:
        if v.width % v.heads:
            raise CheckpointError(f"vision width {v.width} is not divisible by {v.heads} heads")
        vision = {"image_size": v.image_size, "layers": v.layers, "width": v.width,
                  "head_width": v.width // v.heads, "mlp_ratio": mlp_ratio_for(v.width, v.mlp_width),
                  "patch_size": v.patch_size}
    text = {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width, "heads": t.heads,
            "layers": t.layers, "mlp_ratio": mlp_ratio_for(t.width, t.mlp_width)}
    return {"embed_dim": cfg.embed_dim, "quick_gelu": cfg.activation == "quick_gelu",
            "vision_cfg": vision, "text_cfg": text}
