"""Evaluation: a split of an image–caption data set -> zero-shot and retrieval metrics -> a report.

`evaluate(model, preprocess, tokenizer, split_jsonl)` reads a split written by
`clipforge.datasets.openclipart.build` (or any JSONL of {"image", "caption", "label"} objects, image
paths relative to the file) and returns plain floats; `write_report` turns them (and a training
log) into markdown and plots. Metric definitions are in `clipforge.evaluation.metrics`.

Uses the public model API only (`encode_image`, `encode_text`) plus
`clipforge.tasks.zero_shot.build_classifier`, so it works on any CLIP-like module, e.g. a model
in the middle of training (its train/eval mode is restored afterwards).
"""

from clipforge.evaluation.evaluate import evaluate, read_split
from clipforge.evaluation.report import write_report

__all__ = ["evaluate", "read_split", "write_report"]
