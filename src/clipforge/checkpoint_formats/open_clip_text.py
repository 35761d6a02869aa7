"""What EVA02-CLIP and MobileCLIP (open_clip's CustomTextCLIP families) share: open_clip's standard
text tower, in CLIP's canonical names. Its shapes, limits, shape inference, its open_clip config,
and the key/shape comparison every family's `check_config` ends with.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..configs import TextConfig
from .errors import CheckpointError
from .infer_config import _sane_int, _transformer_shapes, mlp_ratio_for

StateDict = dict[str, torch.Tensor]
Shape = tuple[int, ...]

# open_clip text_cfg fields that change nothing clipforge models (tokenizer, training-only settings).
NEUTRAL_OPEN_CLIP_TEXT = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "hf_tokenizer_name",
                          "tokenizer_kwargs", "pad_id", "eos_id", "output_tokens"}


def text_shapes(t: TextConfig, embed_dim: int) -> dict[str, Shape]:
    """CLIP's text tower and logit_scale, canonical names."""
    out: dict[str, Shape] = {
        "positional_embedding": (t.context_length, t.width),
        "text_projection": (t.width, embed_dim),
        "logit_scale": (),
    }
    out.update(_transformer_shapes("", t.width, t.layers, t.mlp_width))
    out["token_embedding.weight"] = (t.vocab_size, t.width)
    out["ln_final.weight"] = (t.width,)
    out["ln_final.bias"] = (t.width,)
    return out


def check_text_limits(t: Any, source: str) -> None:
    if not isinstance(t, TextConfig):
        raise CheckpointError(f"{source}: text is a {type(t).__name__}, not a text config")
    for name, high in (("layers", 4096), ("width", 2**16), ("heads", 2**12), ("context_length", 2**16),
                       ("vocab_size", 2**24)):
        _sane_int(getattr(t, name), f"text.{name}", 1, high, source)
    _sane_int(t.mlp_width, "text MLP width", 1, 2**20, source)
    for name in ("sot_token_id", "eot_token_id", "pad_token_id"):
        _sane_int(getattr(t, name), f"text.{name}", 0, t.vocab_size - 1, source)
    if t.width % t.heads:
        raise CheckpointError(f"{source}: text.heads={t.heads} does not divide text.width={t.width}")


def layer_count(state_dict: StateDict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state_dict if (m := pattern.match(k))})


def compare_shapes(state_dict: StateDict, expected: dict[str, Shape], name: str) -> None:
    """Raise CheckpointError unless `state_dict` has exactly the `expected` keys and shapes."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    problems = []
    for key, shape in expected.items():
        if key in state_dict and tuple(state_dict[key].shape) != shape:
            problems.append(f"first shape mismatch: '{key}' has shape {tuple(state_dict[key].shape)} in the "
                            f"checkpoint but {shape} in {name}")
            break
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:20]}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected[:20]}")
    if problems:
        raise CheckpointError("state dict does not match the config: " + "; ".join(problems))


def require(state_dict: StateDict, key: str) -> torch.Tensor:
    if key not in state_dict:
        raise CheckpointError(f"cannot infer the config: canonical key '{key}' is missing")
    return state_dict[key]


def infer_text_config(state_dict: StateDict) -> TextConfig:
    """CLIP's text tower off its shapes: heads width // 64, CLIP's BPE special tokens (the last two ids)."""
    context, width = require(state_dict, "positional_embedding").shape
    vocab = require(state_dict, "token_embedding.weight").shape[0]
    mlp = require(state_dict, "transformer.resblocks.0.mlp.c_fc.weight").shape[0]
    return TextConfig(context_length=context, vocab_size=vocab, width=width, heads=max(1, width // 64),
                      layers=layer_count(state_dict, "transformer.resblocks."), mlp_ratio=mlp_ratio_for(width, mlp),
                      sot_token_id=vocab - 2, eot_token_id=vocab - 1)


def text_config_from_open_clip(tcfg: dict[str, Any], neutral: set[str] = NEUTRAL_OPEN_CLIP_TEXT) -> TextConfig:
    odd = [f"text_cfg.{k}" for k, v in tcfg.items() if k not in neutral and not (k == "pool_type" and v == "argmax")
           and v not in (None, False)]
    if odd:
        raise CheckpointError(f"open_clip config fields clipforge does not support: {sorted(odd)}")
    vocab = tcfg.get("vocab_size", 49408)
    return TextConfig(
        context_length=tcfg.get("context_length", 77), vocab_size=vocab, width=tcfg.get("width", 512),
        heads=tcfg.get("heads", 8), layers=tcfg.get("layers", 12), mlp_ratio=tcfg.get("mlp_ratio", 4.0),
        sot_token_id=vocab - 2, eot_token_id=vocab - 1, pad_token_id=tcfg.get("pad_id", 0),
    )
