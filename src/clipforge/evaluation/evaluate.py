"""`evaluate`: one split of an image–caption data set -> zero-shot and retrieval metrics (plain floats)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import torch

from clipforge.encoding import encode_images, encode_texts
from clipforge.errors import InvalidInputError
from clipforge.evaluation.metrics import retrieval_metrics, zero_shot_metrics

if TYPE_CHECKING:
    from clipforge.image import Preprocess

__all__ = ["evaluate", "read_split"]

PathLike = Union[str, "os.PathLike[str]"]


def read_split(split_jsonl: PathLike) -> list[dict[str, Any]]:
    """The records of a split table (JSONL/CSV/TSV; `clipforge.sources` column rule), each a dict with
    an absolute "image", a "caption" and its other columns ("label", ...). A benchmark must be whole:
    any unusable row is an error naming the line, not a skipped item."""
    from clipforge.sources import read_table

    records = []
    for item in read_table(split_jsonl):
        if item.problem is not None:
            raise InvalidInputError(item.problem)
        caption = item.caption[0] if isinstance(item.caption, tuple) else item.caption
        if item.path is None or caption is None:
            raise InvalidInputError(f"{item.where}: expected an image path and a caption")
        records.append({**item.fields, "image": item.path, "caption": caption})
    if not records:
        raise InvalidInputError(f"{split_jsonl}: no records")
    return records


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    preprocess: "Preprocess",
    tokenizer: Callable[[list[str]], torch.Tensor],
    split_jsonl: PathLike,
    classes_json: Optional[PathLike] = None,
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Zero-shot classification and image<->text retrieval on one split. Returns a flat dict of floats.

    Retrieval ("image_to_text_R@1/5/10", "text_to_image_R@1/5/10") runs over the split's pairs,
    one caption per image; identical captions are one text (so a duplicate caption is never
    counted as a wrong answer), and for text->image any image carrying that caption is right.
    Zero-shot ("zero_shot_top1", "zero_shot_top5") uses the images with a label >= 0, the class
    names and templates of `classes_json` (default: classes.json next to the split, when present;
    without one the zero-shot keys are left out), OpenAI's classifier recipe (`build_classifier`).
    "zero_shot_mean_per_class_top1" weighs every class the same (the classes are unbalanced).
    Chance levels: "zero_shot_chance" (= "zero_shot_chance_uniform", 1 / n_classes) and
    "zero_shot_chance_majority" (always answering the split's most frequent class).
    `preprocess` is the model's `Preprocess` (any callable PIL image -> [3, S, S] with an
    `image_size` attribute will do); images are decoded in `num_workers` DataLoader processes.
    Counts: "n_images" (images evaluated), "n_image_errors" (unreadable, skipped), "n_texts"
    (distinct captions), "zero_shot_n_images", "zero_shot_n_classes".
    """
    records = read_split(split_jsonl)
    if classes_json is None and (Path(split_jsonl).parent / "classes.json").is_file():
        classes_json = Path(split_jsonl).parent / "classes.json"
    classes = _read_classes(classes_json) if classes_json is not None else None

    was_training = model.training
    model.eval()
    try:
        image_features, kept = _encode_images(model, preprocess, [r["image"] for r in records], batch_size, num_workers, progress)
        n_errors = len(records) - len(kept)
        records = [records[i] for i in kept]
        if not records:
            raise InvalidInputError(f"{split_jsonl}: no image could be read")
        texts = sorted({r["caption"] for r in records})
        row_of = {text: i for i, text in enumerate(texts)}
        text_features = encode_texts(model, tokenizer, texts, batch_size=batch_size)
        text_index = torch.tensor([row_of[r["caption"]] for r in records], device=image_features.device)

        metrics: dict[str, float] = {}
        if classes is not None:
            metrics.update(_zero_shot(model, tokenizer, classes, records, image_features, batch_size, progress))
        metrics.update(retrieval_metrics(image_features, text_features, text_index))
        metrics["n_images"] = float(len(records))
        metrics["n_image_errors"] = float(n_errors)
        metrics["n_texts"] = float(len(texts))
        return metrics
    finally:
        model.train(was_training)


def _read_classes(path: PathLike) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    names = data.get("classnames")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise InvalidInputError(f"{path}: 'classnames' must be a non-empty list of strings")
    templates = data.get("templates") or ["{}"]
    return {"classnames": names, "templates": templates}


def _encode_images(
    model: torch.nn.Module, preprocess: "Preprocess", paths: list[str], batch_size: int, num_workers: int, progress: bool
) -> tuple[torch.Tensor, list[int]]:
    """(L2-normalized float32 features [n_ok, d], indices of the readable images); bad files are skipped."""
    encoded = encode_images(model, preprocess, paths, batch_size=batch_size, num_workers=num_workers,
                            progress=progress, desc="evaluating images")
    return encoded.features, encoded.indices


def _zero_shot(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classes: dict[str, Any],
    records: list[dict[str, Any]],
    image_features: torch.Tensor,
    batch_size: int,
    progress: bool,
) -> dict[str, float]:
    from clipforge.tasks.zero_shot import build_classifier

    n_classes = len(classes["classnames"])
    labels = torch.tensor([int(r.get("label", -1)) for r in records], dtype=torch.long)
    if int(labels.max()) >= n_classes:
        raise InvalidInputError(f"a label ({int(labels.max())}) is outside the {n_classes} classes of classes.json")
    labelled = (labels >= 0).nonzero().flatten()
    counts = {"zero_shot_n_images": float(len(labelled)), "zero_shot_n_classes": float(n_classes)}
    if len(labelled) == 0:
        return counts
    classifier = build_classifier(model, tokenizer, classes["classnames"], classes["templates"], batch_size=batch_size, progress=progress)
    logits = image_features[labelled.to(image_features.device)] @ classifier.weights.to(image_features.device)  # [n, n_classes]
    out = zero_shot_metrics(logits, labels[labelled].to(logits.device))
    out["zero_shot_chance"] = out["zero_shot_chance_uniform"]
    out.update(counts)
    return out
