"""clip_score against torchmetrics' CLIPScore / clip_score, same random weights, real images and captions.

The oracle is a small random transformers CLIPModel with a CLIPProcessor built offline (CLIPTokenizer from
clipforge's bundled BPE file, CLIPImageProcessor at the model's size), handed to torchmetrics as a callable;
the same directory, saved with save_pretrained, is loaded with clipforge.load.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from conftest import CAPTIONS
from image_fixtures import corpus_sample
from PIL import Image
from references import build_hf_processor
from torchmetrics.functional.multimodal import (
    clip_score as tm_clip_score,  # the oracle: no silent skip
)

import clipforge
from clipforge.image.preprocess import composite_on_white, has_alpha
from clipforge.tasks.scoring import PAPER_PREFIX, clip_score, score_from_cosine

ATOL = 1e-4  # on torchmetrics' 0..100 scale
SIZE = 32
# The first four captions: the curly-quote one is where transformers' Rust CLIPTokenizer departs from
# OpenAI's (docs/tokenizer.md), and torchmetrics cuts the long one without an end token (see docs).
TEXTS = CAPTIONS[:4]


class TensorFeatures(torch.nn.Module):
    """torchmetrics 1.9 expects get_*_features to return tensors; transformers 5 returns ModelOutputs."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, pixel_values):
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output

    def get_text_features(self, input_ids, attention_mask=None):
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def hf_processor():
    return build_hf_processor(SIZE)


@pytest.fixture(scope="module")
def images():
    """Real clip-art flattened to RGB (alpha on white), as PIL images and as uint8 tensors for torchmetrics."""
    pils = []
    for path in corpus_sample(4):
        with Image.open(path) as im:
            pils.append(composite_on_white(im) if has_alpha(im) else im.convert("RGB"))
    tensors = [torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous() for im in pils]
    return pils, tensors


@pytest.fixture(scope="module")
def setup(tmp_path_factory, images):
    """(clipforge model, preprocess, tokenizer, torchmetrics model factory, model dir) for the same weights."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        projection_dim=16,
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=SIZE, patch_size=8, hidden_act="quick_gelu"),
    )
    hf = CLIPModel(config).eval()
    processor = hf_processor()
    # Random weights give cosines of either sign; the image-text mean must be positive for the
    # aggregate to say something (torchmetrics clamps it at 0), so orient the image projection.
    with torch.no_grad():
        pixels = processor(images=images[1], return_tensors="pt")["pixel_values"]
        ids = processor(text=TEXTS, return_tensors="pt", padding=True)
        cos = torch.cosine_similarity(hf.get_image_features(pixel_values=pixels).pooler_output,
                                      hf.get_text_features(**ids).pooler_output).mean()
        if cos < 0:
            hf.visual_projection.weight.neg_()
    directory = tmp_path_factory.mktemp("score_model")
    hf.save_pretrained(directory)
    processor.save_pretrained(directory)
    processor.image_processor.save_pretrained(directory)  # preprocessor_config.json, which clipforge reads
    model, preprocess, tokenizer = clipforge.load(directory)
    assert preprocess.config.mode == "hf"
    return model, preprocess, tokenizer, lambda: (TensorFeatures(hf), processor), str(directory)


def tm_metric(factory, source, target) -> float:
    from torchmetrics.multimodal.clip_score import CLIPScore

    with torch.no_grad():
        return float(CLIPScore(model_name_or_path=factory)(source, target))


def test_torchmetrics_definition_equals_torchmetrics(setup, images):
    model, preprocess, tokenizer, factory, _ = setup
    pils, tensors = images
    ours = clip_score(model, pils, TEXTS, preprocess=preprocess, tokenizer=tokenizer)
    ref = tm_metric(factory, tensors, TEXTS)
    assert ours.dim() == 0 and ref > 1.0, ref  # positive: the aggregate is not just the clamp
    assert abs(float(ours) - ref) <= ATOL, (float(ours), ref)
    # The functional form (mean, then clamp) gives the same number.
    with torch.no_grad():
        assert abs(float(tm_clip_score(tensors, TEXTS, factory)) - ref) <= ATOL


def test_image_image_and_text_text_equal_torchmetrics(setup, images):
    model, preprocess, tokenizer, factory, _ = setup
    pils, tensors = images
    ours = clip_score(model, pils, pils[::-1], kind="image-image", preprocess=preprocess)
    assert abs(float(ours) - tm_metric(factory, tensors, tensors[::-1])) <= ATOL
    ours = clip_score(model, TEXTS, TEXTS[::-1], kind="text-text", tokenizer=tokenizer)
    assert abs(float(ours) - tm_metric(factory, TEXTS, TEXTS[::-1])) <= ATOL


def test_paper_definitions_per_pair(setup, images):
    """CLIP-S = 2.5 * max(cos, 0) per pair; torchmetrics on one pair is max(100 cos, 0): a factor of 40."""
    model, preprocess, tokenizer, factory, _ = setup
    pils, tensors = images
    for definition, prefix in (("paper", ""), ("paper_prefix", PAPER_PREFIX)):
        ours = clip_score(model, pils, TEXTS, definition=definition, preprocess=preprocess, tokenizer=tokenizer)
        with torch.no_grad():
            ref = torch.stack([tm_clip_score(t, prefix + c, factory) for t, c in zip(tensors, TEXTS)])
        assert ours.shape == (4,)
        assert torch.allclose(ours * 40, ref.float(), atol=ATOL, rtol=0), (definition, ours * 40, ref)
    assert not torch.equal(ours, clip_score(model, pils, TEXTS, definition="paper", preprocess=preprocess))


def test_input_forms_agree(setup, images):
    model, preprocess, tokenizer, _, _ = setup
    pils, tensors = images
    expected = clip_score(model, pils, TEXTS, definition="paper", preprocess=preprocess, tokenizer=tokenizer)
    pixels = preprocess.batch(pils)
    same_size = torch.stack([t[:, :40, :40] for t in tensors])  # a uint8 batch needs one size
    cases = {
        "uint8 list": (tensors, TEXTS),
        "float pixels": (pixels, TEXTS),
        "token ids": (pils, tokenizer(TEXTS)),
    }
    for name, (imgs, txts) in cases.items():
        got = clip_score(model, imgs, txts, definition="paper", preprocess=preprocess, tokenizer=tokenizer)
        assert torch.allclose(got, expected, atol=1e-6), name
    batch = clip_score(model, same_size, TEXTS, definition="paper", preprocess=preprocess)
    one_by_one = torch.cat([clip_score(model, t, c, definition="paper", preprocess=preprocess)
                            for t, c in zip(same_size, TEXTS)])
    assert torch.allclose(batch, one_by_one, atol=1e-6)
    # One text against every image.
    broadcast = clip_score(model, pils, TEXTS[0], definition="paper", preprocess=preprocess)
    assert broadcast.shape == (4,)
    with pytest.raises(ValueError, match="token ids"):
        clip_score(model, pils, tokenizer(TEXTS), definition="paper_prefix")
    with pytest.raises(ValueError, match="as many"):
        clip_score(model, pils, TEXTS[:2])


def test_torchmetrics_averages_then_clamps():
    cos = torch.tensor([0.5, -0.3])
    assert float(score_from_cosine(cos, "torchmetrics")) == pytest.approx(10.0)  # max(100 * 0.1, 0), not 25
    assert float(score_from_cosine(-cos, "torchmetrics")) == 0.0
    assert torch.allclose(score_from_cosine(cos, "paper"), torch.tensor([1.25, 0.0]))


def test_cli(setup, images, tmp_path, capsys):
    from clipforge.cli import score as score_cli

    model, preprocess, tokenizer, _, directory = setup
    pils, _ = images
    files = []
    for i, im in enumerate(pils[:2]):
        files.append(str(tmp_path / f"{i}.png"))
        im.save(files[-1])
    parser = argparse.ArgumentParser(prog="clipforge")
    score_cli.add_parser(parser.add_subparsers(dest="command"))

    args = parser.parse_args(["score", "--model", directory, *files, "--texts", *TEXTS[:2], "--definition", "paper",
                              "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    expected = clip_score(model, pils[:2], TEXTS[:2], definition="paper", preprocess=preprocess, tokenizer=tokenizer)
    assert [row["score"] for row in out["scores"]] == pytest.approx(expected.tolist(), abs=1e-6)
    assert out["scores"][1]["image"] == files[1] and out["scores"][1]["text"] == TEXTS[1]

    args = parser.parse_args(["score", "--model", directory, *files, "--texts", TEXTS[0]])
    assert args.func(args) == 0
    line = capsys.readouterr().out.strip()
    expected = clip_score(model, pils[:2], TEXTS[0], preprocess=preprocess, tokenizer=tokenizer)
    assert line.startswith(f"{float(expected):.4f}\t(torchmetrics, 2 pairs)"), line
