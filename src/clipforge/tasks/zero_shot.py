"""Zero-shot classification: labels -> text-embedding classifier -> label probabilities for images.

The procedure is OpenAI's ("Prompt_Engineering_for_ImageNet" notebook, `zeroshot_classifier`):
for each label, format every template with it, embed the texts, L2-normalize each embedding, take
their mean and L2-normalize again. The classifier is the [embed_dim, n_labels] matrix of those
columns. Images are scored with the model's own `probabilities` (for CLIP, a softmax over the labels
of exp(logit_scale) x cosine: the temperature the model learned; OpenAI's notebook writes a fixed
100, which is where the released models' temperature ended up, so the numbers agree for them, while
a model that learned 17 is not made to look 100% sure of every answer).

Uses only the public model API (`encode_text`, `encode_image`, `probabilities`) and a tokenizer.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from clipforge.encoding import encode_pixels, encode_texts, model_device
from clipforge.errors import InvalidInputError
from clipforge.tasks.templates import TEMPLATE_SETS

__all__ = ["ZeroShotClassifier", "build_classifier", "classify", "model_templates", "probabilities", "resolve_templates"]

# Written into saved files so that a wrong file is recognised instead of misread.
_FORMAT = "clipforge.zero_shot_classifier"
_FORMAT_VERSION = "1"

Templates = Union[str, Sequence[str]]
PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class ZeroShotClassifier:
    """Per-label text embeddings: `weights` [embed_dim, n_labels], column j for `labels[j]`.

    `templates` are the prompt templates the weights were averaged over (kept so a saved
    classifier says how it was made).
    """

    weights: torch.Tensor
    labels: list[str]
    templates: list[str]

    def __post_init__(self) -> None:
        if self.weights.dim() != 2 or self.weights.shape[1] != len(self.labels):
            raise InvalidInputError(
                f"weights must be [embed_dim, n_labels={len(self.labels)}], got shape {tuple(self.weights.shape)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def embed_dim(self) -> int:
        return self.weights.shape[0]

    def to(self, device: Union[str, torch.device, None] = None, dtype: Optional[torch.dtype] = None) -> "ZeroShotClassifier":
        return ZeroShotClassifier(self.weights.to(device=device, dtype=dtype), list(self.labels), list(self.templates))

    def save(self, path: PathLike) -> Path:
        """Write the classifier. `.pt`/`.pth`/`.bin` -> a torch file of tensors and strings only
        (readable with `weights_only=True`); anything else -> safetensors with labels and templates
        as JSON metadata."""
        path = Path(path)
        weights = self.weights.detach().cpu().float().contiguous()
        if path.suffix in (".pt", ".pth", ".bin"):
            torch.save(
                {"format": _FORMAT, "version": _FORMAT_VERSION, "weights": weights,
                 "labels": list(self.labels), "templates": list(self.templates)},
                path,
            )
        else:
            from safetensors.torch import save_file

            metadata = {
                "format": _FORMAT,
                "version": _FORMAT_VERSION,
                "labels": json.dumps(list(self.labels), ensure_ascii=False),
                "templates": json.dumps(list(self.templates), ensure_ascii=False),
            }
            save_file({"weights": weights}, str(path), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: PathLike) -> "ZeroShotClassifier":
        """Read a file written by `save` (either kind, told apart by content). Never executes code:
        safetensors is plain data and torch files are read with `weights_only=True`."""
        path = Path(path)
        if not path.is_file():  # a named pipe or a device would block the read forever
            raise InvalidInputError(f"{path}: not a regular file (a saved classifier is a .safetensors or .pt file)")
        with open(path, "rb") as f:
            head = f.read(4)
        if head.startswith(b"PK"):  # torch.save's zip container
            try:
                raw = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # pickle.UnpicklingError and friends: report, never fall back to full unpickling
                raise InvalidInputError(f"{path}: not a readable classifier file ({type(e).__name__}: {e})") from None
            if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
                raise InvalidInputError(f"{path}: not a clipforge zero-shot classifier file")
            weights, labels, templates = raw["weights"], raw["labels"], raw["templates"]
        else:
            from safetensors import SafetensorError, safe_open

            try:
                with safe_open(str(path), framework="pt") as f:
                    metadata = f.metadata() or {}
                    if metadata.get("format") != _FORMAT:
                        raise InvalidInputError(f"{path}: not a clipforge zero-shot classifier file")
                    weights = f.get_tensor("weights")
            except SafetensorError as e:
                raise InvalidInputError(f"{path}: not a readable classifier file ({e})") from None
            labels, templates = json.loads(metadata["labels"]), json.loads(metadata["templates"])
        if not isinstance(weights, torch.Tensor) or not _all_str(labels) or not _all_str(templates):
            raise InvalidInputError(f"{path}: malformed classifier file")
        return cls(weights, list(labels), list(templates))


def _all_str(items: object) -> bool:
    return isinstance(items, list) and all(isinstance(x, str) for x in items)


def resolve_templates(templates: Templates) -> list[str]:
    """A template list from a name ("openai", "simple", "none"), one template str, or a sequence.

    Every template must be a `str.format` string with exactly one `{}`: a template without it
    would give every label the same text, and other fields would fail at format time.
    """
    if isinstance(templates, str):
        templates = TEMPLATE_SETS[templates] if templates in TEMPLATE_SETS else [templates]
    templates = list(templates)
    if not templates:
        raise InvalidInputError("templates is empty")
    for t in templates:
        if not isinstance(t, str):
            raise TypeError(f"templates must be strings, got {type(t).__name__}")
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(t) if name is not None]
        except ValueError as e:
            raise InvalidInputError(f"template {t!r} is not a valid format string: {e}") from None
        if fields != [""]:
            raise InvalidInputError(f"template {t!r} must contain exactly one '{{}}' for the label (e.g. 'a photo of a {{}}.')")
    return templates


def model_templates(model: torch.nn.Module) -> str:
    """The name of the template set a model's record asks for (OpenAI's when it names none)."""
    record = getattr(model, "record", None)
    name = getattr(getattr(record, "tokenizer", None), "prompt_templates", "openai")
    if name not in TEMPLATE_SETS:
        raise InvalidInputError(f"the model's record names template set {name!r}; known: {', '.join(TEMPLATE_SETS)}")
    return name


@torch.no_grad()
def build_classifier(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    labels: Sequence[str],
    templates: Optional[Templates] = None,
    batch_size: int = 256,
    progress: bool = True,
) -> ZeroShotClassifier:
    """Embed `labels` x `templates` with the model's text tower and average per label (OpenAI's recipe).

    `templates` None: the set the model's record names (`record.tokenizer.prompt_templates`: OpenAI's
    80 English templates for CLIP, Chinese ones for Chinese-CLIP), so labels and prompts share a language.

    Texts of all labels are encoded together, `batch_size` at a time (per-row results do not depend
    on the batching). The returned weights are float32 on the model's device.
    """
    labels = [str(label) for label in labels]
    if not labels:
        raise InvalidInputError("labels is empty")
    if len(set(labels)) != len(labels):
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        raise InvalidInputError(f"duplicate labels: {duplicates}")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    templates = resolve_templates(model_templates(model) if templates is None else templates)
    texts = [t.format(label) for label in labels for t in templates]  # label-major: [label0 x templates, ...]

    per_text = encode_texts(model, tokenizer, texts, batch_size=batch_size, progress=progress, desc="encoding label texts")
    per_text = per_text.view(len(labels), len(templates), -1)  # [n_labels, n_templates, embed_dim]
    weights = F.normalize(per_text.mean(dim=1), dim=-1).t().contiguous()  # [embed_dim, n_labels]
    return ZeroShotClassifier(weights, labels, templates)


@torch.no_grad()
def classify(
    model: torch.nn.Module,
    classifier: ZeroShotClassifier,
    pixels: torch.Tensor,
    top_k: int = 5,
) -> list[list[tuple[str, float]]]:
    """Top-k `(label, probability)` per image of `pixels` [n, 3, S, S], most probable first.

    Probabilities are the model's own (`model.probabilities`: for CLIP a softmax over all labels at
    the learned temperature); `top_k` is capped at the number of labels.
    """
    probs = probabilities(model, classifier, pixels)
    k = max(1, min(top_k, len(classifier)))
    values, indices = probs.topk(k, dim=-1)
    return [
        [(classifier.labels[j], float(p)) for p, j in zip(row_values.tolist(), row_indices.tolist())]
        for row_values, row_indices in zip(values, indices)
    ]


@torch.no_grad()
def probabilities(model: torch.nn.Module, classifier: ZeroShotClassifier, pixels: torch.Tensor) -> torch.Tensor:
    """[n_images, n_labels] label probabilities (float32, on the model's device)."""
    if pixels.dim() != 4:
        raise InvalidInputError(f"pixels must be [batch, 3, S, S], got shape {tuple(pixels.shape)}")
    device = model_device(model)
    features = encode_pixels(model, pixels)  # [n, embed_dim] float32, normalized
    if features.shape[-1] != classifier.embed_dim:
        raise InvalidInputError(
            f"the classifier was built for embeddings of size {classifier.embed_dim}, "
            f"the model makes {features.shape[-1]}: build it with this model"
        )
    return model.probabilities(features, classifier.weights.to(device=device, dtype=torch.float32).t()).float()
