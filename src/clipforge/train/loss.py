"""Contrastive losses: CLIP's symmetric InfoNCE (Radford et al. 2021) and SigLIP's sigmoid loss
(Zhai et al. 2023), single-process or across ranks.

Both take L2-normalized features and the *multiplier* `logit_scale` (already exponentiated, as
open_clip's losses do). Across ranks, features are gathered with gradients
(`distributed.gather_with_grad`) and each loss is scaled so that N processes with batch B give
exactly the gradients of one process with batch N*B once DDP averages them (see `_rank_weight`).

SigLIP's learnable logit bias: a SigLIP-family model (`SiglipModel`) has its own `logit_bias`
parameter, and that is the one trained (`SigLipLoss(bias_owner=model)`: the loss reads the model's
parameter and holds none itself), so the saved model scores with the bias it was trained with.
A CLIP-family model trained with the sigmoid loss has no bias: it then lives here, in the loss
module, as part of the training objective. Zero-shot classification and retrieval with a
softmax/argmax over cosine similarities are unchanged by an additive constant, and keeping it out
of the model keeps ClipModel's canonical (OpenAI) state-dict layout, so every converter and
checkpoint format stays valid for SigLIP-trained weights. It is saved in the training checkpoint.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.errors import InvalidInputError
from clipforge.train.distributed import DistInfo, gather_with_grad


def _rank_weight(local_rows: int, sizes: list[int], info: DistInfo) -> float:
    """Weight on a rank's local loss so that DDP's gradient average equals the global-batch loss.

    A local loss is a mean over this rank's rows; the global loss is a mean over all rows. DDP
    averages gradients over N ranks, so weight_r = N * rows_r / total makes
    (1/N) * sum_r weight_r * mean_r = sum_r sum_r / total: exact even when ranks hold different
    numbers of rows. With equal rows the weight is 1.
    """
    total = sum(sizes)
    return info.world_size * local_rows / total if total else 0.0


class ClipLoss(nn.Module):
    """Symmetric cross-entropy over image->text and text->image logits.

    local_loss=True (default): each rank computes its own rows against all gathered columns, with
    labels offset by the rows of the ranks before it (memory O(B * N*B) instead of O((N*B)^2)).
    local_loss=False: every rank computes the full (N*B)^2 loss; gradients then reach each rank
    N times through the gather, which DDP's average divides back out. Both are exact.
    """

    def __init__(self, local_loss: bool = True, dist: Optional[DistInfo] = None) -> None:
        super().__init__()
        self.local_loss = local_loss
        self.dist = dist or DistInfo()

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        detach_params: bool = False,  # unused (no parameters); same signature as SigLipLoss
    ) -> torch.Tensor:
        info = self.dist
        if not info.distributed:
            logits_per_image = logit_scale * image_features @ text_features.T  # [B, B]
            labels = torch.arange(image_features.shape[0], device=image_features.device)
            return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2

        all_images, sizes = gather_with_grad(image_features, info)
        all_texts, _ = gather_with_grad(text_features, info)
        if not self.local_loss:
            logits_per_image = logit_scale * all_images @ all_texts.T  # [N*B, N*B]
            labels = torch.arange(all_images.shape[0], device=all_images.device)
            return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2

        rows = image_features.shape[0]
        if rows == 0:  # nothing local (all samples bad): contribute zero, keep the graph connected
            return (all_images.sum() + all_texts.sum()) * 0.0 * logit_scale
        offset = sum(sizes[: info.rank])
        labels = torch.arange(offset, offset + rows, device=image_features.device)
        logits_per_image = logit_scale * image_features @ all_texts.T  # [B, N*B]
        logits_per_text = logit_scale * text_features @ all_images.T  # [B, N*B]
        loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
        return loss * _rank_weight(rows, sizes, info)


class SigLipLoss(nn.Module):
    """Pairwise sigmoid loss: -sum log sigmoid(z_ij * (t * x_i.y_j + b)) / B, z = +1 on pairs, -1 off.

    Holds the learnable bias `logit_bias` (init -10, as in the paper), or, with `bias_owner`
    (a model that has its own `logit_bias` parameter, SigLIP's), reads that one and holds no
    parameter. Across ranks each rank scores
    its own images against every rank's texts (gathered with gradients), which is open_clip's
    "gather" variant; the loss is a sum over pairs divided by the local batch, so it is
    weighted like ClipLoss's local loss.
    """

    def __init__(
        self, init_logit_bias: float = -10.0, dist: Optional[DistInfo] = None, bias_owner: Optional[nn.Module] = None
    ) -> None:
        super().__init__()
        if bias_owner is None:
            self.logit_bias = nn.Parameter(torch.tensor(float(init_logit_bias)))
        else:
            # A plain reference, not a submodule: the parameter stays the model's alone (one copy in the
            # optimizer, in the model's state dict, in DDP's buckets).
            self.__dict__["_bias_owner"] = bias_owner
        self.dist = dist or DistInfo()

    @property
    def bias(self) -> torch.Tensor:
        """The bias parameter in use: the model's `logit_bias`, or this module's own."""
        owner = self.__dict__.get("_bias_owner")
        return owner.logit_bias if owner is not None else self.logit_bias

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        detach_params: bool = False,  # gradient accumulation: the bias gets its gradient in one pass only
    ) -> torch.Tensor:
        info = self.dist
        bias = self.bias.detach() if detach_params else self.bias
        rows = image_features.shape[0]
        all_texts, sizes = gather_with_grad(text_features, info)
        if rows == 0:
            return (all_texts.sum() * 0.0) * logit_scale * bias
        offset = sum(sizes[: info.rank])
        logits = logit_scale * image_features @ all_texts.T + bias  # [B, N*B]
        labels = -torch.ones_like(logits)
        index = torch.arange(rows, device=logits.device)
        labels[index, index + offset] = 1.0
        loss = -F.logsigmoid(labels * logits).sum() / rows
        return loss * _rank_weight(rows, sizes, info) if info.distributed else loss


def build_loss(
    kind: str, *, local_loss: bool, dist: DistInfo, init_logit_bias: float = -10.0, model: Optional[nn.Module] = None
) -> nn.Module:
    """The loss module of `kind`. With `model` given and a sigmoid loss, a model that has its own
    `logit_bias` parameter (SigLIP) has that one trained; other models get the loss's own bias."""
    if kind == "clip":
        return ClipLoss(local_loss=local_loss, dist=dist)
    if kind == "siglip":
        owner = model if isinstance(getattr(model, "logit_bias", None), nn.Parameter) else None
        return SigLipLoss(init_logit_bias=init_logit_bias, dist=dist, bias_owner=owner)
    raise InvalidInputError(f"unknown loss {kind!r}: expected 'clip' or 'siglip'")
