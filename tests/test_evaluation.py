"""Evaluation: metrics on hand-made similarity matrices, `evaluate` on a tiny random model and on a
model built to be perfect, the report with training curves, and the `clipforge evaluate` command."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipforge
from clipforge.configs import (
    ClipConfig,
    PreprocessConfig,
    TextConfig,
    VisionTransformerConfig,
)
from clipforge.evaluation import evaluate, read_split, write_report
from clipforge.evaluation.metrics import (
    chance_levels,
    mean_per_class_accuracy,
    ranks,
    recall_at_k,
    retrieval_metrics,
    topk_accuracy,
    zero_shot_metrics,
)
from clipforge.image import Preprocess
from clipforge.models import ClipModel
from clipforge.text import Tokenizer

RETRIEVAL_KEYS = [f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)]
ZERO_SHOT_KEYS = ["zero_shot_top1", "zero_shot_top5", "zero_shot_mean_per_class_top1", "zero_shot_chance",
                  "zero_shot_chance_uniform", "zero_shot_chance_majority"]


# ---- metrics ----------------------------------------------------------------------------------------


def test_recall_on_hand_made_matrices():
    assert recall_at_k(torch.eye(4), 1) == 1.0
    # Query 0's answer is 3rd, query 1's 1st, query 2's 2nd.
    sim = torch.tensor([[0.1, 0.9, 0.5], [0.0, 1.0, 0.2], [0.3, 0.8, 0.7]])
    assert ranks(sim, torch.tensor([0, 1, 2])).tolist() == [2, 0, 1]
    assert recall_at_k(sim, 1, torch.tensor([0, 1, 2])) == pytest.approx(1 / 3)
    assert recall_at_k(sim, 2, torch.tensor([0, 1, 2])) == pytest.approx(2 / 3)
    assert recall_at_k(sim, 3, torch.tensor([0, 1, 2])) == 1.0
    # None = the diagonal: the same as the explicit indices above.
    assert recall_at_k(sim, 2) == recall_at_k(sim, 2, torch.tensor([0, 1, 2]))
    # Reversed order of a perfect matrix: everything is last.
    assert ranks(-torch.eye(5) + 1).tolist() == [4] * 5


def test_ties_and_nans_count_against_the_query():
    assert recall_at_k(torch.ones(4, 4), 1) == 0.0  # a collapsed model is not perfect
    assert recall_at_k(torch.ones(4, 4), 4) == 1.0
    sim = torch.eye(3)
    sim[0, 0] = float("nan")
    sim[1, 2] = float("nan")
    assert ranks(sim).tolist() == [3, 1, 0]


def test_several_correct_candidates():
    sim = torch.tensor([[0.9, 0.5, 0.8, 0.1]])
    assert ranks(sim, torch.tensor([[False, False, True, True]])).tolist() == [1]  # best correct one (0.8) is 2nd
    with pytest.raises(ValueError, match="at least one correct"):
        ranks(sim, torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError):
        ranks(torch.ones(3))


def test_topk_accuracy_and_chance():
    logits = torch.tensor([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0], [1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])
    labels = torch.tensor([0, 0, 2, 0])
    assert topk_accuracy(logits, labels, 1) == 0.5
    assert topk_accuracy(logits, labels, 2) == 0.75
    assert chance_levels(labels, 3) == (pytest.approx(1 / 3), 0.75)
    # Per class: class 0 gets 2 of 3 right, class 2 gets 0 of 1 -> (2/3 + 0) / 2.
    assert mean_per_class_accuracy(logits, labels) == pytest.approx(1 / 3)
    out = zero_shot_metrics(logits, labels)
    assert out["zero_shot_top1"] == 0.5 and out["zero_shot_top5"] == 1.0  # k >= classes: 1 by definition
    assert out["zero_shot_mean_per_class_top1"] == pytest.approx(1 / 3)
    assert out["zero_shot_chance_majority"] == 0.75
    with pytest.raises(ValueError, match="labels must lie"):
        zero_shot_metrics(logits, torch.tensor([0, 0, 3, 0]))


def test_retrieval_with_shared_captions():
    # Images 0 and 1 share caption 0, image 2 has caption 1. Both images of caption 0 are right answers.
    images = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.0, 1.0]]), dim=-1)
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = retrieval_metrics(images, texts, torch.tensor([0, 0, 1]), ks=(1,))
    assert out == {"image_to_text_R@1": 1.0, "text_to_image_R@1": 1.0}
    perfect = retrieval_metrics(torch.eye(12), torch.eye(12))
    assert set(perfect) == set(RETRIEVAL_KEYS) and all(v == 1.0 for v in perfect.values())
    shuffled = retrieval_metrics(torch.eye(12), torch.eye(12)[torch.arange(12).roll(1)], ks=(1, 5, 10))
    assert shuffled["image_to_text_R@1"] == 0.0 and shuffled["text_to_image_R@10"] == 0.0


# ---- evaluate ---------------------------------------------------------------------------------------


def make_split(root: Path, n: int = 12, n_classes: int = 3, broken: bool = False) -> Path:
    """A tiny data set in the builder's format: solid-colour images, captions, labels, classes.json."""
    (root / "images").mkdir(parents=True)
    lines = []
    for i in range(n):
        Image.new("RGB", (16, 16), (20 * i, 255 - 20 * i, 7 * i)).save(root / f"images/{i}.png")
        label = i % n_classes if i < n - 1 else -1  # the last one has no class
        lines.append({"image": f"images/{i}.png", "caption": f"caption {i}", "label": label, "source": f"/x/{i}.png"})
    if broken:
        (root / "images/broken.png").write_bytes(b"not a png")
        lines.append({"image": "images/broken.png", "caption": "broken", "label": 0, "source": "/x/broken.png"})
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    classes = {"classnames": [f"class{c}" for c in range(n_classes)], "templates": ["{}", "a clip art of {}."]}
    (root / "classes.json").write_text(json.dumps(classes), encoding="utf-8")
    return root / "test.jsonl"


TINY = ClipConfig(
    embed_dim=16,
    vision=VisionTransformerConfig(image_size=32, patch_size=16, width=32, layers=1, heads=2),
    text=TextConfig(width=32, heads=2, layers=1),
)


def test_evaluate_tiny_random_model(tmp_path):
    torch.manual_seed(0)
    model = ClipModel(TINY).train()
    split = make_split(tmp_path, broken=True)
    metrics = evaluate(model, Preprocess(PreprocessConfig(image_size=32)), Tokenizer(), split, batch_size=5, progress=False)
    assert model.training  # the trainer's mode is restored
    assert set(metrics) >= set(RETRIEVAL_KEYS + ZERO_SHOT_KEYS + ["n_images", "n_image_errors", "n_texts"])
    assert all(isinstance(v, float) for v in metrics.values())
    assert all(0.0 <= metrics[k] <= 1.0 for k in RETRIEVAL_KEYS + ZERO_SHOT_KEYS)
    assert metrics["n_images"] == 12 and metrics["n_image_errors"] == 1 and metrics["n_texts"] == 12
    assert metrics["zero_shot_n_images"] == 11 and metrics["zero_shot_n_classes"] == 3
    assert metrics["zero_shot_chance"] == metrics["zero_shot_chance_uniform"] == pytest.approx(1 / 3)
    assert metrics["zero_shot_chance_majority"] == pytest.approx(4 / 11)
    assert metrics["zero_shot_top5"] == 1.0  # 3 classes
    assert metrics["image_to_text_R@10"] >= metrics["image_to_text_R@5"] >= metrics["image_to_text_R@1"]
    # Without classes.json: retrieval only.
    (tmp_path / "classes.json").unlink()
    metrics = evaluate(model, Preprocess(PreprocessConfig(image_size=32)), Tokenizer(), split, progress=False)
    assert not any(k.startswith("zero_shot") for k in metrics) and set(metrics) >= set(RETRIEVAL_KEYS)


class PerfectModel(torch.nn.Module):
    """Features built so every image is nearest its own caption and its own class.

    Image i (red channel 20 * i) -> e_i + e_{n + class(i)}; caption i -> the same vector;
    class c -> e_{n + c}. Cosines: own caption 1, same-class caption 1/2, own class 1/sqrt 2, else 0.
    """

    def __init__(self, n: int, n_classes: int) -> None:
        super().__init__()
        self.n, self.n_classes = n, n_classes
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # evaluate finds the device from a parameter

    def pair_feature(self, i: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(i), self.n + self.n_classes)
        out[torch.arange(len(i)), i] = 1
        out[torch.arange(len(i)), self.n + i % self.n_classes] = 1
        return out

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        red = pixels[:, 0].mean(dim=(1, 2))  # the preprocess below keeps raw 0..255 values
        return self.pair_feature((red / 20).round().long())

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        code = tokens[:, 0]
        out = self.pair_feature(code.clamp(max=self.n - 1))
        is_class = code >= 1000
        out[is_class] = 0
        out[is_class.nonzero().flatten(), self.n + code[is_class] - 1000] = 1
        return out


def test_evaluate_perfect_model_scores_one(tmp_path):
    n, n_classes = 12, 3
    split = make_split(tmp_path, n, n_classes)
    classes = json.loads((tmp_path / "classes.json").read_text())
    codes = {f"caption {i}": i for i in range(n)}
    codes.update({t.format(name): 1000 + c for c, name in enumerate(classes["classnames"]) for t in classes["templates"]})

    def tokenizer(texts):
        return torch.tensor([[codes[t]] for t in texts])

    class RawPixels:  # the 16x16 images as they are, 0..255 (evaluate needs a callable with `image_size`)
        image_size = 16

        def __call__(self, image):
            return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)

    preprocess = RawPixels()

    # Every image labelled, so that zero-shot covers all of them.
    records = [json.loads(line) for line in split.read_text().splitlines()]
    records[-1]["label"] = (n - 1) % n_classes
    split.write_text("".join(json.dumps(r) + "\n" for r in records))
    metrics = evaluate(PerfectModel(n, n_classes), preprocess, tokenizer, split, batch_size=4, progress=False)
    for key in RETRIEVAL_KEYS + ["zero_shot_top1", "zero_shot_top5", "zero_shot_mean_per_class_top1"]:
        assert metrics[key] == 1.0, key


def test_read_split_resolves_paths_and_rejects_bad_lines(tmp_path):
    split = make_split(tmp_path, n=3)
    records = read_split(split)
    assert Path(records[0]["image"]) == tmp_path / "images/0.png"
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_split(tmp_path / "bad.jsonl")


# ---- report and CLI ---------------------------------------------------------------------------------


def test_write_report_with_curves(tmp_path):
    # The trainer's metrics.jsonl: typed train and eval records, eval metrics prefixed "val/".
    log = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"type": "train", "step": s, "epoch": s / 10, "loss": 4.0 / (s + 1), "lr": 1e-3 * min(1, (s + 1) / 5),
                         "logit_scale": 14.3 + s, "samples_per_s": 900.0, "skipped": 0}) for s in range(20)]
    for step in (10, 20):
        lines.append(json.dumps({"type": "eval", "step": step, "final": step == 20, "val/zero_shot_top1": step / 50,
                                 "val/image_to_text_R@1": step / 100, "val/n_images": 620.0}))
    lines.append(json.dumps({"step": 21, "zero_shot_top5": 0.5}))  # untyped, no training fields: an eval record
    lines.append('{"type": "train", "step": 22, "loss": 0.1')  # a log still being written
    log.write_text("\n".join(lines) + "\n")
    metrics = {"zero_shot_top1": 0.3, "zero_shot_n_images": 620.0, "image_to_text_R@1": 0.15, "custom": 2.5}
    path = write_report(metrics, tmp_path / "report", curves_jsonl=log)
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "report/report.md"
    assert "| zero_shot_top1 | 0.3 |" in text and "| zero_shot_n_images | 620 |" in text and "| custom | 2.5 |" in text
    assert "20 training and 3 evaluation records (1 unreadable lines skipped)" in text
    assert "| evaluation | zero_shot_top5 | 21 | 0.5 |" in text
    for name in ("loss", "lr", "logit_scale", "eval_metrics"):
        assert f"![{name}]({name}.png)" in text
        with Image.open(tmp_path / f"report/{name}.png") as im:
            assert im.format == "PNG" and im.size[0] > 100
    from clipforge.evaluation.report import _eval_keys, read_curves

    _, evals, _ = read_curves(log)
    assert _eval_keys(evals) == ["val/zero_shot_top1", "val/image_to_text_R@1", "zero_shot_top5"]  # no counts
    assert write_report({}, tmp_path / "empty").read_text().count("No metrics") == 1


def test_importing_evaluation_does_not_import_matplotlib():
    code = "import sys, clipforge.evaluation, clipforge.datasets.openclipart; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluate_cli(tmp_path, capsys):
    from clipforge.cli import evaluate as evaluate_cli

    torch.manual_seed(0)
    model_path = clipforge.save(ClipModel(TINY), tmp_path / "tiny.safetensors")
    make_split(tmp_path / "data")
    parser = argparse.ArgumentParser()
    evaluate_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--model", str(model_path), "--data", str(tmp_path / "data"),
                              "--report", str(tmp_path / "report"), "--device", "cpu", "--json"])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) >= set(RETRIEVAL_KEYS + ZERO_SHOT_KEYS)
    assert (tmp_path / "report/report.md").is_file()
    args = parser.parse_args(["evaluate", "--model", str(model_path), "--data", str(tmp_path / "data"), "--split", "val"])
    with pytest.raises(FileNotFoundError, match="val.jsonl"):
        args.func(args)
