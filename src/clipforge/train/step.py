"""One optimizer step's computation: the model and loss as one module, and the forward/backward
over micro-batches that makes them ONE contrastive batch.

Across ranks, features are gathered with gradients (loss.py, distributed.py). Across micro-batches,
`forward_backward` first computes every micro-batch's features without gradients, then re-runs each
micro-batch with gradients and puts its fresh features into the cached full set before computing
the loss (open_clip's accum_freq). The temperature (and SigLIP's bias) take their gradient from one
of those passes only; open_clip adds it k times. Both equivalences hold to float rounding and are
tested (tests/test_train_equivalence.py).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

import torch
from torch import nn

__all__ = ["TrainModule", "forward_backward", "autocast_factory"]


class TrainModule(nn.Module):
    """The model (any family) and the loss's parameters under one module, so DDP also averages
    the sigmoid loss's own bias (a SigLIP model's bias is the model's, already under it).

    forward returns L2-normalized image and text features and the temperature multiplier
    exp(logit_scale). An empty micro-batch (all its samples were bad) runs one dummy row and
    returns zero rows, so every rank still takes part in the same collectives and backward.
    """

    def __init__(self, model: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = images.shape[0]
        if rows == 0:
            images = images.new_zeros((1,) + tuple(images.shape[1:]))
            text_cfg = self.model.config.text
            if hasattr(text_cfg, "sot_token_id"):  # CLIP's BPE: start, end, padding
                texts = texts.new_zeros((1, texts.shape[1]))
                texts[0, 0], texts[0, 1] = text_cfg.sot_token_id, text_cfg.eot_token_id
            else:  # other tokenizers: the model's own example ids (a fixed generator: global RNG untouched)
                texts = self.model.example_tokens(1, generator=torch.Generator().manual_seed(0)).to(texts.device)
        image_features = self.model.encode_image(images, normalize=True)[:rows]
        text_features = self.model.encode_text(texts, normalize=True)[:rows]
        return image_features, text_features, self.model.logit_scale.exp()


def forward_backward(
    module: nn.Module,
    loss_fn: nn.Module,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    scaler: Optional[torch.amp.GradScaler] = None,
) -> torch.Tensor:
    """Accumulate into `.grad` the gradients of the loss over all micro-batches as one batch.

    `module` is a TrainModule, possibly wrapped in DistributedDataParallel (then gradients are
    synchronised once, in the last pass). The loss is computed in fp32 outside autocast.
    Returns this rank's loss (detached; with a local loss it is weighted, see loss.py).
    """
    ddp = isinstance(module, nn.parallel.DistributedDataParallel)

    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward()

    if len(micro_batches) == 1:
        images, texts = micro_batches[0]
        with autocast():
            image_features, text_features, scale = module(images, texts)
        loss = loss_fn(image_features.float(), text_features.float(), scale.float())
        backward(loss)
        return loss.detach()

    # Pass 1: every micro-batch's features, no graph kept.
    with torch.no_grad():
        cached = []
        for images, texts in micro_batches:
            with autocast():
                image_features, text_features, _ = module(images, texts)
            cached.append((image_features.float(), text_features.float()))
    # Pass 2: per micro-batch, fresh features (with graph) in place of the cached ones.
    last = len(micro_batches) - 1
    for j, (images, texts) in enumerate(micro_batches):
        sync = module.no_sync() if (ddp and j < last) else contextlib.nullcontext()
        with sync:
            with autocast():
                image_features, text_features, scale = module(images, texts)
            if j < last:
                scale = scale.detach()  # the temperature's gradient is taken once, in the last pass
            all_images = torch.cat([c[0] for c in cached[:j]] + [image_features.float()] + [c[0] for c in cached[j + 1:]])
            all_texts = torch.cat([c[1] for c in cached[:j]] + [text_features.float()] + [c[1] for c in cached[j + 1:]])
            loss = loss_fn(all_images, all_texts, scale.float(), detach_params=j < last)
            backward(loss)
    return loss.detach()


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
