"""clipforge.train building blocks: losses vs open_clip, augmentation vs open_clip/torchvision,
weight-decay rule, schedule, config, checkpoints, sampler, data readers, WiSE-FT."""

from __future__ import annotations

import json
import math
import pickle
import random

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import TINY_TRAIN

from clipforge.image.augment import TrainTransform, sample_generator
from clipforge.sources import expand_shards, read_table
from clipforge.train.checkpointing import (
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from clipforge.train.config import apply_overrides, load_config, parse_override
from clipforge.train.data import EpochBatchSampler, TrainData, balance_weights
from clipforge.train.finetune import freeze_tower, wise_ft
from clipforge.train.loss import ClipLoss, SigLipLoss
from clipforge.train.optim import param_groups
from clipforge.train.schedule import LRSchedule


def _features(n: int = 6, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    return image, text


# ---- losses --------------------------------------------------------------------------------------------


def test_clip_loss_matches_open_clip_value_and_gradients():
    import open_clip.loss as ref

    image, text = _features()
    for scale_value in (1.0, 14.3, 100.0):
        ours_in = [t.clone().requires_grad_() for t in (image, text, torch.tensor(scale_value))]
        ref_in = [t.clone().requires_grad_() for t in (image, text, torch.tensor(scale_value))]
        ours = ClipLoss()(*ours_in)
        theirs = ref.ClipLoss()(*ref_in)
        ours.backward()
        theirs.backward()
        # fp32 tolerance: open_clip computes text->image logits with a second matmul, we transpose.
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-5)
        for a, b in zip(ours_in, ref_in):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-5)


def test_siglip_loss_matches_open_clip_value_and_gradients():
    import open_clip.loss as ref

    image, text = _features(n=7)
    ours_loss = SigLipLoss(init_logit_bias=-10.0)
    scale = torch.tensor(10.0, requires_grad=True)
    image_a, text_a = image.clone().requires_grad_(), text.clone().requires_grad_()
    ours = ours_loss(image_a, text_a, scale)
    ours.backward()

    bias = torch.tensor(-10.0, requires_grad=True)
    scale_b = torch.tensor(10.0, requires_grad=True)
    image_b, text_b = image.clone().requires_grad_(), text.clone().requires_grad_()
    theirs = ref.SigLipLoss()(image_b, text_b, scale_b, bias)
    theirs.backward()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    torch.testing.assert_close(image_a.grad, image_b.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(text_a.grad, text_b.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(scale.grad, scale_b.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_loss.logit_bias.grad, bias.grad, rtol=0, atol=1e-6)


def test_siglip_bias_lives_in_the_loss_not_the_model():
    from clipforge.configs import ClipConfig
    from clipforge.models import ClipModel

    model = ClipModel(ClipConfig.from_dict(TINY_TRAIN))
    assert not any("bias" == name.split(".")[-1] and "logit" in name for name, _ in model.named_parameters())
    assert [n for n, _ in SigLipLoss().named_parameters()] == ["logit_bias"]


# ---- weight decay, schedule -------------------------------------------------------------------------


def test_weight_decay_rule_matrices_only_and_no_embeddings():
    from clipforge.configs import ClipConfig
    from clipforge.models import ClipModel

    model = ClipModel(ClipConfig.from_dict(TINY_TRAIN))
    named = list(model.named_parameters()) + [("loss.logit_bias", torch.nn.Parameter(torch.zeros(())))]
    decay, no_decay = param_groups(named, 0.2)
    by_id = {id(p): n for n, p in named}
    decayed = {by_id[id(p)] for p in decay["params"]}
    not_decayed = {by_id[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    for name in ("token_embedding.weight", "positional_embedding", "visual.positional_embedding",
                 "visual.class_embedding", "logit_scale", "loss.logit_bias", "ln_final.weight", "ln_final.bias",
                 "visual.ln_pre.weight", "transformer.resblocks.0.attn.in_proj_bias"):
        assert name in not_decayed, name
    for name in ("text_projection", "visual.proj", "visual.conv1.weight", "transformer.resblocks.0.mlp.c_fc.weight",
                 "transformer.resblocks.0.attn.in_proj_weight", "visual.transformer.resblocks.1.mlp.c_proj.weight"):
        assert name in decayed, name
    assert all(p.dim() >= 2 and "embedding" not in by_id[id(p)] for p in decay["params"])
    # Frozen parameters are left out of the optimizer entirely.
    freeze_tower(model, "image")
    decay, no_decay = param_groups(list(model.named_parameters()), 0.2)
    names = {by_id[id(p)] for g in (decay, no_decay) for p in g["params"]}
    assert names and not any(n.startswith("visual.") for n in names)


def test_cosine_schedule_with_linear_warmup():
    s = LRSchedule(1e-3, total_steps=110, warmup_steps=10, min_lr=1e-5)
    assert [s.lr_at(i) for i in range(3)] == pytest.approx([1e-4, 2e-4, 3e-4])
    assert s.lr_at(9) == pytest.approx(1e-3)
    assert s.lr_at(10) == pytest.approx(1e-3)
    assert s.lr_at(60) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert s.lr_at(110) == pytest.approx(1e-5)
    lrs = [s.lr_at(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert LRSchedule(1e-3, 10, kind="constant").lr_at(7) == 1e-3


# ---- augmentation ---------------------------------------------------------------------------------------


def _test_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    return [
        rgb,
        Image.fromarray(rng.integers(0, 256, (80, 41, 4), dtype=np.uint8), "RGBA"),
        rgb.convert("L"),
        rgb.convert("P"),
        Image.fromarray(rng.integers(0, 256, (16, 200, 3), dtype=np.uint8)),  # extreme ratio: fallback crop
    ]


def test_train_transform_is_bit_identical_to_open_clip_training_transform():
    from open_clip.transform import image_transform

    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    reference = image_transform(32, is_train=True, mean=mean, std=std)
    ours = TrainTransform(32, mean, std)  # open_clip's defaults: scale (0.9, 1.0), bicubic, no flip
    for seed in range(4):
        for image in _test_images():
            torch.manual_seed(seed)  # torchvision draws from the global RNG ...
            expected = reference(image)
            got = ours(image, torch.Generator().manual_seed(seed))  # ... ours from a generator seeded alike
            assert torch.equal(got, expected), (seed, image.mode, image.size)


def test_train_transform_randomness_comes_only_from_the_generator():
    t = TrainTransform(24, (0.5,) * 3, (0.5,) * 3, scale=(0.3, 1.0), hflip=True)
    image = _test_images()[0]
    a = t(image, sample_generator(0, 1, 5))
    torch.manual_seed(123)
    random.seed(5)
    b = t(image, sample_generator(0, 1, 5))
    c = t(image, sample_generator(0, 1, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 24, 24)


# ---- config ---------------------------------------------------------------------------------------------


def test_config_from_toml_with_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        '[data]\ntrain = "pairs.csv"\n[data.augment]\ncrop_scale = [0.8, 1.0]\n[optim]\nbatch_size = 16\n'
        '[model.architecture]\nembed_dim = 32\n[model.architecture.vision]\nimage_size = 32\npatch_size = 8\nwidth = 32\n'
        'layers = 2\nheads = 2\n[model.architecture.text]\ncontext_length = 16\nwidth = 32\nheads = 2\nlayers = 2\n'
    )
    cfg = load_config(path, ["lr=1e-4", "optim.precision=bf16", "model.architecture.vision.layers=3", "max_steps=7",
                             "freeze=none", "hflip=true"])
    assert cfg.optim.lr == 1e-4 and cfg.optim.precision == "bf16" and cfg.optim.max_steps == 7 and cfg.model.freeze is None
    assert cfg.model.architecture["vision"]["layers"] == 3 and cfg.data.augment.crop_scale == (0.8, 1.0)
    assert cfg.optim.batch_size == 16 and cfg.data.augment.hflip is True and cfg.data.train == "pairs.csv"
    # JSON round trip through to_dict
    json_path = tmp_path / "run.json"
    json_path.write_text(json.dumps(cfg.to_dict()))
    assert load_config(json_path) == cfg
    with pytest.raises(ValueError, match="did you mean 'batch_size'"):
        load_config(path, ["batchsize=3"])
    with pytest.raises(ValueError, match="exactly one"):
        load_config(path, ['init="x.pt"'])
    with pytest.raises(ValueError, match="wise_ft_alpha needs"):
        load_config(path, ["wise_ft_alpha=0.5"])
    with pytest.raises(ValueError, match="precision"):
        load_config(path, ["precision=fp8"])
    # A key in the wrong section (the old flat layout) names the section it belongs in.
    flat = tmp_path / "flat.toml"
    flat.write_text('lr = 1e-3\n[data]\ntrain = "x.csv"\n[model]\narchitecture = "RN50"\n')
    with pytest.raises(ValueError, match="lr .it belongs in optim.lr"):
        load_config(flat)


def test_parse_override_values():
    assert parse_override("lr=3e-4") == ("lr", 3e-4)
    assert parse_override("hflip=true") == ("hflip", True)
    assert parse_override("out_dir=runs/a b") == ("out_dir", "runs/a b")
    assert parse_override("resume=none") == ("resume", None)
    assert apply_overrides({"model": {"vision": {"width": 1}}}, ["model.vision.width=64"]) == {"model": {"vision": {"width": 64}}}


# ---- checkpoints ------------------------------------------------------------------------------------------


def test_checkpoints_atomic_pruned_and_safe(tmp_path):
    for step in (5, 10, 15):
        save_checkpoint(tmp_path, step, {"model": {"w": torch.full((2,), float(step))}, "meta": "{}"}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000010.pt", "step_00000015.pt"]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    state = load_checkpoint(tmp_path / "step_00000015.pt")
    assert state["step"] == 15 and torch.equal(state["model"]["w"], torch.full((2,), 15.0))

    class Payload:  # an arbitrary pickle must not load
        def __reduce__(self):
            return (print, ("executed!",))

    bad = tmp_path / "step_00000020.pt"
    torch.save({"format": "clipforge-train-checkpoint", "version": 1, "x": Payload()}, bad)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(bad)


def test_rng_state_round_trip():
    state = rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a


# ---- sampler and readers ----------------------------------------------------------------------------------


def test_sampler_order_is_a_pure_function_of_seed_and_epoch_and_ranks_partition_it():
    one = list(EpochBatchSampler(50, 4, 2, rank=0, world_size=1, seed=7, epoch=3))
    assert one == list(EpochBatchSampler(50, 4, 2, rank=0, world_size=1, seed=7, epoch=3))
    assert one != list(EpochBatchSampler(50, 4, 2, rank=0, world_size=1, seed=7, epoch=4))
    assert len(one) == 12 and all(len(b) == 4 for b in one)  # 50 // 8 = 6 steps of 2 micro-batches
    # Two ranks with batch 2 and accum 2: step s covers the same set of samples as one rank with batch 4.
    r0 = list(EpochBatchSampler(50, 2, 2, rank=0, world_size=2, seed=7, epoch=3))
    r1 = list(EpochBatchSampler(50, 2, 2, rank=1, world_size=2, seed=7, epoch=3))
    for step in range(6):
        global_set = set(one[2 * step]) | set(one[2 * step + 1])
        assert set(r0[2 * step] + r0[2 * step + 1] + r1[2 * step] + r1[2 * step + 1]) == global_set
    # Resuming after 5 micro-batches yields exactly the rest.
    assert list(EpochBatchSampler(50, 4, 2, rank=0, world_size=1, seed=7, epoch=3, start=5)) == one[5:]


def test_training_tables_use_the_sources_column_rule(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.csv").write_text("filepath,title,caption\nimg/1.png,x,one\n/abs/2.png,y,two\n,z,three\n")
    pairs = read_table(tmp_path / "sub" / "a.csv")
    assert [(p.path, p.caption) for p in pairs[:2]] == [(str(tmp_path / "sub" / "img/1.png"), "one"), ("/abs/2.png", "two")]
    assert pairs[2].path is None and pairs[2].caption == "three" and pairs[0].fields == {"title": "x"}
    pairs = read_table(tmp_path / "sub" / "a.csv", image_root=tmp_path / "root")
    assert pairs[0].path == str(tmp_path / "root" / "img/1.png")
    (tmp_path / "b.tsv").write_text("image\ttext\n1.png\ta cat, sitting\n")
    assert read_table(tmp_path / "b.tsv")[0].caption == "a cat, sitting"
    (tmp_path / "c.jsonl").write_text('{"path": "1.png", "text": "one"}\n{not json\n\n{"path": "2.png", "text": ["two", "zwei"]}\n')
    pairs = read_table(tmp_path / "c.jsonl")
    assert [p.caption for p in pairs] == ["one", None, ("two", "zwei")] and "c.jsonl:2: not valid JSON" in pairs[1].problem
    # A training table needs images: a table with captions only is refused before training starts.
    (tmp_path / "d.csv").write_text("file,caption\n1.png,x\n")
    with pytest.raises(ValueError, match="no image column"):
        TrainData(str(tmp_path / "d.csv"), TrainTransform(32, (0.5,) * 3, (0.5,) * 3), context_length=77, batch_size=1,
                  accum_steps=1, rank=0, world_size=1, workers=0, seed=0)


def test_class_balanced_sampling_draws_groups_equally(tmp_path):
    groups = ["a"] * 90 + ["b"] * 10
    weights = balance_weights(groups, 1.0)
    sampler = EpochBatchSampler(100, 100, 1, rank=0, world_size=1, seed=3, epoch=0, weights=weights)
    drawn = [groups[i] for batch in sampler for i in batch]
    assert 35 <= drawn.count("b") <= 65  # ~50 of 100 draws; unbalanced it would be ~10
    assert list(EpochBatchSampler(100, 100, 1, 0, 1, seed=3, epoch=0, weights=weights)) == list(sampler)
    assert balance_weights(groups, 0.0).unique().tolist() == [1.0]


def test_expand_shards(tmp_path):
    for i in range(3):
        (tmp_path / f"{i:03d}.tar").write_bytes(b"")
    assert expand_shards(str(tmp_path / "{000..002}.tar")) == [str(tmp_path / f"{i:03d}.tar") for i in range(3)]
    assert expand_shards(str(tmp_path)) == [str(tmp_path / f"{i:03d}.tar") for i in range(3)]
    assert expand_shards(f"{tmp_path}/000.tar::{tmp_path}/00[12].tar") == [str(tmp_path / f"{i:03d}.tar") for i in range(3)]


# ---- WiSE-FT ------------------------------------------------------------------------------------------------


def test_wise_ft_endpoints_and_midpoint():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(5, 3, generator=g), "b": torch.randn(3, generator=g)}
    b = {"w": torch.randn(5, 3, generator=g), "b": torch.randn(3, generator=g)}
    zero, one, half = wise_ft(a, b, 0.0), wise_ft(a, b, 1.0), wise_ft(a, b, 0.5)
    assert all(torch.equal(zero[k], a[k]) for k in a) and all(torch.equal(one[k], b[k]) for k in b)
    assert all(torch.allclose(half[k], (a[k] + b[k]) / 2) for k in a)
    with pytest.raises(ValueError):
        wise_ft(a, b, 1.5)
    with pytest.raises(ValueError, match="same keys"):
        wise_ft(a, {"w": b["w"]}, 0.5)
    assert math.isclose(float(wise_ft({"s": torch.tensor(0.0)}, {"s": torch.tensor(4.0)}, 0.25)["s"]), 1.0)
