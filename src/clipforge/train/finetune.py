"""Fine-tuning helpers: LiT tower locking (Zhai et al. 2022) and WiSE-FT (Wortsman et al. 2022).

WiSE-FT: after fine-tuning, interpolate the weights, `(1 - alpha) * zero_shot + alpha * fine_tuned`.
It keeps most of the fine-tuned accuracy on the target task while recovering robustness under
distribution shift that plain fine-tuning loses; alpha = 0.5 is the paper's default. In clipforge it
is one setting (`wise_ft_alpha`, `--wise-ft`), and both endpoints are kept on disk.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

from clipforge.errors import InvalidInputError

# ClipModel's (and EVA02's, MobileCLIP's) text tower lives on the model itself (OpenAI's key layout);
# these are its parts. SigLIP, Chinese-CLIP and XLM-R CLIP hold theirs under `text` (+ `text_projection`).
TEXT_TOWER = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection", "text")
IMAGE_TOWER = ("visual",)


def tower_of(name: str) -> Optional[str]:
    """'image', 'text' or None (logit_scale, logit_bias) for a parameter name of any family's model."""
    root = name.split(".", 1)[0]
    if root in IMAGE_TOWER:
        return "image"
    if root in TEXT_TOWER:
        return "text"
    return None


def freeze_tower(model: nn.Module, tower: Optional[str]) -> list[str]:
    """Lock a tower (LiT: "image"; or "text"): requires_grad=False. Returns the frozen names.

    The trainer also keeps a frozen tower in eval mode (BatchNorm statistics of a ResNet must not
    move) and leaves its parameters out of the optimizer, so weight decay cannot touch them either.
    """
    if tower is None:
        return []
    if tower not in ("image", "text"):
        raise InvalidInputError(f"freeze must be 'image' or 'text', got {tower!r}")
    frozen = []
    for name, p in model.named_parameters():
        if tower_of(name) == tower:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def set_train_mode(model: nn.Module, frozen: Optional[str]) -> None:
    """model.train(), but a frozen tower stays in eval mode."""
    model.train()
    if frozen == "image":
        model.visual.eval()
    elif frozen == "text":
        for name in TEXT_TOWER:
            module = getattr(model, name, None)
            if isinstance(module, nn.Module):
                module.eval()


def wise_ft(
    original_state: Mapping[str, torch.Tensor], finetuned_state: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """Weight-space ensemble: `(1 - alpha) * original + alpha * finetuned`, key by key.

    alpha = 0 returns the original weights and alpha = 1 the fine-tuned ones, bit for bit.
    Non-floating tensors (none in a ClipModel) are taken from
    the fine-tuned state. The two states must have the same keys and shapes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InvalidInputError(f"alpha must be in [0, 1], got {alpha}")
    if set(original_state) != set(finetuned_state):
        missing = sorted(set(original_state) ^ set(finetuned_state))
        raise InvalidInputError(f"WiSE-FT needs the same keys in both states; these differ: {missing[:10]}")
    out = {}
    for key, tuned in finetuned_state.items():
        orig = original_state[key]
        if orig.shape != tuned.shape:
            raise InvalidInputError(f"WiSE-FT: {key} has shape {tuple(orig.shape)} vs {tuple(tuned.shape)}")
        if alpha == 0.0:  # the endpoints exactly, whatever the values (even inf/nan)
            out[key] = orig.to(device=tuned.device, dtype=tuned.dtype, copy=True)
        elif alpha == 1.0 or not tuned.is_floating_point():
            out[key] = tuned.clone()
        else:
            out[key] = torch.lerp(orig.to(device=tuned.device, dtype=tuned.dtype), tuned, alpha)
    return out
