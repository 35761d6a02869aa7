"""Checks on the values of a canonical state dict before it becomes a model.

Key names and shapes are checked by `check_config`; this checks what they hold: every weight a
real floating-point tensor (an integer "weight" would fail deep inside `load_state_dict`), and no
NaN or Inf anywhere (a model with one NaN weight answers NaN for every input, silently).
"""

from __future__ import annotations

import math

import torch

from .errors import CheckpointError

_FP32_MAX = torch.finfo(torch.float32).max
_INTEGER_KEYS = ("num_batches_tracked",)  # BatchNorm's step counter is the one integer buffer


class NonFiniteWeightsError(CheckpointError):
    """A checkpoint whose weights hold NaN or Inf (or float64 values beyond float32's range)."""


def check_weights(state_dict: dict[str, torch.Tensor], source: str, allow_nonfinite: bool = False) -> None:
    """Raise `CheckpointError` for a tensor of the wrong kind of dtype, and `NonFiniteWeightsError`
    for NaN / Inf values (naming the first tensors and how many of each) unless `allow_nonfinite`.

    About one read of the weights (a sum per tensor; ~0.1 s for ViT-B/32 on one core); an exact
    count only for tensors whose sum is not finite.
    """
    bad: list[str] = []
    n_bad = 0
    for key, t in state_dict.items():
        if t.device.type == "meta":
            continue  # left unread (a one-tower read): no values to check
        if key.endswith(_INTEGER_KEYS):
            if t.is_complex() or t.dtype == torch.bool:
                raise CheckpointError(f"{source}: tensor '{key}' has dtype {t.dtype}; expected an integer or float")
            continue
        if not t.is_floating_point():
            raise CheckpointError(
                f"{source}: tensor '{key}' has dtype {t.dtype}; CLIP weights are floating point"
            )
        if allow_nonfinite or t.numel() == 0:
            continue
        # Fast path, one read of the tensor: a sum is finite only if every term is (a NaN or an
        # Inf makes it NaN or Inf). A finite tensor whose sum overflows takes the exact path.
        if t.dtype != torch.float64 and math.isfinite(float(t.sum(dtype=torch.float32))):
            continue
        finite = torch.isfinite(t)
        if t.dtype == torch.float64:  # becomes Inf when the model converts it to float32
            finite &= t.abs() <= _FP32_MAX
        if bool(finite.all()):
            continue
        n_bad += 1
        if len(bad) < 5:
            nan = int(torch.isnan(t).sum())
            bad.append(f"'{key}' ({nan:,} NaN, {t.numel() - int(finite.sum()) - nan:,} Inf of {t.numel():,})")
    if n_bad:
        raise NonFiniteWeightsError(
            f"{source}: non-finite weights in {n_bad} tensor{'s' if n_bad > 1 else ''}: {', '.join(bad)}"
            f"{', ...' if n_bad > len(bad) else ''}; refused (a model with a NaN weight outputs NaN). "
            "Pass allow_nonfinite=True to load it anyway"
        )
