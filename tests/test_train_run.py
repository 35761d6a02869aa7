"""End-to-end training runs on the synthetic coloured-shapes set: learning, outputs, bad samples,
LiT, WiSE-FT, SigLIP/mixed precision, evaluation hooks, WebDataset and the CLI."""

from __future__ import annotations

import io
import json
import logging
import random
import tarfile

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import TINY_TRAIN, train_config

import clipforge
from clipforge.configs import ClipConfig
from clipforge.models import ClipModel
from clipforge.train import loop, train
from clipforge.train.synthetic import draw_shape, shape_classes, write_shapes_dataset

pytestmark = pytest.mark.slow  # training runs (make test-fast leaves them out)

QUIET = {"progress": False, "workers": 0}


def _records(out_dir, kind="train") -> list[dict]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def _zero_shot_accuracy(model, preprocess, tokenizer, n: int = 120) -> float:
    classes = shape_classes()
    rng = random.Random(12345)  # images the model never saw
    images, labels = [], []
    for i in range(n):
        colour, shape = classes[i % len(classes)].split()
        images.append(preprocess(draw_shape(colour, shape, 32, rng)))
        labels.append(i % len(classes))
    with torch.no_grad():
        image_features = model.encode_image(torch.stack(images), normalize=True)
        text_features = model.encode_text(tokenizer([f"a {c}" for c in classes]), normalize=True)
    predictions = (image_features @ text_features.T).argmax(dim=1)
    return (predictions == torch.tensor(labels)).float().mean().item()


def test_short_training_run_learns_the_shapes(tmp_path):
    data = write_shapes_dataset(tmp_path / "data", 240)
    out = tmp_path / "run"
    config = train_config(train=str(data), batch_size=24, epochs=8, lr=2e-3, warmup_steps=5, weight_decay=0.1,
        out_dir=str(out), keep_checkpoints=2, log_every_steps=4, **QUIET,
    )
    result = train(config)
    assert result.steps == 80 and result.skipped_samples == 0

    records = _records(out)
    assert [r["step"] for r in records] == list(range(4, 81, 4))
    assert set(records[0]) >= {"step", "epoch", "loss", "lr", "logit_scale", "samples_per_s", "skipped"}
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-3:]) / 3
    assert last < first - 0.3, (first, last)
    assert records[-1]["epoch"] == 8.0 and records[-1]["logit_scale"] <= 100.0

    # final.safetensors loads with no arch; zero-shot accuracy beats chance (1/12) by far.
    model, preprocess, tokenizer = clipforge.load(result.final_path)
    accuracy = _zero_shot_accuracy(model, preprocess, tokenizer)
    assert accuracy > 3 / len(shape_classes()), accuracy
    for key, value in model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[key].cpu())

    assert [p.name for p in sorted((out / "checkpoints").glob("step_*.pt"))] == ["step_00000070.pt", "step_00000080.pt"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _write_bad_png(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)


def test_bad_samples_are_skipped_counted_and_logged(tmp_path, caplog):
    data = write_shapes_dataset(tmp_path / "data", 16)
    _write_bad_png(tmp_path / "data" / "images" / "broken.png")
    (tmp_path / "data" / "images" / "empty.png").write_bytes(b"")
    with open(data, "a") as f:
        f.write("images/missing.png,a ghost\nimages/broken.png,a broken thing\nimages/empty.png,nothing\n"
                "images/000003.png,\n")
    # 20 rows, batch 10: one epoch consumes every row, so all 4 bad ones are seen.
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="clipforge.train"):
        result = train(train_config(train=str(data), batch_size=10, epochs=1, out_dir=str(out), **QUIET))
    assert result.skipped_samples == 4 and result.steps == 2
    assert _records(out)[-1]["skipped"] == 4
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for reason in ("missing.png: missing", "broken.png: ", "empty.png: empty", "000003.png: missing or empty caption"):
        assert reason in logged, reason
    assert all(r["loss"] is not None and r["loss"] == r["loss"] for r in _records(out))  # finite, not NaN


def test_bad_webdataset_samples_are_skipped(tmp_path):
    shards = write_shapes_dataset(tmp_path / "data", 24, format="webdataset", samples_per_shard=12)
    with tarfile.open(shards / "00002.tar", "w") as tar:  # a third shard with problems
        for name, payload in (("x1.png", b"garbage"), ("x1.txt", b"a broken image"), ("x2.txt", b"no image"),
                              ("x3.png", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    (shards / "00003.tar").write_bytes(b"this is not a tar file at all" * 20)
    out = tmp_path / "run"
    result = train(train_config(train=str(shards), batch_size=6, max_steps=6, shuffle_buffer=0,
                               num_samples=24, out_dir=str(out), **QUIET))
    # 36 samples read over 6 steps from 24 good + 3 bad samples + 1 unreadable shard, cycling through the shards.
    assert result.skipped_samples > 0 and _records(out)[-1]["skipped"] == result.skipped_samples
    assert all(r["loss"] == r["loss"] for r in _records(out))


def _init_file(tmp_path) -> str:
    torch.manual_seed(5)
    path = tmp_path / "init.safetensors"
    clipforge.save(ClipModel(ClipConfig.from_dict(TINY_TRAIN)), path)
    return str(path)


def test_lit_frozen_image_tower_stays_bit_identical(tmp_path):
    data = write_shapes_dataset(tmp_path / "data", 48)
    init = _init_file(tmp_path)
    result = train(train_config(init=init, freeze="image", train=str(data), batch_size=12, max_steps=4, lr=1e-2,
                               weight_decay=0.5, out_dir=str(tmp_path / "run"), **QUIET))
    before, after = load_file(init), load_file(result.final_path)
    visual = [k for k in before if k.startswith("visual.")]
    assert visual and all(torch.equal(before[k], after[k]) for k in visual)
    assert not torch.equal(before["text_projection"], after["text_projection"])
    assert not torch.equal(before["token_embedding.weight"], after["token_embedding.weight"])

    result = train(train_config(init=init, freeze="text", train=str(data), batch_size=12, max_steps=2, lr=1e-2,
                               out_dir=str(tmp_path / "run_text"), **QUIET))
    after = load_file(result.final_path)
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("visual.") and k != "logit_scale")
    assert not torch.equal(before["visual.proj"], after["visual.proj"])


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.5])
def test_wise_ft_is_applied_at_the_end(tmp_path, alpha):
    data = write_shapes_dataset(tmp_path / "data", 24)
    init = _init_file(tmp_path)
    result = train(train_config(init=init, wise_ft_alpha=alpha, train=str(data), batch_size=12, max_steps=2,
                               lr=1e-2, out_dir=str(tmp_path / "run"), **QUIET))
    original, tuned, final = load_file(init), load_file(tmp_path / "run" / "final_finetuned.safetensors"), load_file(result.final_path)
    assert not torch.equal(original["visual.proj"], tuned["visual.proj"])
    for key in original:
        expected = {0.0: original[key], 1.0: tuned[key]}.get(alpha)
        if expected is not None:
            assert torch.equal(final[key], expected), key
        else:
            torch.testing.assert_close(final[key], (original[key] + tuned[key]) / 2)


def test_siglip_mixed_precision_accumulation_checkpointing_run(tmp_path):
    data = write_shapes_dataset(tmp_path / "data", 48)
    for precision in ("bf16", "fp16"):
        out = tmp_path / precision
        train(train_config(train=str(data), loss="siglip", precision=precision, accum_steps=2,
                          grad_checkpointing=True, grad_clip_norm=1.0, batch_size=6, max_steps=4, out_dir=str(out), **QUIET))
        records = _records(out)
        assert len(records) == 4 and all(r["loss"] == r["loss"] for r in records)
        assert records[0]["logit_bias"] == pytest.approx(-10.0, abs=0.01)  # SigLIP's init, kept by the loss module
        checkpoint = torch.load(sorted((out / "checkpoints").glob("*.pt"))[-1], weights_only=True)
        assert "logit_bias" in checkpoint["loss"]
        assert checkpoint["model"]["logit_scale"].dtype == torch.float32  # fp32 master weights


def test_evaluation_during_and_after_training(tmp_path, monkeypatch):
    calls, reports = [], []

    def fake_evaluate(model, preprocess, tokenizer, config):
        assert not model.training
        calls.append(len(calls))
        return {"zero_shot_top1": 0.1 * len(calls), "image_to_text_R@1": 0.5}

    monkeypatch.setattr(loop, "call_evaluate", fake_evaluate)
    monkeypatch.setattr(loop, "call_write_report", lambda metrics, out_dir, curves_jsonl: reports.append((metrics, curves_jsonl)))
    data = write_shapes_dataset(tmp_path / "data", 24)
    out = tmp_path / "run"
    result = train(train_config(train=str(data), batch_size=4, max_steps=5, eval_every_steps=2,
                               val="val.jsonl", classes="classes.json", out_dir=str(out), **QUIET))
    evals = _records(out, "eval")
    assert [r["step"] for r in evals] == [2, 4, 5] and [r["final"] for r in evals] == [False, False, True]
    assert evals[-1]["val/zero_shot_top1"] == pytest.approx(0.3)
    assert result.eval_metrics == {"zero_shot_top1": pytest.approx(0.3), "image_to_text_R@1": 0.5}
    assert reports == [(result.eval_metrics, out / "metrics.jsonl")]


def test_webdataset_training_run(tmp_path):
    shards = write_shapes_dataset(tmp_path / "data", 48, format="webdataset", samples_per_shard=16)
    result = train(train_config(train=str(shards / "{00000..00002}.tar"), batch_size=8, epochs=2,
                               resampled=True, out_dir=str(tmp_path / "run"), **QUIET))
    assert result.steps == 12 and [r["epoch"] for r in _records(tmp_path / "run")][-1] == 2.0


def test_cli_train_with_overrides_and_resume(tmp_path, capsys):
    import argparse

    from clipforge.cli import train as cli_train

    data = write_shapes_dataset(tmp_path / "data", 24)
    config = tmp_path / "run.toml"
    config.write_text(
        f'[data]\ntrain = "{data}"\nworkers = 0\n[optim]\nbatch_size = 4\n[run]\nprogress = false\nplot = false\n'
        "[model.architecture]\nembed_dim = 32\n[model.architecture.vision]\nimage_size = 32\npatch_size = 8\n"
        "width = 32\nlayers = 2\nheads = 2\n[model.architecture.text]\ncontext_length = 16\nwidth = 32\nheads = 2\nlayers = 2\n"
    )
    out = tmp_path / "out"
    assert cli_train.main([str(config), "--set", "max_steps=3", "--set", "lr=1e-3", "--out-dir", str(out)]) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    # The same command with more steps resumes from the step-3 checkpoint instead of starting over.
    assert cli_train.main([str(config), "--set", "max_steps=5", "--out-dir", str(out)]) == 0
    assert [r["step"] for r in _records(out)] == [1, 2, 3, 4, 5]
    # The run wrote its resolved config (file + overrides + defaults) beside its checkpoints.
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["optim"]["max_steps"] == 5 and resolved["data"]["train"] == str(data)
    assert resolved["optim"]["weight_decay"] == 0.2 and resolved["run"]["out_dir"] == str(out)
    # Fine-tuning flags: --init replaces the file's model; --wise-ft defaults to alpha 0.5.
    init = _init_file(tmp_path)
    assert cli_train.main([str(config), "--init", init, "--wise-ft", "--set", "max_steps=1",
                           "--out-dir", str(tmp_path / "ft")]) == 0
    assert (tmp_path / "ft" / "final_finetuned.safetensors").exists()
    # It registers as a subcommand of the `clipforge` parser.
    parser = argparse.ArgumentParser()
    cli_train.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "x.toml", "--set", "lr=1", "--freeze", "image"])
    assert args.func is cli_train.run and args.overrides == ["lr=1"] and args.freeze == "image"
