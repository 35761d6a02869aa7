"""Retrieval and classification metrics as pure tensor functions (no models, no files).

Conventions, chosen so a broken model can never look good:
- Ties count against the query: a query's rank is the number of wrong candidates scoring
  *at least as high* as its best correct one. A collapsed model (all embeddings equal) therefore
  gets recall 0 rather than 1 (with `argsort`, ties would be broken by index order, in its favour).
- NaN scores never help: a NaN correct score is a miss, a NaN wrong score outranks the correct one.
- A query may have several correct candidates (e.g. two images with the same caption); it is a hit
  when any of them is in the top k.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from clipforge.errors import InvalidInputError

__all__ = [
    "ranks",
    "recall_at_k",
    "topk_accuracy",
    "mean_per_class_accuracy",
    "retrieval_metrics",
    "zero_shot_metrics",
    "chance_levels",
]

# Queries ranked per chunk, so memory stays at chunk x n_candidates whatever the number of queries.
_CHUNK = 1024


def ranks(similarity: torch.Tensor, positives: Optional[torch.Tensor] = None) -> torch.Tensor:
    """0-based rank of each query's best correct candidate: [n_queries] int64 (0 = retrieved first).

    similarity: [n_queries, n_candidates] scores, higher = better.
    positives: which candidates are correct, as an int64 [n_queries] (one column index per query),
        a bool [n_queries, n_candidates] mask, or None for the diagonal (query i <-> candidate i).
    A query whose correct score is NaN gets rank n_candidates (never a hit).
    """
    if similarity.dim() != 2:
        raise InvalidInputError(f"similarity must be [n_queries, n_candidates], got shape {tuple(similarity.shape)}")
    n_queries, n_candidates = similarity.shape
    mask = _positive_mask(positives, n_queries, n_candidates, similarity.device)
    if not bool(mask.any(dim=1).all()):
        raise InvalidInputError("every query needs at least one correct candidate")
    out = torch.empty(n_queries, dtype=torch.long, device=similarity.device)
    for start in range(0, n_queries, _CHUNK):
        scores = similarity[start : start + _CHUNK].float()
        pos = mask[start : start + _CHUNK]
        best = scores.masked_fill(~pos, float("-inf")).max(dim=1).values  # [chunk]; NaN if a correct score is NaN
        beaten_by = ((scores >= best[:, None]) | scores.isnan()) & ~pos  # [chunk, n_candidates]
        chunk_ranks = beaten_by.sum(dim=1)
        chunk_ranks[best.isnan()] = n_candidates
        out[start : start + _CHUNK] = chunk_ranks
    return out


def recall_at_k(similarity: torch.Tensor, k: int, positives: Optional[torch.Tensor] = None) -> float:
    """Fraction of queries with a correct candidate among the top k (see `ranks` for `positives`)."""
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    return float((ranks(similarity, positives) < k).float().mean())


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Classification accuracy: the true class among the k highest logits. logits [n, n_classes], labels [n]."""
    return recall_at_k(logits, k, labels.long())


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_index: Optional[torch.Tensor] = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Image->text and text->image recall@k from L2-normalized features (cosine similarity).

    image_features [n_images, d]; text_features [n_texts, d]; text_index [n_images]: the row of
    `text_features` that is image i's caption (None: row i, one caption per image). Several images
    may share one text (identical captions): for text->image, any of them is a correct answer.
    Keys: "image_to_text_R@k", "text_to_image_R@k" for each k.
    """
    n_images, n_texts = image_features.shape[0], text_features.shape[0]
    if text_index is None:
        if n_images != n_texts:
            raise InvalidInputError(f"{n_images} images but {n_texts} texts: pass text_index to pair them")
        text_index = torch.arange(n_images)
    text_index = text_index.to(image_features.device).long()
    similarity = image_features.float() @ text_features.float().t()  # [n_images, n_texts]
    # [n_texts, n_images]: text t is answered by every image whose caption is t.
    text_to_images = text_index[None, :] == torch.arange(n_texts, device=text_index.device)[:, None]
    i2t = ranks(similarity, text_index)
    t2i = ranks(similarity.t(), text_to_images)
    out = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = float((i2t < k).float().mean())
    for k in ks:
        out[f"text_to_image_R@{k}"] = float((t2i < k).float().mean())
    return out


def chance_levels(labels: torch.Tensor, n_classes: int) -> tuple[float, float]:
    """(uniform, majority): 1 / n_classes, and the accuracy of always answering the most frequent label."""
    if n_classes < 1:
        raise InvalidInputError(f"n_classes must be >= 1, got {n_classes}")
    if labels.numel() == 0:
        return 1.0 / n_classes, 0.0
    counts = torch.bincount(labels.long().flatten(), minlength=n_classes)
    return 1.0 / n_classes, float(counts.max()) / labels.numel()


def mean_per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy averaged over the classes present in `labels` (each class weighs the same).

    With unbalanced classes plain accuracy rewards predicting the big ones; this does not.
    """
    if labels.numel() == 0:
        return 0.0
    hits = (ranks(logits, labels.long()) == 0).float()
    per_class = [hits[labels == c].mean() for c in labels.unique()]
    return float(torch.stack(per_class).mean())


def zero_shot_metrics(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """{"zero_shot_top{k}", "zero_shot_mean_per_class_top1", "zero_shot_chance_uniform",
    "zero_shot_chance_majority"} from [n, n_classes] logits and [n] labels.

    top-k for k >= n_classes is 1 by definition; it is still reported, so keys do not depend on the data.
    """
    if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
        raise InvalidInputError(f"logits must be [n, n_classes] matching labels [n], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    n_classes = logits.shape[1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise InvalidInputError(f"labels must lie in [0, {n_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    uniform, majority = chance_levels(labels, n_classes)
    out = {f"zero_shot_top{k}": topk_accuracy(logits, labels, k) for k in ks}
    out["zero_shot_mean_per_class_top1"] = mean_per_class_accuracy(logits, labels)
    out["zero_shot_chance_uniform"] = uniform
    out["zero_shot_chance_majority"] = majority
    return out


def _positive_mask(positives: Optional[torch.Tensor], n_queries: int, n_candidates: int, device: torch.device) -> torch.Tensor:
    if positives is None:
        if n_queries > n_candidates:
            raise InvalidInputError(f"diagonal positives need n_queries <= n_candidates, got {n_queries} x {n_candidates}")
        positives = torch.arange(n_queries, device=device)
    positives = positives.to(device)
    if positives.dtype == torch.bool:
        if positives.shape != (n_queries, n_candidates):
            raise InvalidInputError(f"positive mask must be [{n_queries}, {n_candidates}], got {tuple(positives.shape)}")
        return positives
    if positives.shape != (n_queries,):
        raise InvalidInputError(f"positive indices must be [{n_queries}], got {tuple(positives.shape)}")
    if n_queries and (int(positives.min()) < 0 or int(positives.max()) >= n_candidates):
        raise InvalidInputError(f"positive indices must lie in [0, {n_candidates})")
    mask = torch.zeros(n_queries, n_candidates, dtype=torch.bool, device=device)
    mask[torch.arange(n_queries, device=device), positives.long()] = True
    return mask
