"""`clipforge train` fine-tunes every family (docs/training.md): a tiny random model written by its
reference library (transformers for SigLIP / SigLIP 2 / Chinese-CLIP, open_clip for XLM-R CLIP,
EVA02-CLIP and MobileCLIP) is the `init`; a few steps on the synthetic shapes set train it with its
own loss (SigLIP's sigmoid with the model's logit_bias, CLIP's softmax for the others), tokenized by
its own tokenizer; the final file loads as the same family and gives the in-memory model's outputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from tiny_models import train_config

import clipforge
from clipforge.errors import InvalidInputError
from clipforge.train import train
from clipforge.train.data import CollatePairs
from clipforge.train.distributed import DistInfo
from clipforge.train.loss import build_loss
from clipforge.train.step import TrainModule, forward_backward
from clipforge.train.synthetic import write_shapes_dataset

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

QUIET = {"progress": False, "workers": 0, "plot": False}


# ---- each family's tiny model, written by its reference library ---------------------------------------


def write_siglip(root: Path) -> Path:
    from siglip_helpers import write_hf_siglip_dir

    write_hf_siglip_dir(root)
    return root


def write_siglip2(root: Path) -> Path:
    from siglip_helpers import hf_siglip2, spm_model

    hf_siglip2().save_pretrained(root)
    (root / "tokenizer.model").write_bytes(spm_model("gemma"))
    return root


def write_chinese_clip(root: Path) -> Path:
    from test_chinese_clip import OFA_PREPROCESSOR, build_vocab, perturb, tiny_hf_config
    from transformers import ChineseCLIPModel

    torch.manual_seed(0)
    vocab = build_vocab()
    model = ChineseCLIPModel(tiny_hf_config(len(vocab))).eval()
    perturb(model)
    model.save_pretrained(root)
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    (root / "preprocessor_config.json").write_text(json.dumps(OFA_PREPROCESSOR))
    return root


def write_xlm_roberta_clip(root: Path) -> Path:
    from test_xlm_roberta_clip import train_sentencepiece, write_open_clip_xlm_roberta_clip

    return write_open_clip_xlm_roberta_clip(root, train_sentencepiece(root))[1]


def write_eva_clip(root: Path) -> Path:
    from safetensors.torch import save_file
    from test_eva_clip import _register_tiny_timm_eva, open_clip_tiny, randomize_

    _register_tiny_timm_eva()
    torch.manual_seed(0)
    model = randomize_(open_clip_tiny(), seed=1)
    path = root / "eva_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def write_mobileclip(root: Path) -> Path:
    from safetensors.torch import save_file
    from test_mobileclip import _register_tiny_timm_mci, open_clip_tiny, randomize_

    _register_tiny_timm_mci()
    torch.manual_seed(0)
    model = randomize_(open_clip_tiny(True), seed=3)
    path = root / "mobileclip_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def write_mobileclip_s(root: Path) -> Path:
    """A FastViT-MCi (MobileCLIP-S) model by open_clip; its bare file does not show the image size or the
    bidirectional text, so it is read with those stated (as test_mobileclip does) and given to the
    trainer as the clipforge file that records them."""
    from safetensors.torch import save_file
    from test_mobileclip import _register_tiny_fastvits, fastvit_model_cfg, randomize_

    from clipforge.configs import PreprocessConfig

    _register_tiny_fastvits()
    torch.manual_seed(0)
    model = randomize_(open_clip.model.CustomTextCLIP(**fastvit_model_cfg("mci012")), seed=4)
    bare = root / "fastvit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bare))
    inferred = load_quietly(bare)[0]
    config = inferred.config.replace(text_causal=False, vision=dataclasses.replace(inferred.config.vision, image_size=64))
    ours, _, _ = clipforge.load(bare, arch=config, preprocess=PreprocessConfig(image_size=64, mean=(0.0,) * 3, std=(1.0,) * 3))
    return clipforge.save(ours, root / "fastvit_tiny_clipforge.safetensors")


WRITERS = {
    "siglip": write_siglip, "siglip2": write_siglip2, "chinese_clip": write_chinese_clip,
    "xlm_roberta_clip": write_xlm_roberta_clip, "eva_clip": write_eva_clip, "mobileclip": write_mobileclip,
    "mobileclip_s": write_mobileclip_s,
}
FAMILY = {"siglip2": "siglip", "mobileclip_s": "mobileclip"}  # SigLIP 2 is the siglip family (config.variant "siglip2")


@pytest.fixture()
def tiny_xlmr_tower(monkeypatch):
    """open_clip configs name XLM-R towers by hub name; the test's tiny one joins clipforge's table."""
    from test_xlm_roberta_clip import TINY_TOWER

    from clipforge.checkpoint_formats import xlm_roberta
    from clipforge.configs import BertTextConfig

    monkeypatch.setitem(xlm_roberta.TEXT_TOWERS, TINY_TOWER, BertTextConfig(
        vocab_size=302, width=128, layers=2, heads=2, mlp_width=192, max_positions=80, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=1, context_length=77, positions="roberta", pooling="mean"))


def load_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bare open_clip files state no numerics (AssumptionWarning)
        return clipforge.load(path, dtype=torch.float32)


def _records(out_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train"]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ---- fast: the refusals and the sigmoid loss value --------------------------------------------------------


def test_softmax_loss_on_a_siglip_model_is_refused_in_one_line(tmp_path):
    init = write_siglip(tmp_path / "siglip")
    data = write_shapes_dataset(tmp_path / "data", 8)
    with pytest.raises(InvalidInputError) as info:
        train(train_config(init=str(init), train=str(data), loss="clip", batch_size=4, max_steps=1,
                           out_dir=str(tmp_path / "run"), **QUIET))
    message = str(info.value)
    assert "\n" not in message and "sigmoid" in message and "logit_bias" in message and 'optim.loss = "siglip"' in message


def test_siglip_loss_at_step_0_equals_the_references(tmp_path):
    """The trainer's loss on a SigLIP model (its own logit_scale and logit_bias) equals open_clip's
    SigLipLoss on the same features and transformers' SiglipModel(return_loss=True) on the same inputs;
    the bias's gradient lands on the model's parameter."""
    from open_clip.loss import SigLipLoss as RefSigLipLoss

    init = write_siglip(tmp_path / "siglip")
    hf_model = transformers.SiglipModel.from_pretrained(init).eval()
    model, _, tokenizer = clipforge.load(init, dtype=torch.float32)
    assert model.loss_kind == "siglip" and tokenizer.context_length == 64
    with torch.no_grad():  # a trained-looking scale and bias, not the init's round numbers
        model.logit_scale.fill_(math.log(117.3))
        model.logit_bias.fill_(-12.9)
        hf_model.logit_scale.fill_(math.log(117.3))
        hf_model.logit_bias.fill_(-12.9)
    pixels = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = tokenizer(["a red circle", "a blue square", "a green triangle", "a cat", "two dogs", "a photo of a red square"])

    loss_fn = build_loss(model.loss_kind, local_loss=True, dist=DistInfo(), model=model)
    assert list(loss_fn.parameters()) == []  # the model's bias is the one trained, the loss holds none
    module = TrainModule(model.eval(), loss_fn)
    ours = forward_backward(module, loss_fn, [(pixels, tokens)])

    with torch.no_grad():
        image = model.encode_image(pixels, normalize=True)
        text = model.encode_text(tokens, normalize=True)
        reference = RefSigLipLoss()(image, text, model.logit_scale.exp(), model.logit_bias)
        hf_loss = hf_model(input_ids=tokens, pixel_values=pixels, return_loss=True).loss
    # open_clip's SigLipLoss and transformers' loss are both sum / batch (the SigLIP paper's normalisation)
    assert abs(ours.item() - reference.item()) <= 1e-5, (ours.item(), reference.item())
    assert abs(ours.item() - hf_loss.item()) <= 1e-4, (ours.item(), hf_loss.item())
    assert model.logit_bias.grad is not None and model.logit_bias.grad.abs().item() > 0
    assert model.logit_scale.grad is not None


# ---- a few training steps per family (each well under 10 s on a CPU) ----------------------------------------------------------------

CASES = [  # (model written by its reference, loss: None = the family's own, extra settings)
    ("siglip", None, {}),
    ("siglip2", None, {}),
    ("chinese_clip", None, {}),
    ("xlm_roberta_clip", None, {}),
    ("eva_clip", None, {"grad_checkpointing": True}),
    ("mobileclip", None, {}),
    ("mobileclip_s", None, {"grad_checkpointing": True}),  # FastViT: its image tower runs unchecked
    ("eva_clip", "siglip", {}),  # a CLIP-family model may take the sigmoid loss (its bias then lives in the loss)
    ("siglip", None, {"freeze": "image"}),  # LiT on a SigLIP model
    ("chinese_clip", None, {"freeze": "text", "wise_ft_alpha": 0.5}),  # a locked BERT tower, WiSE-FT
]


@pytest.mark.parametrize("writer,loss,extra", CASES, ids=[f"{w}-{l or 'own'}{'-' + '-'.join(e) if e else ''}" for w, l, e in CASES])
def test_fine_tune_each_family(tmp_path, writer, loss, extra, request):
    if writer == "xlm_roberta_clip":
        request.getfixturevalue("tiny_xlmr_tower")
    (tmp_path / writer).mkdir()
    init = WRITERS[writer](tmp_path / writer)
    before, _, tokenizer = load_quietly(init)
    family = FAMILY.get(writer, writer)
    assert before.config.family == family
    expected_loss = loss or ("siglip" if family == "siglip" else "clip")
    assert (loss or before.loss_kind) == expected_loss

    # The trainer's collate tokenizes captions with the model's own tokenizer (SigLIP: padded to 64 with
    # its pad id; Chinese-CLIP: WordPiece with [PAD], which the model masks out), also after pickling
    # (DataLoader workers under spawn).
    size = before.config.image_size
    collate = pickle.loads(pickle.dumps(CollatePairs(size, 77, tokenizer=before.record.tokenizer)))
    captions = ["a red circle", "a blue square on white"]
    assert torch.equal(collate([(torch.zeros(3, size, size), c) for c in captions]).texts, tokenizer(captions))

    data = write_shapes_dataset(tmp_path / "data", 32, image_size=size)
    settings = dict(init=str(init), train=str(data), batch_size=16, max_steps=6, lr=1e-3, warmup_steps=0,
                    weight_decay=0.0, out_dir=str(tmp_path / "run"), **QUIET)
    if loss is not None:
        settings["loss"] = loss
    settings.update(extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(train_config(**settings))
    assert result.steps == 6 and result.skipped_samples == 0

    records = _records(tmp_path / "run")
    losses = [r["loss"] for r in records]
    assert all(math.isfinite(x) for x in losses), losses
    assert ("logit_bias" in records[0]) == (expected_loss == "siglip")
    assert min(losses[-2:]) < losses[0], losses  # the shapes are learnable: the loss goes down

    trained = result.model
    assert type(trained) is type(before)
    old, new = before.state_dict(), trained.state_dict()
    changed = [k for k in new if not torch.equal(old[k], new[k].cpu())]
    assert changed
    if family == "siglip" and expected_loss == "siglip":
        assert "logit_bias" in changed  # the model's own bias is the one trained
        assert records[-1]["logit_bias"] == pytest.approx(trained.logit_bias.item())
    if extra.get("freeze") == "image":
        assert not any(k.startswith("visual.") for k in changed) and any(k.startswith("text.") for k in changed)
    if extra.get("freeze") == "text":
        assert not any(k.startswith("text") for k in changed) and any(k.startswith("visual.") for k in changed)
    if "wise_ft_alpha" in extra:
        finetuned = clipforge.load(tmp_path / "run" / "final_finetuned.safetensors")[0].state_dict()
        for key in changed[:5]:
            torch.testing.assert_close(new[key], torch.lerp(old[key], finetuned[key], 0.5), rtol=0, atol=1e-6)

    # The final file loads as the same family, with the same tokenizer, and gives the same outputs.
    loaded, _, loaded_tokenizer = clipforge.load(result.final_path)
    assert type(loaded) is type(before) and loaded.config == trained.config
    texts = ["a red circle", "a blue square on white", "zzz"]
    tokens = loaded_tokenizer(texts)
    assert torch.equal(tokens, tokenizer(texts))
    pixels = torch.randn(3, 3, before.config.image_size, before.config.image_size, generator=torch.Generator().manual_seed(1))
    trained.eval()
    with torch.no_grad():
        diffs = {
            "image": _max_diff(loaded.encode_image(pixels), trained.encode_image(pixels)),
            "text": _max_diff(loaded.encode_text(tokens), trained.encode_text(tokens)),
            "logits": _max_diff(loaded.logits(loaded.encode_image(pixels, normalize=True), loaded.encode_text(tokens, normalize=True)),
                                trained.logits(trained.encode_image(pixels, normalize=True), trained.encode_text(tokens, normalize=True))),
        }
    for key, value in loaded.state_dict().items():  # the weights come back bit for bit
        assert torch.equal(value, new[key].cpu()), key
    # Same weights, same inputs: equal outputs up to the CPU kernels' rounding (measured 0 to 6e-7 for
    # SigLIP's attention-pool tower from run to run, 0 for the others).
    assert max(diffs.values()) <= 1e-6, diffs


def test_siglip_run_resumes_exactly(tmp_path):
    """A SigLIP run stopped after 2 steps and resumed to 4 ends with the weights (the model's
    logit_bias included) of an uninterrupted 4-step run, bit for bit."""
    init = write_siglip(tmp_path / "siglip")
    data = write_shapes_dataset(tmp_path / "data", 32)
    common = dict(init=str(init), train=str(data), batch_size=16, lr=1e-3, lr_schedule="constant",
                  weight_decay=0.0, save_every_steps=2, **QUIET)
    whole = train(train_config(max_steps=4, out_dir=str(tmp_path / "whole"), **common))
    train(train_config(max_steps=2, out_dir=str(tmp_path / "parts"), **common))
    resumed = train(train_config(max_steps=4, out_dir=str(tmp_path / "parts"), **common))
    assert resumed.steps == 4
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in _records(tmp_path / "parts")] == [r["loss"] for r in _records(tmp_path / "whole")]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_grad_checkpointing_gives_the_same_gradients(tmp_path, writer, request):
    """optim.grad_checkpointing on any family: the same loss and gradients (to float rounding) as
    without. Chinese-CLIP's and XLM-R's BERT text towers and MobileCLIP-S's FastViT image tower are
    not checkpointed (the family's other tower is)."""
    if writer == "xlm_roberta_clip":
        request.getfixturevalue("tiny_xlmr_tower")
    (tmp_path / writer).mkdir()
    model, _, tokenizer = load_quietly(WRITERS[writer](tmp_path / writer))
    size = model.config.image_size
    pixels = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokens = tokenizer(["a red circle", "a blue square", "a green star", "a yellow triangle"])
    results = []
    for checkpointing in (False, True):
        model.zero_grad(set_to_none=True)
        model.set_grad_checkpointing(checkpointing)
        loss_fn = build_loss(model.loss_kind, local_loss=True, dist=DistInfo(), model=model)
        module = TrainModule(model.train(), loss_fn)
        loss = forward_backward(module, loss_fn, [(pixels, tokens)])
        results.append((loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == len(list(model.parameters()))
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_missing_tokenizer_file_is_named_before_training(tmp_path):
    from clipforge.text import MissingTokenizerError

    init = write_siglip(tmp_path / "siglip")
    (init / "spiece.model").unlink()
    data = write_shapes_dataset(tmp_path / "data", 8)
    with pytest.raises(MissingTokenizerError, match="tokenizer"):
        train(train_config(init=str(init), train=str(data), batch_size=4, max_steps=1, out_dir=str(tmp_path / "run"), **QUIET))


@pytest.mark.slow
def test_siglip_model_two_processes_equal_one(tmp_path):
    """torchrun, 2 gloo processes x 4 pairs vs 1 process x 8: the same per-step losses and, after 4
    AdamW steps, the same weights (the model's logit_bias included, averaged by DDP)."""
    import os
    import shutil
    import subprocess
    import sys

    from safetensors.torch import load_file

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    init = write_siglip(tmp_path / "siglip")
    data = write_shapes_dataset(tmp_path / "data", 48)
    worker = Path(__file__).parent / "train_families_ddp_worker.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    for name, command in (("one", [sys.executable]), ("two", [torchrun, "--standalone", "--nproc_per_node", "2"])):
        run = subprocess.run(command + [str(worker), str(tmp_path / name), str(init), str(data)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-3000:]
    m1, m2 = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert [r["step"] for r in m1] == [r["step"] for r in m2] == [1, 2, 3, 4]
    for r1, r2 in zip(m1, m2):
        assert abs(r1["loss"] - r2["loss"]) <= 1e-5 and abs(r1["logit_bias"] - r2["logit_bias"]) <= 1e-5
    w1, w2 = load_file(tmp_path / "one/final.safetensors"), load_file(tmp_path / "two/final.safetensors")
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=0, atol=1e-4, msg=key)
