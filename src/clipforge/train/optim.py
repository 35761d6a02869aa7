"""AdamW with the weight-decay rule stated once.

Rule: a parameter is decayed iff `p.dim() >= 2` and its name contains no "embedding".
So matrices and conv kernels (attention, MLP, projections, patch embedding conv) are decayed;
biases, LayerNorm/BatchNorm weights, the temperature `logit_scale` and SigLIP's `logit_bias`
(all dim < 2) are not, and neither are the token, positional and class embeddings (by name:
decaying them pulls rarely seen tokens toward zero for no regularisation benefit). This is
nanoGPT's `p.dim() >= 2` rule plus embeddings by name; open_clip's default rule decays embeddings.
Frozen parameters (requires_grad=False, e.g. a LiT-locked tower) are left out entirely.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from clipforge.errors import InvalidInputError


def decays(name: str, param: torch.Tensor) -> bool:
    return param.dim() >= 2 and "embedding" not in name


def param_groups(named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        (decay if decays(name, p) else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    named_params: Iterable[tuple[str, nn.Parameter]],
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
) -> torch.optim.AdamW:
    groups = [g for g in param_groups(named_params, weight_decay) if g["params"]]
    if not groups:
        raise InvalidInputError("no trainable parameters (is every tower frozen?)")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
