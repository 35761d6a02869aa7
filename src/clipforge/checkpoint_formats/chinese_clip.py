"""Chinese-CLIP in files: transformers' ChineseCLIPModel directories (config.json model_type
"chinese_clip", model.safetensors / pytorch_model.bin, vocab.txt, preprocessor_config.json) and
clipforge's own, mapped onto one canonical layout: the model's state dict (models/bert_clip.py):

  visual.*          CLIP's ViT in OpenAI's layout (transformers' vision_model.* as for CLIPModel)
  text.*            the BERT tower (checkpoint_formats/bert.py names)
  text_projection   [text width, embed_dim] (transformers' text_projection.weight, transposed)
  logit_scale

Like the whole package, this knows no models: state dicts, configs and files only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from ..atomic_files import atomic_write_text
from ..configs import (
    BertTextConfig,
    ChineseClipConfig,
    ClipConfig,
    ModelRecord,
    TextConfig,
    TokenizerConfig,
    VisionTransformerConfig,
)
from .bert import (
    bert_expected_shapes,
    bert_layer_count,
    bert_to_canonical,
    canonical_to_bert,
    check_bert_limits,
    hf_activation,
)
from .errors import CheckpointError
from .hf import _square, canonical_to_hf, hf_image_processor_config, hf_to_canonical
from .infer_config import Shape, _sane_float, _sane_int, _LIMITS
from .infer_config import check_config_limits as clip_check_config_limits
from .infer_config import expected_shapes as clip_expected_shapes
from .limits import MAX_TOKENIZER_MODEL_BYTES, optional_file, read_json

StateDict = dict[str, torch.Tensor]
HF_TEXT_PREFIX = "text_model."

# ---- keys --------------------------------------------------------------------------------------------


def hf_to_canonical_chinese_clip(state_dict: StateDict) -> StateDict:
    """ChineseCLIPModel keys -> canonical: the BERT tower by its own map, the rest as CLIPModel's."""
    text = {k: v for k, v in state_dict.items() if k.startswith(HF_TEXT_PREFIX)}
    rest = {k: v for k, v in state_dict.items() if not k.startswith(HF_TEXT_PREFIX)}
    out = hf_to_canonical(rest)  # vision_model.*, visual_projection, text_projection, logit_scale
    out.update(bert_to_canonical(text, HF_TEXT_PREFIX, "text."))
    return out


def canonical_to_hf_chinese_clip(state_dict: StateDict) -> StateDict:
    text = {k: v for k, v in state_dict.items() if k.startswith("text.")}
    rest = {k: v for k, v in state_dict.items() if not k.startswith("text.")}
    out = canonical_to_hf(rest)
    out.update(canonical_to_bert(text, "text.", HF_TEXT_PREFIX))
    return out


def detect_format(keys: list[str]) -> Optional[str]:
    """"hf" for ChineseCLIPModel's keys, "clipforge" for the canonical ones; None for other families'."""
    keyset = set(keys)
    if "text_model.embeddings.word_embeddings.weight" in keyset and any(k.startswith("vision_model.") for k in keys):
        return "hf"
    if "text.token_type_embedding.weight" in keyset and "text_projection" in keyset:
        return "clipforge"
    return None


# ---- configs and shapes ------------------------------------------------------------------------------


def vision_shapes(vision: VisionTransformerConfig, embed_dim: int) -> dict[str, Shape]:
    """CLIP's ViT keys (`visual.*`) and shapes, as CLIP's layout has them."""
    clip = ClipConfig(embed_dim=embed_dim, vision=vision, text=TextConfig(layers=1, width=64, heads=1))
    return {k: v for k, v in clip_expected_shapes(clip).items() if k.startswith("visual.")}


def expected_shapes(cfg: ChineseClipConfig) -> dict[str, Shape]:
    return {
        **vision_shapes(cfg.vision, cfg.embed_dim),
        **bert_expected_shapes(cfg.text, "text."),
        "text_projection": (cfg.text.width, cfg.embed_dim),
        "logit_scale": (),
    }


def check_limits(cfg: Any, source: str = "config") -> None:
    """Sizes of a (untrusted) config within sane limits: the ViT as CLIP's check has it, the BERT tower."""
    vision = getattr(cfg, "vision", None)
    if not isinstance(vision, VisionTransformerConfig):
        raise CheckpointError(f"{source}: vision is a {type(vision).__name__}, not a ViT config")
    _sane_int(cfg.embed_dim, "embed_dim", 1, _LIMITS["embed_dim"], source)
    clip_check_config_limits(ClipConfig(embed_dim=cfg.embed_dim, vision=vision,
                                        text=TextConfig(layers=1, width=64, heads=1)), source)
    _sane_float(cfg.vision_layer_norm_eps, "vision_layer_norm_eps", 1e-12, 1.0, source)
    if cfg.vision_activation not in ("gelu", "quick_gelu", "gelu_tanh"):
        raise CheckpointError(f"{source}: vision activation {str(cfg.vision_activation)[:40]!r} is not supported")
    check_bert_limits(cfg.text, source)


def check_config(state_dict: StateDict, cfg: Any, shapes: Any = expected_shapes) -> None:
    """Raise CheckpointError unless the canonical `state_dict` has exactly `cfg`'s keys and shapes."""
    check_limits(cfg)
    for tower, declared, found in (
        ("vision", cfg.vision.layers, len({k.split(".")[3] for k in state_dict if k.startswith("visual.transformer.resblocks.")})),
        ("text", cfg.text.layers, bert_layer_count(state_dict, "text.")),
    ):
        if declared != found:
            raise CheckpointError(f"state dict does not match the config: {describe(cfg)} has {declared:,} {tower} "
                                  f"layers but the state dict has {found:,}")
    expected = shapes(cfg)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"'{k}' is {tuple(state_dict[k].shape)}, expected {s}" for k, s in expected.items()
             if k in state_dict and tuple(state_dict[k].shape) != s]
    if missing or unexpected or wrong:
        raise CheckpointError(f"state dict does not match {describe(cfg)}: missing {missing[:10]}, unexpected "
                              f"{unexpected[:10]}{', first shape mismatch: ' + wrong[0] if wrong else ''}")


def describe(cfg: Any) -> str:
    v, t = cfg.vision, cfg.text
    return (f"{cfg.family} ViT-{v.width}w{v.layers}L/{v.patch_size}@{v.image_size} + BERT-{t.width}w{t.layers}L "
            f"(vocab {t.vocab_size}) -> {cfg.embed_dim}")


# transformers' ChineseCLIP defaults: a config.json written with use_diff leaves these out.
_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 30522, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 512, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
    "pad_token_id": 0, "type_vocab_size": 2, "position_embedding_type": "absolute",
}
_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_channels": 3, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
}


def hf_config_to_config(config_json: dict[str, Any]) -> ChineseClipConfig:
    """A ChineseClipConfig from a ChineseCLIPModel config.json (as a dict)."""
    if config_json.get("model_type") != "chinese_clip":
        raise CheckpointError(f"config.json is for model_type {config_json.get('model_type')!r}, not 'chinese_clip'")
    text = {**_TEXT_DEFAULTS, **(config_json.get("text_config") or {}), **(config_json.get("text_config_dict") or {})}
    vision = {**_VISION_DEFAULTS, **(config_json.get("vision_config") or {}),
              **(config_json.get("vision_config_dict") or {})}
    if text["position_embedding_type"] != "absolute":
        raise CheckpointError(f"position_embedding_type {text['position_embedding_type']!r} is not supported")
    if vision["num_channels"] != 3:
        raise CheckpointError(f"num_channels {vision['num_channels']} is not supported (RGB only)")
    width, heads = int(vision["hidden_size"]), int(vision["num_attention_heads"])
    return ChineseClipConfig(
        embed_dim=int(config_json.get("projection_dim", 512)),
        vision=VisionTransformerConfig(
            image_size=_square(vision["image_size"], "image_size"), patch_size=_square(vision["patch_size"], "patch_size"),
            width=width, layers=int(vision["num_hidden_layers"]), heads=heads,
            mlp_ratio=int(vision["intermediate_size"]) / width,
        ),
        text=BertTextConfig(
            vocab_size=int(text["vocab_size"]), width=int(text["hidden_size"]), layers=int(text["num_hidden_layers"]),
            heads=int(text["num_attention_heads"]), mlp_width=int(text["intermediate_size"]),
            max_positions=int(text["max_position_embeddings"]), type_vocab_size=int(text["type_vocab_size"]),
            layer_norm_eps=float(text["layer_norm_eps"]), activation=hf_activation(text["hidden_act"], "text_config"),
            pad_token_id=int(text["pad_token_id"] if text["pad_token_id"] is not None else 0),
            context_length=min(52, int(text["max_position_embeddings"])),
        ),
        vision_activation=hf_activation(vision["hidden_act"], "vision_config"),  # type: ignore[arg-type]
        vision_layer_norm_eps=float(vision["layer_norm_eps"]),
    )


_HF_ACT_NAMES = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_tanh": "gelu_pytorch_tanh"}


def config_to_hf_config(cfg: ChineseClipConfig, dtype: str = "float32") -> dict[str, Any]:
    v, t = cfg.vision, cfg.text
    return {
        "architectures": ["ChineseCLIPModel"],
        "model_type": "chinese_clip",
        "projection_dim": cfg.embed_dim,
        "logit_scale_init_value": 2.6592,
        "torch_dtype": dtype,
        "text_config": {
            "model_type": "chinese_clip_text_model", "vocab_size": t.vocab_size, "hidden_size": t.width,
            "num_hidden_layers": t.layers, "num_attention_heads": t.heads, "intermediate_size": t.mlp_width,
            "max_position_embeddings": t.max_positions, "type_vocab_size": t.type_vocab_size,
            "layer_norm_eps": t.layer_norm_eps, "hidden_act": _HF_ACT_NAMES[t.activation],
            "pad_token_id": t.pad_token_id, "position_embedding_type": "absolute",
        },
        "vision_config": {
            "model_type": "chinese_clip_vision_model", "hidden_size": v.width, "num_hidden_layers": v.layers,
            "num_attention_heads": v.heads, "intermediate_size": v.mlp_width, "image_size": v.image_size,
            "patch_size": v.patch_size, "projection_dim": cfg.embed_dim, "num_channels": 3,
            "hidden_act": _HF_ACT_NAMES[cfg.vision_activation], "layer_norm_eps": cfg.vision_layer_norm_eps,
        },
    }


# ---- tokenizer and processor files -------------------------------------------------------------------

CHINESE_CLIP_CONTEXT_LENGTH = 52  # Chinese-CLIP's training length; pooling at [CLS] makes padding harmless


def read_small_file(path: Path, what: str) -> bytes:
    """A tokenizer file's bytes, refused above MAX_TOKENIZER_MODEL_BYTES (checked before reading)."""
    size = path.stat().st_size
    if size > MAX_TOKENIZER_MODEL_BYTES:
        raise CheckpointError(f"{path}: a {what} of {size:,} bytes, over {MAX_TOKENIZER_MODEL_BYTES:,}; refused")
    return path.read_bytes()


def read_hf_tokenizer(directory: Path) -> Optional[TokenizerConfig]:
    """The WordPiece tokenizer of a ChineseCLIP directory (vocab.txt, tokenizer_config.json's
    do_lower_case); None when it has no vocab.txt (loading then names what is missing when asked)."""
    vocab_path = directory / "vocab.txt"
    if not optional_file(vocab_path):
        return None
    vocab = read_small_file(vocab_path, "vocab.txt")
    lower = True
    if optional_file(directory / "tokenizer_config.json"):
        raw = read_json(directory / "tokenizer_config.json", "tokenizer_config.json")
        if isinstance(raw, dict) and isinstance(raw.get("do_lower_case"), bool):
            lower = raw["do_lower_case"]
    from ..text.wordpiece import read_vocab

    try:
        pieces = read_vocab(vocab)
    except Exception as exc:  # noqa: BLE001 - InvalidInputError from the text layer, named with the file
        raise CheckpointError(f"{vocab_path}: {exc}") from None
    missing = [t for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]") if t not in pieces]
    if missing:
        raise CheckpointError(f"{vocab_path}: lacks the special token(s) {missing}")
    return TokenizerConfig(
        kind="wordpiece", context_length=CHINESE_CLIP_CONTEXT_LENGTH, pad_token_id=pieces["[PAD]"],
        bos_token_id=pieces["[CLS]"], eos_token_id=pieces["[SEP]"], clean="lower" if lower else "none",
        model=vocab, prompt_templates="chinese",
    )


def write_hf_files(directory: Path, record: ModelRecord) -> None:
    """vocab.txt + tokenizer_config.json (BertTokenizer) and preprocessor_config.json
    (ChineseCLIPImageProcessor): what `ChineseCLIPProcessor.from_pretrained` reads."""
    tokenizer = record.tokenizer
    if tokenizer.kind == "wordpiece" and tokenizer.model is not None:
        atomic_write_text(directory / "vocab.txt", tokenizer.model.decode("utf-8"))
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": tokenizer.clean != "none",
                  "model_max_length": tokenizer.context_length, "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]", "tokenize_chinese_chars": True}
        atomic_write_text(directory / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
    processor = hf_image_processor_config(record.preprocess, "ChineseCLIPImageProcessor", "ChineseCLIPProcessor")
    atomic_write_text(directory / "preprocessor_config.json", json.dumps(processor, indent=2, ensure_ascii=False) + "\n")
