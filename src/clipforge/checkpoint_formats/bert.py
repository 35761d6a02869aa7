"""BERT-style text towers (Chinese-CLIP's RoBERTa-wwm, XLM-RoBERTa) in files: transformers' BertModel /
XLMRobertaModel key names <-> clipforge's canonical names (models/bert_text.py), their shapes, and
the sanity limits of a `BertTextConfig`. Shared by the Chinese-CLIP and XLM-R CLIP layouts.

transformers' per-layer q / k / v become one fused `attn.in_proj_weight` (concatenated q, k, v,
as nn.MultiheadAttention); everything else is renamed only. The BERT pooler (dense + tanh) is never
used by either CLIP family (Chinese-CLIP pools the [CLS] state, open_clip's mean pooler the real
tokens): a file's `pooler.*` tensors are dropped, named in POOLER_PREFIX.
"""

from __future__ import annotations

import re

import torch

from ..configs import BertTextConfig
from .errors import CheckpointError
from .infer_config import Shape, _sane_float, _sane_int, _LIMITS

StateDict = dict[str, torch.Tensor]

# (canonical, transformers) names below the tower prefixes.
_DIRECT = [
    ("token_embedding.weight", "embeddings.word_embeddings.weight"),
    ("position_embedding.weight", "embeddings.position_embeddings.weight"),
    ("token_type_embedding.weight", "embeddings.token_type_embeddings.weight"),
    ("ln_embed.weight", "embeddings.LayerNorm.weight"),
    ("ln_embed.bias", "embeddings.LayerNorm.bias"),
]
_BLOCK = [
    ("attn.out_proj.weight", "attention.output.dense.weight"),
    ("attn.out_proj.bias", "attention.output.dense.bias"),
    ("ln_1.weight", "attention.output.LayerNorm.weight"),
    ("ln_1.bias", "attention.output.LayerNorm.bias"),
    ("mlp.c_fc.weight", "intermediate.dense.weight"),
    ("mlp.c_fc.bias", "intermediate.dense.bias"),
    ("mlp.c_proj.weight", "output.dense.weight"),
    ("mlp.c_proj.bias", "output.dense.bias"),
    ("ln_2.weight", "output.LayerNorm.weight"),
    ("ln_2.bias", "output.LayerNorm.bias"),
]
_FUSED = [
    ("attn.in_proj_weight", ("attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight")),
    ("attn.in_proj_bias", ("attention.self.query.bias", "attention.self.key.bias", "attention.self.value.bias")),
]
# Buffers some transformers versions saved (non-persistent now) and the unused BERT pooler.
_DROPPED = ("embeddings.position_ids", "embeddings.token_type_ids")
POOLER_PREFIX = "pooler."

_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_CANON_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")


def bert_to_canonical(state_dict: StateDict, hf_prefix: str, canon_prefix: str) -> StateDict:
    """transformers BERT keys under `hf_prefix` -> canonical keys under `canon_prefix`; every key of
    `state_dict` must be one (an unknown key is an error naming it)."""
    direct = {hf: canon for canon, hf in _DIRECT}
    block = {hf: canon for canon, hf in _BLOCK}
    fused_part = {hf: (canon, i) for canon, parts in _FUSED for i, hf in enumerate(parts)}
    out: StateDict = {}
    fused: dict[str, dict[int, torch.Tensor]] = {}
    unknown = []
    for key, t in state_dict.items():
        name = key[len(hf_prefix):] if key.startswith(hf_prefix) else None
        if name is None:
            unknown.append(key)
        elif name in _DROPPED or name.startswith(POOLER_PREFIX):
            continue
        elif name in direct:
            out[canon_prefix + direct[name]] = t
        elif (m := _HF_LAYER.match(name)) and (m.group(2) in block or m.group(2) in fused_part):
            prefix = f"{canon_prefix}layers.{m.group(1)}."
            if m.group(2) in block:
                out[prefix + block[m.group(2)]] = t
            else:
                canon, index = fused_part[m.group(2)]
                fused.setdefault(prefix + canon, {})[index] = t
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"unknown keys for a BERT-style text tower ({len(unknown)}): {unknown[:20]}")
    for canon, parts in fused.items():
        if len(parts) != 3:
            absent = [("query", "key", "value")[i] for i in range(3) if i not in parts]
            raise CheckpointError(f"'{canon}' cannot be fused: the {', '.join(absent)} projection(s) are missing")
        out[canon] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    return out


def canonical_to_bert(state_dict: StateDict, canon_prefix: str, hf_prefix: str) -> StateDict:
    """The inverse of `bert_to_canonical` (every key must be under `canon_prefix`)."""
    direct = dict(_DIRECT)
    block = dict(_BLOCK)
    fused = dict(_FUSED)
    out: StateDict = {}
    unknown = []
    for key, t in state_dict.items():
        name = key[len(canon_prefix):] if key.startswith(canon_prefix) else None
        if name is not None and name in direct:
            out[hf_prefix + direct[name]] = t
        elif name is not None and (m := _CANON_LAYER.match(name)) and (m.group(2) in block or m.group(2) in fused):
            prefix = f"{hf_prefix}encoder.layer.{m.group(1)}."
            if m.group(2) in block:
                out[prefix + block[m.group(2)]] = t
            else:
                if t.shape[0] % 3:
                    raise CheckpointError(f"'{key}' has {t.shape[0]} rows, not divisible into q, k, v")
                for part_name, part in zip(fused[m.group(2)], t.chunk(3, dim=0)):
                    out[prefix + part_name] = part.clone()  # own storage: safetensors refuses shared
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"canonical keys with no BERT name ({len(unknown)}): {unknown[:20]}")
    return out


def bert_expected_shapes(cfg: BertTextConfig, prefix: str) -> dict[str, Shape]:
    """Every canonical key of the text tower with its shape, in the model's state_dict order."""
    w, m = cfg.width, cfg.mlp_width
    out: dict[str, Shape] = {
        f"{prefix}token_embedding.weight": (cfg.vocab_size, w),
        f"{prefix}position_embedding.weight": (cfg.max_positions, w),
        f"{prefix}token_type_embedding.weight": (cfg.type_vocab_size, w),
        f"{prefix}ln_embed.weight": (w,),
        f"{prefix}ln_embed.bias": (w,),
    }
    for i in range(cfg.layers):
        p = f"{prefix}layers.{i}."
        out.update({
            p + "attn.in_proj_weight": (3 * w, w), p + "attn.in_proj_bias": (3 * w,),
            p + "attn.out_proj.weight": (w, w), p + "attn.out_proj.bias": (w,),
            p + "ln_1.weight": (w,), p + "ln_1.bias": (w,),
            p + "mlp.c_fc.weight": (m, w), p + "mlp.c_fc.bias": (m,),
            p + "mlp.c_proj.weight": (w, m), p + "mlp.c_proj.bias": (w,),
            p + "ln_2.weight": (w,), p + "ln_2.bias": (w,),
        })
    return out


def bert_layer_count(state_dict: StateDict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"layers\.(\d+)\.")
    return len({m.group(1) for k in state_dict if (m := pattern.match(k))})


def check_bert_limits(cfg: BertTextConfig, source: str) -> None:
    """Raise CheckpointError unless every size of `cfg` is a sane int (a file's config is untrusted)."""
    if not isinstance(cfg, BertTextConfig):
        raise CheckpointError(f"{source}: text is a {type(cfg).__name__}, not a BERT text config")
    L = _LIMITS
    _sane_int(cfg.layers, "text.layers", 1, L["layers"], source)
    _sane_int(cfg.width, "text.width", 1, L["width"], source)
    _sane_int(cfg.heads, "text.heads", 1, L["heads"], source)
    _sane_int(cfg.mlp_width, "text.mlp_width", 1, L["mlp_width"], source)
    _sane_int(cfg.vocab_size, "text.vocab_size", 3, L["vocab_size"], source)
    _sane_int(cfg.max_positions, "text.max_positions", 2, L["context_length"], source)
    _sane_int(cfg.type_vocab_size, "text.type_vocab_size", 1, 1024, source)
    _sane_int(cfg.context_length, "text.context_length", 3, cfg.max_positions, source)
    _sane_int(cfg.pad_token_id, "text.pad_token_id", 0, cfg.vocab_size - 1, source)
    _sane_float(cfg.layer_norm_eps, "text.layer_norm_eps", 1e-14, 1.0, source)
    if cfg.width % cfg.heads:
        raise CheckpointError(f"{source}: text.heads={cfg.heads} does not divide text.width={cfg.width}")
    if cfg.activation not in ("gelu", "quick_gelu", "gelu_tanh"):
        raise CheckpointError(f"{source}: text activation {str(cfg.activation)[:40]!r} is not supported")
    if cfg.positions not in ("absolute", "roberta") or cfg.pooling not in ("first", "mean"):
        raise CheckpointError(f"{source}: text positions {cfg.positions!r} / pooling {cfg.pooling!r} not supported")


HF_ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}


def hf_activation(name: object, where: str) -> str:
    """A transformers `hidden_act` as a clipforge Activation."""
    if name not in HF_ACTIVATIONS:
        raise CheckpointError(f"{where}: hidden_act {str(name)[:40]!r} is not supported ({sorted(HF_ACTIVATIONS)})")
    return HF_ACTIVATIONS[name]  # type: ignore[index]
