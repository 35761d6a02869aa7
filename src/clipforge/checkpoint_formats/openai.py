"""OpenAI's layout (`clip.model.CLIP.state_dict()`): it *is* the canonical layout.

Only the wrinkles of OpenAI's released files are handled here.
"""

from __future__ import annotations

import torch

from ..configs import ClipConfig, ResNetConfig
from .errors import CheckpointError

# OpenAI's TorchScript archives register these ints as tensors on the top module; they are
# derivable from shapes and `clip.model.build_model` deletes them too.
JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def openai_to_canonical(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {k: v for k, v in state_dict.items() if k not in JIT_EXTRAS}
    scale = out.get("logit_scale")
    if scale is not None and tuple(scale.shape) == (1,):
        # Briefly-released archives (openai/CLIP#66) stored logit_scale as [1]; canonical is a scalar.
        out["logit_scale"] = scale.reshape(())
    return out


def canonical_to_openai(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(state_dict)


def check_openai_representable(cfg: ClipConfig) -> None:
    """Refuse configs that OpenAI's `build_model` would silently rebuild differently.

    An OpenAI-format file stores no config: build_model assumes 64-wide heads, QuickGELU, LayerNorm
    eps 1e-5 and argmax pooling (end-of-text is the largest token id).
    """
    v, t = cfg.vision, cfg.text
    vision_heads = v.width * 32 // 64 if isinstance(v, ResNetConfig) else v.width // 64
    problems = []
    if v.heads != vision_heads:
        problems.append(f"vision heads {v.heads} (build_model would use {vision_heads})")
    if t.heads != t.width // 64:
        problems.append(f"text heads {t.heads} (build_model would use {t.width // 64})")
    if not isinstance(v, ResNetConfig) and v.mlp_width != 4 * v.width:
        problems.append(f"vision MLP width {v.mlp_width} (build_model uses 4 x width)")
    if t.mlp_width != 4 * t.width:
        problems.append(f"text MLP width {t.mlp_width} (build_model uses 4 x width)")
    if cfg.activation != "quick_gelu":
        problems.append(f"activation {cfg.activation!r} (OpenAI's model is QuickGELU)")
    if cfg.layer_norm_eps != 1e-5:
        problems.append(f"layer_norm_eps {cfg.layer_norm_eps} (OpenAI's model uses 1e-5)")
    if t.eot_token_id != t.vocab_size - 1:
        problems.append(f"eot_token_id {t.eot_token_id} is not the largest id (OpenAI pools at argmax)")
    if problems:
        raise CheckpointError(
            "the 'openai' format stores no config and OpenAI's loader would rebuild this model "
            "differently: " + "; ".join(problems) + ". Write format 'clipforge' (config included), "
            "'hf' or 'open_clip' instead."
        )
