"""open_clip's multilingual CLIP (`xlm-roberta-base-ViT-B-32`: a ViT image tower and open_clip's
HFTextEncoder around transformers' XLMRobertaModel) in files, mapped onto one canonical layout,
the model's state dict (models/bert_clip.py):

  visual.*                open_clip's ViT keys as they are (OpenAI's layout)
  text.*                  the XLM-R tower (open_clip's text.transformer.*, checkpoint_formats/bert.py names)
  text_projection.{0,2}   open_clip's "mlp" projection (text.proj.0 / text.proj.2: Linear, GELU, Linear)
  logit_scale

open_clip_config.json names the text tower only by its hub name (text_cfg.hf_model_name); the
sizes of the towers clipforge knows by name are in TEXT_TOWERS. A bare weights file is read off
its tensor shapes (heads = width / 64, as XLM-R's base and large models have).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Optional

import torch

from ..configs import BertTextConfig, TokenizerConfig, VisionTransformerConfig, XlmRobertaClipConfig
from .bert import bert_expected_shapes, bert_to_canonical, canonical_to_bert
from .chinese_clip import check_config as _check_config
from .chinese_clip import check_limits, describe, vision_shapes
from .errors import CheckpointError
from .infer_config import Shape
from .limits import optional_file, read_json

StateDict = dict[str, torch.Tensor]
OC_TEXT_PREFIX = "text.transformer."
_PROJ = {"text.proj.0.weight": "text_projection.0.weight", "text.proj.2.weight": "text_projection.2.weight"}

__all__ = ["check_limits", "describe"]

# transformers' configs of the XLM-R towers open_clip builds by name (AutoConfig.from_pretrained(name)).
TEXT_TOWERS: dict[str, BertTextConfig] = {
    "xlm-roberta-base": BertTextConfig(
        vocab_size=250002, width=768, layers=12, heads=12, mlp_width=3072, max_positions=514, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=1, context_length=77, positions="roberta", pooling="mean"),
    "xlm-roberta-large": BertTextConfig(
        vocab_size=250002, width=1024, layers=24, heads=16, mlp_width=4096, max_positions=514, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=1, context_length=77, positions="roberta", pooling="mean"),
}


def open_clip_to_canonical(state_dict: StateDict) -> StateDict:
    out: StateDict = {}
    text: StateDict = {}
    unknown = []
    for key, t in state_dict.items():
        if key.startswith("visual.") or key == "logit_scale":
            out[key] = t
        elif key in _PROJ:
            out[_PROJ[key]] = t
        elif key.startswith(OC_TEXT_PREFIX):
            text[key] = t
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"unknown keys for open_clip's XLM-R CLIP ({len(unknown)}): {unknown[:20]}")
    out.update(bert_to_canonical(text, OC_TEXT_PREFIX, "text."))
    return out


def canonical_to_open_clip(state_dict: StateDict) -> StateDict:
    back = {v: k for k, v in _PROJ.items()}
    out: StateDict = {}
    text: StateDict = {}
    for key, t in state_dict.items():
        if key.startswith("text."):
            text[key] = t
        else:
            out[back.get(key, key)] = t
    out.update(canonical_to_bert(text, "text.", OC_TEXT_PREFIX))
    return out


def detect_format(keys: list[str]) -> Optional[str]:
    keyset = set(keys)
    if "text.proj.0.weight" in keyset and any(k.startswith(OC_TEXT_PREFIX) for k in keys):
        return "open_clip"
    if "text_projection.0.weight" in keyset and "text.token_type_embedding.weight" in keyset:
        return "clipforge"
    return None


def expected_shapes(cfg: XlmRobertaClipConfig) -> dict[str, Shape]:
    return {
        **vision_shapes(cfg.vision, cfg.embed_dim),
        **bert_expected_shapes(cfg.text, "text."),
        "text_projection.0.weight": (cfg.projection_hidden, cfg.text.width),
        "text_projection.2.weight": (cfg.embed_dim, cfg.projection_hidden),
        "logit_scale": (),
    }


def check_config(state_dict: StateDict, cfg: Any) -> None:
    _check_config(state_dict, cfg, shapes=expected_shapes)


def _count(state_dict: StateDict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state_dict if (m := pattern.match(k))})


def infer_config(state_dict: StateDict, **options: Any) -> XlmRobertaClipConfig:
    """The config a canonical state dict's shapes show (heads = width / 64; XLM-R's numerics otherwise)."""
    try:
        width, _, patch, _ = state_dict["visual.conv1.weight"].shape
        grid = math.isqrt(state_dict["visual.positional_embedding"].shape[0] - 1)
        vision = VisionTransformerConfig(
            image_size=grid * patch, patch_size=patch, width=width, layers=_count(state_dict, "visual.transformer.resblocks."),
            heads=max(1, width // 64), mlp_ratio=state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width)
        vocab, text_width = state_dict["text.token_embedding.weight"].shape
        text = BertTextConfig(
            vocab_size=vocab, width=text_width, layers=_count(state_dict, "text.layers."), heads=max(1, text_width // 64),
            mlp_width=state_dict["text.layers.0.mlp.c_fc.weight"].shape[0],
            max_positions=state_dict["text.position_embedding.weight"].shape[0],
            type_vocab_size=state_dict["text.token_type_embedding.weight"].shape[0], layer_norm_eps=1e-5,
            pad_token_id=1, context_length=77, positions="roberta", pooling="mean")
        embed_dim = state_dict["text_projection.2.weight"].shape[0]
    except (KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"not an XLM-R CLIP state dict: cannot read its sizes ({type(exc).__name__}: {exc})") from None
    return XlmRobertaClipConfig(embed_dim=int(embed_dim), vision=vision, text=text)


def is_open_clip_config(model_cfg: dict[str, Any]) -> bool:
    text_cfg = model_cfg.get("text_cfg")
    return isinstance(text_cfg, dict) and "xlm-roberta" in str(text_cfg.get("hf_model_name", ""))


def open_clip_config_to_config(model_cfg: dict[str, Any]) -> XlmRobertaClipConfig:
    """open_clip's model config (model_configs/xlm-roberta-*.json, open_clip_config.json's model_cfg)."""
    text_cfg, vision_cfg = model_cfg.get("text_cfg") or {}, model_cfg.get("vision_cfg") or {}
    name = text_cfg.get("hf_model_name")
    if name not in TEXT_TOWERS:
        raise CheckpointError(f"text tower {str(name)[:60]!r}: clipforge knows the sizes of {sorted(TEXT_TOWERS)} only; "
                              "load the weights file with arch=XlmRobertaClipConfig(...)")
    if text_cfg.get("hf_pooler_type", "mean_pooler") != "mean_pooler" or text_cfg.get("hf_proj_type", "mlp") != "mlp":
        raise CheckpointError(f"only open_clip's mean_pooler + mlp projection are supported, got "
                              f"{text_cfg.get('hf_pooler_type')!r} / {text_cfg.get('hf_proj_type')!r}")
    if model_cfg.get("quick_gelu"):
        raise CheckpointError("a QuickGELU XLM-R CLIP is not supported")
    width = int(vision_cfg.get("width", 768))
    vision = VisionTransformerConfig(
        image_size=int(vision_cfg.get("image_size", 224)), patch_size=int(vision_cfg.get("patch_size", 16)),
        width=width, layers=int(vision_cfg.get("layers", 12)),
        heads=width // int(vision_cfg.get("head_width", 64)), mlp_ratio=float(vision_cfg.get("mlp_ratio", 4.0)))
    text = TEXT_TOWERS[name]
    context = text_cfg.get("context_length")
    if context is not None:
        text = BertTextConfig(**{**text.__dict__, "context_length": int(context)})
    return XlmRobertaClipConfig(embed_dim=int(model_cfg.get("embed_dim", 512)), vision=vision, text=text)


SENTENCEPIECE_FILE = "sentencepiece.bpe.model"  # what XLMRobertaTokenizer.save_pretrained writes


def read_tokenizer(directory: Path) -> Optional[TokenizerConfig]:
    """XLM-R's tokenizer from a directory's sentencepiece.bpe.model (open_clip's hub directories keep
    the tokenizer files next to the weights); None when absent (loading then names the file)."""
    from .chinese_clip import read_small_file

    path = directory / SENTENCEPIECE_FILE
    if not optional_file(path):
        return None
    context = 77
    config_path = directory / "open_clip_config.json"
    if optional_file(config_path):
        raw = read_json(config_path, "open_clip config")
        text_cfg = (raw.get("model_cfg") or {}).get("text_cfg") if isinstance(raw, dict) else None
        if isinstance(text_cfg, dict) and isinstance(text_cfg.get("context_length"), int):
            context = text_cfg["context_length"]
    return TokenizerConfig(kind="xlm_roberta", context_length=context, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                           model=read_small_file(path, SENTENCEPIECE_FILE))
