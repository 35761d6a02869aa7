"""Learning-rate schedule: linear warm-up, then cosine decay to `min_lr` (or constant).

The rate is a pure function of the step (as open_clip's `cosine_lr`), so the schedule's only state
is the step counter, stored in the checkpoint; resuming cannot drift.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from clipforge.errors import InvalidInputError


class LRSchedule:
    def __init__(
        self, base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0, kind: str = "cosine"
    ) -> None:
        if kind not in ("cosine", "constant"):
            raise InvalidInputError(f"unknown schedule {kind!r}: expected 'cosine' or 'constant'")
        self.base_lr = base_lr
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)
        self.min_lr = min_lr
        self.kind = kind
        self.step = 0  # optimizer steps taken so far

    def lr_at(self, step: int) -> float:
        """Learning rate for optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps  # never 0: the first step moves
        if self.kind == "constant":
            return self.base_lr
        decay_steps = self.total_steps - self.warmup_steps
        progress = min((step - self.warmup_steps) / decay_steps, 1.0) if decay_steps > 0 else 1.0
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.base_lr - self.min_lr)

    def apply(self, optimizer: torch.optim.Optimizer) -> float:
        """Set the rate for the next step on every parameter group; returns it."""
        lr = self.lr_at(self.step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def advance(self) -> None:
        self.step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "min_lr": self.min_lr, "kind": self.kind}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
