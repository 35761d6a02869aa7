"""open_clip's multilingual CLIP (xlm-roberta-base-ViT-B-32's architecture, tiny): parity of clipforge's
model and tokenizer with open_clip's CLIP + HFTextEncoder (transformers' XLMRobertaModel inside) and
its HFTokenizer, on random weights saved in open_clip's hub-directory layout.

open_clip builds the text tower from a transformers config it looks up by name; here the name is a
local directory holding a tiny XLMRobertaConfig (no hub), and the tokenizer is a SentencePiece
Unigram model trained in the test on generated multilingual text (Chinese included).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch

import clipforge
from clipforge.checkpoint_formats import xlm_roberta
from clipforge.configs import BertTextConfig, XlmRobertaClipConfig
from clipforge.models import XlmRobertaClipModel

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

TINY_TOWER = "xlm-roberta-tiny-test"  # the name open_clip_config.json gives the text tower
WORDS = ("the cat dog photo of a an picture Katze Hund Foto eine ein chat chien une photo gato perro una "
         "foto кошка собака фото").split()
CHINESE = "一只猫狗的照片张模型年人大中国在是我你他这那有个了不和"
TEXTS = [
    "a photo of a cat",
    "一只猫的照片",
    "Foto einer Katze, 猫!",
    "ünïcödé ☃ zzz &amp; more",
    "",
    "  many   spaces\there ",
    "ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ１２３",
    "chat " * 60,  # longer than the context: truncated, </s> kept
]


def train_sentencepiece(directory: Path) -> Path:
    import sentencepiece

    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) + " "
             + "".join(rng.choice(CHINESE) for _ in range(rng.randint(2, 8))) for _ in range(2000)]
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(lines), encoding="utf-8")
    # XLM-R's SentencePiece ids: <unk> 0, <s> 1, </s> 2 (fairseq's layout is put on top).
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(directory / "spm"), vocab_size=300, model_type="unigram",
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    return directory / "spm.model"


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


VISION_CFG = {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32}


def write_open_clip_xlm_roberta_clip(root: Path, spm: Path, width: int = 128, mlp_width: int = 192):
    """A tiny open_clip XLM-R CLIP (random weights, perturbed) saved in open_clip's hub layout under
    root/hub: open_clip_model.safetensors, open_clip_config.json (naming the tower TINY_TOWER, as the
    released configs name theirs by hub id) and the SentencePiece model. Returns (model, hub)."""
    import open_clip
    from safetensors.torch import save_file
    from transformers import XLMRobertaConfig

    tower_dir = root / TINY_TOWER
    XLMRobertaConfig(vocab_size=302, hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=mlp_width, max_position_embeddings=80, type_vocab_size=1, pad_token_id=1,
                     bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5).save_pretrained(tower_dir)
    torch.manual_seed(0)
    text_cfg = {"hf_model_name": str(tower_dir), "hf_tokenizer_name": str(tower_dir), "hf_pooler_type": "mean_pooler",
                "hf_proj_type": "mlp", "hf_model_pretrained": False}
    model = open_clip.CustomTextCLIP(embed_dim=48, vision_cfg=VISION_CFG, text_cfg=text_cfg).eval()
    perturb(model)
    hub = root / "hub"
    hub.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, hub / "open_clip_model.safetensors")
    model_cfg = {"embed_dim": 48, "vision_cfg": VISION_CFG,
                 "text_cfg": {"hf_model_name": TINY_TOWER, "hf_tokenizer_name": TINY_TOWER, "hf_pooler_type": "mean_pooler"}}
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}))
    (hub / "sentencepiece.bpe.model").write_bytes(spm.read_bytes())
    return model, hub


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(open_clip model, open_clip tokenizer, hub directory clipforge loads)."""
    from open_clip.tokenizer import HFTokenizer

    root = tmp_path_factory.mktemp("xlmr")
    spm = train_sentencepiece(root)
    tokenizer_dir = root / "tokenizer"
    tokenizer_dir.mkdir()
    (tokenizer_dir / "sentencepiece.bpe.model").write_bytes(spm.read_bytes())
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMRobertaTokenizer"}))
    model, hub = write_open_clip_xlm_roberta_clip(root, spm)
    return model, HFTokenizer(str(tokenizer_dir), context_length=77), hub


@pytest.fixture()
def tiny_tower(monkeypatch):
    """clipforge knows towers by open_clip's name for them; the test's tiny one joins the table."""
    monkeypatch.setitem(xlm_roberta.TEXT_TOWERS, TINY_TOWER, BertTextConfig(
        vocab_size=302, width=128, layers=2, heads=2, mlp_width=192, max_positions=80, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=1, context_length=77, positions="roberta", pooling="mean"))


def test_tokenizer_matches_open_clip(reference, tiny_tower):
    _, oc_tokenizer, hub = reference
    _, _, tokenizer = clipforge.load(hub)
    ours, theirs = tokenizer(TEXTS), oc_tokenizer(TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), 77)
    assert torch.equal(ours, theirs)
    assert ours[-1, -1] == 2 and (ours[1] > 3).sum() >= 2  # </s> kept; Chinese text gets real pieces


def test_parity_with_open_clip(reference, tiny_tower):
    oc_model, oc_tokenizer, hub = reference
    model, _, tokenizer = clipforge.load(hub)
    assert isinstance(model, XlmRobertaClipModel) and isinstance(model.config, XlmRobertaClipConfig)
    assert model.config.vision.heads == 2 and model.config.text.heads == 2
    tokens = tokenizer(TEXTS)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        oc_image = oc_model.encode_image(pixels, normalize=True)
        oc_text = oc_model.encode_text(oc_tokenizer(TEXTS), normalize=True)
        oc_logits = oc_model.logit_scale.exp() * oc_image @ oc_text.t()
        image = model.encode_image(pixels, normalize=True)
        text = model.encode_text(tokens, normalize=True)
        logits = model(pixels, tokens).logits_per_image
    diffs = {"image_embeds": (image - oc_image).abs().max().item(), "text_embeds": (text - oc_text).abs().max().item(),
             "logits_per_image": (logits - oc_logits).abs().max().item()}
    print("xlm-roberta clip parity max abs diff:", diffs)
    assert all(d <= 1e-5 for d in diffs.values()), diffs
    assert (text[0] - text[1]).abs().max() > 1e-3


def test_clipforge_file_round_trip(tmp_path, reference, tiny_tower):
    _, _, hub = reference
    model, _, tokenizer = clipforge.load(hub)
    path = clipforge.save(model, tmp_path / "xlmr.safetensors")
    again, _, tokenizer2 = clipforge.load(path)
    tokens = tokenizer(TEXTS[:3])
    assert torch.equal(tokenizer2(TEXTS), tokenizer(TEXTS))
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(pixels, tokens).logits_per_image, model(pixels, tokens).logits_per_image)


def test_open_clip_config_of_the_released_model():
    """open_clip's own model config for xlm-roberta-base-ViT-B-32 reads as the zoo's architecture."""
    cfg = xlm_roberta.open_clip_config_to_config(open_clip.get_model_config("xlm-roberta-base-ViT-B-32"))
    assert cfg.vision.width == 768 and cfg.vision.patch_size == 32 and cfg.vision.heads == 12
    assert cfg.text == xlm_roberta.TEXT_TOWERS["xlm-roberta-base"] and cfg.embed_dim == 512
    assert cfg.projection_hidden == (768 + 512) // 2


def test_unknown_text_tower_is_named(reference):
    _, _, hub = reference
    with pytest.raises(clipforge.errors.ClipforgeError, match=TINY_TOWER):
        clipforge.load(hub)  # without the tiny tower in the table: its sizes are unknown


def test_named_weights_from_the_hf_cache_with_the_tokenizer_repo(tmp_path, monkeypatch, reference, tiny_tower):
    """`load("xlm-roberta-base-ViT-B-32", weights="laion5b_s13b_b90k")` offline: the weights from the laion
    repo's cached snapshot (which holds no tokenizer), the tokenizer from the FacebookAI/xlm-roberta-base
    repo open_clip names (the zoo's architecture is swapped for the tiny one these weights have)."""
    from test_hub_cache import make_hf_cache

    from clipforge import model_zoo

    _, oc_tokenizer, hub = reference
    for var in ("HF_ENDPOINT", "HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "clipforge"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name, tag = "xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"
    record = model_zoo.get_weights(name, tag)
    weights_files = {n: (hub / n).read_bytes() for n in ("open_clip_model.safetensors", "open_clip_config.json")}
    make_hf_cache(tmp_path / "hf", record.hf_hub_id, weights_files)
    make_hf_cache(tmp_path / "hf", record.tokenizer_file[0],
                  {record.tokenizer_file[1]: (hub / "sentencepiece.bpe.model").read_bytes()})
    direct, _, _ = clipforge.load(hub)
    monkeypatch.setitem(model_zoo.FAMILY_ARCHITECTURES, name, direct.config)
    monkeypatch.setitem(model_zoo.FAMILY_WEIGHTS, (name, tag), dataclasses.replace(record, preprocess=direct.record.preprocess))
    model, _, tokenizer = clipforge.load(name, weights=tag, offline=True)
    assert model.record.provenance.weights_tag == tag
    assert torch.equal(tokenizer(TEXTS), oc_tokenizer(TEXTS))
    tokens = tokenizer(TEXTS[:3])
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), direct.encode_text(tokens))


def test_key_maps_invert_and_fit_open_clip(reference, tiny_tower):
    """canonical -> open_clip keys load strictly into open_clip's own model, and map back exactly."""
    oc_model, _, hub = reference
    model, _, _ = clipforge.load(hub)
    canonical = model.state_dict()
    as_open_clip = xlm_roberta.canonical_to_open_clip(canonical)
    missing, unexpected = copy.deepcopy(oc_model).load_state_dict(as_open_clip, strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing), (missing, unexpected)
    back = xlm_roberta.open_clip_to_canonical(as_open_clip)
    assert back.keys() == canonical.keys() and all(torch.equal(back[k], canonical[k]) for k in back)
