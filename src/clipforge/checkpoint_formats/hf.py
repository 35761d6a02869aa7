"""transformers' `CLIPModel` layout and `config.json`, both ways.

Differences from the canonical (OpenAI) layout:
  * attention keeps q, k, v as three Linear layers; OpenAI fuses them into `in_proj_*`, stacked
    q, k, v along dim 0 (`nn.MultiheadAttention`'s order);
  * projections are `nn.Linear` ([embed_dim, width]); OpenAI stores the matrix it right-multiplies
    by ([width, embed_dim]), so the two are transposes;
  * older transformers saved `position_ids` buffers (an arange), which are dropped;
  * no ResNet image tower exists in transformers.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import torch

from ..configs import ClipConfig, PreprocessConfig, ResNetConfig, TextConfig, VisionTransformerConfig
from .errors import CheckpointError
from .infer_config import mlp_ratio_for

# (canonical, transformers) names of tensors that map one to one.
_DIRECT = [
    ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
    ("ln_final.weight", "text_model.final_layer_norm.weight"),
    ("ln_final.bias", "text_model.final_layer_norm.bias"),
    ("logit_scale", "logit_scale"),
    ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
    ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
    ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
    ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),  # sic: transformers' spelling
    ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"),
    ("visual.ln_post.weight", "vision_model.post_layernorm.weight"),
    ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
]
# (canonical, transformers) names of matrices stored transposed.
_TRANSPOSED = [
    ("text_projection", "text_projection.weight"),
    ("visual.proj", "visual_projection.weight"),
]
# Per transformer block: canonical `<tower>transformer.resblocks.{i}.<a>` <-> `<tower>encoder.layers.{i}.<b>`.
_BLOCK = [
    ("attn.out_proj.weight", "self_attn.out_proj.weight"),
    ("attn.out_proj.bias", "self_attn.out_proj.bias"),
    ("ln_1.weight", "layer_norm1.weight"),
    ("ln_1.bias", "layer_norm1.bias"),
    ("mlp.c_fc.weight", "mlp.fc1.weight"),
    ("mlp.c_fc.bias", "mlp.fc1.bias"),
    ("mlp.c_proj.weight", "mlp.fc2.weight"),
    ("mlp.c_proj.bias", "mlp.fc2.bias"),
    ("ln_2.weight", "layer_norm2.weight"),
    ("ln_2.bias", "layer_norm2.bias"),
]
# Fused canonical tensor <- three transformers tensors, concatenated in this order along dim 0.
_FUSED = [
    ("attn.in_proj_weight", ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight")),
    ("attn.in_proj_bias", ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias")),
]
_TOWERS = {"text_model": "", "vision_model": "visual."}  # transformers prefix -> canonical prefix
_DROPPED = {"text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"}

_HF_LAYER = re.compile(r"^(text_model|vision_model)\.encoder\.layers\.(\d+)\.(.+)$")
_CANON_LAYER = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")


def _transpose(name: str, t: torch.Tensor) -> torch.Tensor:
    if t.ndim != 2:
        raise CheckpointError(f"'{name}' should be a matrix, got shape {tuple(t.shape)}")
    return t.t().contiguous()


def hf_to_canonical(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    direct = {hf: canon for canon, hf in _DIRECT}
    transposed = {hf: canon for canon, hf in _TRANSPOSED}
    block = {hf: canon for canon, hf in _BLOCK}
    fused_part = {hf: (canon, i) for canon, parts in _FUSED for i, hf in enumerate(parts)}

    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[int, torch.Tensor]] = defaultdict(dict)
    unknown = []
    for key, t in state_dict.items():
        if key in _DROPPED:
            continue
        if key in direct:
            out[direct[key]] = t
        elif key in transposed:
            out[transposed[key]] = _transpose(key, t)
        elif (m := _HF_LAYER.match(key)) and (m.group(3) in block or m.group(3) in fused_part):
            prefix = f"{_TOWERS[m.group(1)]}transformer.resblocks.{m.group(2)}."
            if m.group(3) in block:
                out[prefix + block[m.group(3)]] = t
            else:
                canon, index = fused_part[m.group(3)]
                fused[prefix + canon][index] = t
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"unknown keys for a transformers CLIPModel ({len(unknown)}): {unknown[:20]}")
    for canon, parts in fused.items():
        if len(parts) != 3:
            absent = [("q", "k", "v")[i] for i in range(3) if i not in parts]
            raise CheckpointError(f"'{canon}' cannot be fused: the {', '.join(absent)} projection(s) are missing")
        out[canon] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    return out


def canonical_to_hf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(k.startswith(("visual.attnpool.", "visual.layer1.")) for k in state_dict):
        raise CheckpointError(
            "transformers has no ModifiedResNet CLIP: a ResNet image tower cannot be written in the 'hf' "
            "format. Use 'clipforge', 'openai' or 'open_clip'."
        )
    direct = dict(_DIRECT)
    transposed = dict(_TRANSPOSED)
    block = dict(_BLOCK)
    fused = dict(_FUSED)
    towers = {canon: hf for hf, canon in _TOWERS.items()}

    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, t in state_dict.items():
        if key in direct:
            out[direct[key]] = t
        elif key in transposed:
            out[transposed[key]] = _transpose(key, t)
        elif (m := _CANON_LAYER.match(key)) and (m.group(3) in block or m.group(3) in fused):
            prefix = f"{towers[m.group(1) or '']}.encoder.layers.{m.group(2)}."
            if m.group(3) in block:
                out[prefix + block[m.group(3)]] = t
            else:
                if t.shape[0] % 3:
                    raise CheckpointError(f"'{key}' has {t.shape[0]} rows, not divisible into q, k, v")
                # clone: each part gets its own storage (safetensors refuses shared storage).
                for name, part in zip(fused[m.group(3)], t.chunk(3, dim=0)):
                    out[prefix + name] = part.clone()
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"canonical keys with no transformers name ({len(unknown)}): {unknown[:20]}")
    return out


# ---------------------------------------------------------------------------------------------
# config.json

# transformers' CLIP defaults: a config.json written with use_diff leaves these out.
_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
    "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
    "pad_token_id": 1, "bos_token_id": 49406, "eos_token_id": 49407,
}
_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_channels": 3, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
}
_TOP_DEFAULTS: dict[str, Any] = {"projection_dim": 512, "logit_scale_init_value": 2.6592}


def _square(value: Any, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise CheckpointError(f"non-square {name} {value} is not supported")
        value = value[0]
    return int(value)


def hf_config_to_clip_config(config_json: dict[str, Any]) -> ClipConfig:
    """A `ClipConfig` from a transformers CLIPModel `config.json` (as a dict)."""
    model_type = config_json.get("model_type", "clip")
    if model_type != "clip":
        raise CheckpointError(f"config.json is for model_type {model_type!r}; only 'clip' is supported")
    # Old configs carry *_config_dict next to (and overriding) *_config, as transformers merges them.
    text = {**_TEXT_DEFAULTS, **(config_json.get("text_config") or {}), **(config_json.get("text_config_dict") or {})}
    vision = {**_VISION_DEFAULTS, **(config_json.get("vision_config") or {}),
              **(config_json.get("vision_config_dict") or {})}
    top = {**_TOP_DEFAULTS, **config_json}

    acts = {text["hidden_act"], vision["hidden_act"]}
    if len(acts) != 1 or not acts <= {"quick_gelu", "gelu"}:
        raise CheckpointError(
            f"hidden_act text={text['hidden_act']!r} vision={vision['hidden_act']!r}: clipforge needs both "
            "towers to use 'quick_gelu' or both 'gelu'"
        )
    if text["layer_norm_eps"] != vision["layer_norm_eps"]:
        raise CheckpointError(f"layer_norm_eps differs between towers ({text['layer_norm_eps']} vs "
                              f"{vision['layer_norm_eps']}); clipforge uses one value")
    if vision["num_channels"] != 3:
        raise CheckpointError(f"num_channels {vision['num_channels']} is not supported (RGB only)")

    vocab = text["vocab_size"]
    if text["eos_token_id"] == 2:
        # transformers' marker for configs written before its PR #24773: pool at the argmax id,
        # which for CLIP's vocabulary is <|endoftext|> (last id; <|startoftext|> precedes it).
        # Their bos/pad ids (0/1) are placeholders; OpenAI pads with 0.
        sot, eot, pad = vocab - 2, vocab - 1, 0
    else:
        sot, eot, pad = text["bos_token_id"], text["eos_token_id"], text["pad_token_id"]
    text_cfg = TextConfig(
        context_length=text["max_position_embeddings"], vocab_size=vocab, width=text["hidden_size"],
        heads=text["num_attention_heads"], layers=text["num_hidden_layers"],
        mlp_ratio=mlp_ratio_for(text["hidden_size"], text["intermediate_size"]),
        sot_token_id=sot, eot_token_id=eot, pad_token_id=pad,
    )
    vision_cfg = VisionTransformerConfig(
        image_size=_square(vision["image_size"], "image_size"), patch_size=_square(vision["patch_size"], "patch_size"),
        width=vision["hidden_size"], layers=vision["num_hidden_layers"], heads=vision["num_attention_heads"],
        mlp_ratio=mlp_ratio_for(vision["hidden_size"], vision["intermediate_size"]),
    )
    return ClipConfig(
        embed_dim=top["projection_dim"], vision=vision_cfg, text=text_cfg, activation=text["hidden_act"],
        layer_norm_eps=float(text["layer_norm_eps"]), init_logit_scale=float(top["logit_scale_init_value"]),
    )


def clip_config_to_hf_config(cfg: ClipConfig, dtype: str = "float32") -> dict[str, Any]:
    """A `config.json` dict that `transformers.CLIPModel.from_pretrained` builds `cfg` from."""
    v, t = cfg.vision, cfg.text
    if isinstance(v, ResNetConfig):
        raise CheckpointError("transformers has no ModifiedResNet CLIP; a ResNet config has no 'hf' form")
    common = {"hidden_act": cfg.activation, "layer_norm_eps": cfg.layer_norm_eps, "projection_dim": cfg.embed_dim,
              "attention_dropout": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02}
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "dtype": dtype,
        "projection_dim": cfg.embed_dim,
        "logit_scale_init_value": cfg.init_logit_scale,
        "initializer_factor": 1.0,
        "text_config": {
            "model_type": "clip_text_model", "vocab_size": t.vocab_size, "hidden_size": t.width,
            "intermediate_size": t.mlp_width, "num_hidden_layers": t.layers, "num_attention_heads": t.heads,
            "max_position_embeddings": t.context_length, "bos_token_id": t.sot_token_id,
            "eos_token_id": t.eot_token_id, "pad_token_id": t.pad_token_id, **common,
        },
        "vision_config": {
            "model_type": "clip_vision_model", "hidden_size": v.width, "intermediate_size": v.mlp_width,
            "num_hidden_layers": v.layers, "num_attention_heads": v.heads, "num_channels": 3,
            "image_size": v.image_size, "patch_size": v.patch_size, **common,
        },
    }


def hf_image_processor_config(preprocess: PreprocessConfig, image_processor_type: str, processor_class: str) -> dict[str, Any]:
    """preprocessor_config.json for `preprocess`: resize the shortest side + center crop, or (resize_mode
    "squash") resize to a square without cropping, as SiglipImageProcessor does."""
    size = preprocess.image_size
    squash = preprocess.resize_mode == "squash"
    return {
        "image_processor_type": image_processor_type,
        "processor_class": processor_class,
        "do_resize": True,
        "size": {"height": size, "width": size} if squash else {"shortest_edge": size},
        "resample": 2 if preprocess.interpolation == "bilinear" else 3,  # PIL's BILINEAR / BICUBIC
        "do_center_crop": not squash,
        **({} if squash else {"crop_size": {"height": size, "width": size}}),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(preprocess.mean),
        "image_std": list(preprocess.std),
        "do_convert_rgb": True,
    }
