"""Chinese-CLIP: parity with transformers' ChineseCLIPModel, BertTokenizer and ChineseCLIPImageProcessor
on tiny random models saved in transformers' own format; zero-shot with Chinese templates; the CLI.

The vocabulary is built here (special tokens, common Chinese characters, ASCII letters and digits,
punctuation, a few English words and "##" pieces): the tokenizer tests compare clipforge's ids with
transformers' on real text over it, so they fail if either side splits differently.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import clipforge
from clipforge.configs import ChineseClipConfig
from clipforge.models import ChineseClipModel

transformers = pytest.importorskip("transformers")

CHINESE_CHARS = "一只猫狗的照片张模型年人大中国在是我你他这那有个了不和上下小好天日月水火山石花草鸟鱼马牛羊车书电脑手机北京上海清晰模糊特写幅画黑白"
WORDS = ["photo", "cat", "dog", "clip", "of", "a", "the", "##s", "##ing", "##ed", "mod", "##el", "caf", "##e"]
TEXTS = [
    "一只猫的照片",
    "CLIP模型 2024年",
    "一张狗的照片。",
    "Ｃａｔ！全角字符，标点；",
    "Café à la carte: naïve Photos of cats & dogs!",
    "北京 上海\t天\n日\u200b月",
    "未知字符𠀀和emoji🙂",
    "猫" * 80,  # longer than the context: truncated, [SEP] kept
    "",
]


def build_vocab() -> list[str]:
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces += list(CHINESE_CHARS)
    pieces += [c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    pieces += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    pieces += list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + list("。，；！？：、（）《》")
    pieces += WORDS
    return list(dict.fromkeys(pieces))


def tiny_hf_config(vocab_size: int):
    from transformers import ChineseCLIPConfig

    return ChineseCLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64, type_vocab_size=2),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, projection_dim=48),
        projection_dim=48,
    )


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Fresh LayerNorms are identity and biases zero: random ones make the test see whether each is used."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


OFA_PREPROCESSOR = {  # the shape of OFA-Sys/chinese-clip-vit-*'s preprocessor_config.json: resize, no crop
    "crop_size": 32, "do_center_crop": False, "do_normalize": True, "do_resize": True, "do_convert_rgb": True,
    "image_processor_type": "ChineseCLIPImageProcessor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": {"height": 32, "width": 32},
}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    """A tiny ChineseCLIPModel directory as transformers writes it, plus vocab.txt and the processor config."""
    from transformers import ChineseCLIPModel

    torch.manual_seed(0)
    vocab = build_vocab()
    model = ChineseCLIPModel(tiny_hf_config(len(vocab))).eval()
    perturb(model)
    directory = tmp_path_factory.mktemp("chinese_clip")
    model.save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    (directory / "preprocessor_config.json").write_text(json.dumps(OFA_PREPROCESSOR))
    return directory


@pytest.fixture(scope="module")
def loaded(hf_dir):
    return clipforge.load(hf_dir)


def hf_tokenizers(directory: Path):
    from transformers import BertTokenizer, BertTokenizerFast

    return (BertTokenizer(str(directory / "vocab.txt"), do_lower_case=True),
            BertTokenizerFast(str(directory / "vocab.txt"), do_lower_case=True))


def test_tokenizer_matches_bert_tokenizers(hf_dir, loaded):
    _, _, tokenizer = loaded
    ours = tokenizer(TEXTS)
    assert ours.shape == (len(TEXTS), 52)
    for reference in hf_tokenizers(hf_dir):
        theirs = reference(TEXTS, padding="max_length", max_length=52, truncation=True, return_tensors="pt")
        assert torch.equal(ours, theirs["input_ids"]), type(reference).__name__
        assert torch.equal(ours != tokenizer.pad_token_id, theirs["attention_mask"].bool())
    # The Chinese characters are single pieces (not [UNK]), the rare one is [UNK], [SEP] survives truncation.
    unk = tokenizer.unk_token_id
    assert unk not in tokenizer.encode("一只猫的照片") and unk in tokenizer.encode("𠀀")
    assert ours[7, -1] == tokenizer.sep_token_id


def test_tokenizer_case_kept_without_lower_case(hf_dir):
    from transformers import BertTokenizer

    from clipforge.text.wordpiece import WordPieceTokenizer

    vocab = (hf_dir / "vocab.txt").read_bytes() + b"Cat\n"
    path = hf_dir.parent / "vocab_cased.txt"
    path.write_bytes(vocab)
    ours = WordPieceTokenizer(vocab, lowercase=False)(["Cat cat CAT", "Café"])
    theirs = BertTokenizer(str(path), do_lower_case=False)(["Cat cat CAT", "Café"], padding="max_length",
                                                            max_length=52, return_tensors="pt")["input_ids"]
    assert torch.equal(ours, theirs)


def test_parity_with_transformers(hf_dir, loaded):
    from transformers import ChineseCLIPModel

    model, _, tokenizer = loaded
    assert isinstance(model, ChineseClipModel) and isinstance(model.config, ChineseClipConfig)
    reference = ChineseCLIPModel.from_pretrained(hf_dir).eval()
    texts = TEXTS[:6]  # different lengths: padding must be masked out
    tokens = tokenizer(texts)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # transformers padded to the longest text only: pooling at [CLS] with masked padding makes it equal.
        inputs = hf_tokenizers(hf_dir)[1](texts, padding=True, return_tensors="pt")
        out = reference(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], pixel_values=pixels)
        image = model.encode_image(pixels, normalize=True)
        text = model.encode_text(tokens, normalize=True)
        logits_per_image = model(pixels, tokens).logits_per_image
    diffs = {
        "image_embeds": (image - out.image_embeds).abs().max().item(),
        "text_embeds": (text - out.text_embeds).abs().max().item(),
        "logits_per_image": (logits_per_image - out.logits_per_image).abs().max().item(),
    }
    print("chinese-clip parity max abs diff:", diffs)
    assert all(d <= 1e-5 for d in diffs.values()), diffs
    # The texts differ, so the embeddings must too (a model ignoring its input would pass the above only by luck).
    assert (text[0] - text[1]).abs().max() > 1e-3


def test_text_hidden_states_match_transformers(hf_dir, loaded):
    """encode_text_full: per-token states as transformers' ChineseCLIPTextModel gives them (real tokens;
    what padding positions hold is the model's business in both), embeddings equal to encode_text."""
    from transformers import ChineseCLIPModel

    model, _, tokenizer = loaded
    reference = ChineseCLIPModel.from_pretrained(hf_dir).eval()
    tokens = tokenizer(TEXTS[:4])
    real = tokens != tokenizer.pad_token_id
    with torch.no_grad():
        out = model.encode_text_full(tokens, output_hidden_states=True)
        theirs = reference.text_model(input_ids=tokens, attention_mask=real.long(), output_hidden_states=True)
        assert torch.equal(out.text_embeds, model.encode_text(tokens))
    assert len(out.hidden_states) == len(theirs.hidden_states) == 3
    for ours, want in zip([*out.hidden_states, out.last_hidden_state], [*theirs.hidden_states, theirs.last_hidden_state]):
        assert (ours - want)[real].abs().max().item() <= 1e-5


def test_preprocess_matches_image_processor(hf_dir, loaded):
    import numpy as np
    from PIL import Image
    from transformers import ChineseCLIPImageProcessor

    _, preprocess, _ = loaded
    assert preprocess.config.resize_mode == "squash" and preprocess.config.image_size == 32
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8))
    theirs = ChineseCLIPImageProcessor.from_pretrained(hf_dir)(image, return_tensors="pt")["pixel_values"][0]
    diff = (preprocess(image) - theirs).abs().max().item()
    print("chinese-clip preprocess (squash) max abs diff:", diff)
    assert diff <= 1e-5
    # transformers' class defaults: shortest side, then centre crop.
    config = dict(OFA_PREPROCESSOR, do_center_crop=True, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    cropped = hf_dir.parent / "cropped"
    cropped.mkdir(exist_ok=True)
    (cropped / "preprocessor_config.json").write_text(json.dumps(config))
    from clipforge.checkpoint_formats.reading import hf_preprocess_config
    from clipforge.image import Preprocess

    theirs = ChineseCLIPImageProcessor.from_pretrained(cropped)(image, return_tensors="pt")["pixel_values"][0]
    ours = Preprocess(hf_preprocess_config(cropped))(image)
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_save_and_reload(tmp_path, hf_dir, loaded):
    """clipforge's own file keeps the vocabulary and the Chinese templates; the transformers
    directory clipforge writes opens in transformers with the same outputs."""
    from transformers import BertTokenizer, ChineseCLIPModel

    model, _, tokenizer = loaded
    tokens = tokenizer(TEXTS[:3])
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(pixels, tokens).logits_per_image
    path = clipforge.save(model, tmp_path / "cc.safetensors")
    again, _, tokenizer2 = clipforge.load(path)
    assert again.record.tokenizer.prompt_templates == "chinese"
    assert torch.equal(tokenizer2(TEXTS), tokenizer(TEXTS))
    with torch.no_grad():
        assert torch.equal(again(pixels, tokens).logits_per_image, want)

    out_dir = clipforge.save(model, tmp_path / "hf", format="hf")
    reference = ChineseCLIPModel.from_pretrained(out_dir).eval()
    hf_tokens = BertTokenizer.from_pretrained(out_dir)(TEXTS[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = reference(**hf_tokens, pixel_values=pixels).logits_per_image
    assert (theirs - want).abs().max().item() <= 1e-5


def test_one_tower_load(hf_dir, loaded):
    model, _, tokenizer = loaded
    text_only, _, _ = clipforge.load(hf_dir, tower="text")
    assert text_only.visual is None
    tokens = tokenizer(TEXTS[:2])
    with torch.no_grad():
        assert torch.equal(text_only.encode_text(tokens), model.encode_text(tokens))
    with pytest.raises(clipforge.models.TowerNotLoadedError):
        text_only.encode_image(torch.zeros(1, 3, 32, 32))


def test_zero_shot_uses_chinese_templates(loaded):
    from clipforge.tasks.templates import CHINESE_TEMPLATES
    from clipforge.tasks.zero_shot import build_classifier, classify

    model, _, tokenizer = loaded
    classifier = build_classifier(model, tokenizer, ["猫", "狗"], progress=False)
    assert classifier.templates == list(CHINESE_TEMPLATES)
    # The prompts are Chinese text the vocabulary covers: none of them is mostly [UNK].
    ids = tokenizer([t.format("猫") for t in CHINESE_TEMPLATES])
    assert ((ids == tokenizer.unk_token_id).sum(dim=1) == 0).all()
    result = classify(model, classifier, torch.randn(2, 3, 32, 32), top_k=2)
    assert {label for label, _ in result[0]} == {"猫", "狗"}


def test_cli_classify_prints_chinese_labels(tmp_path, hf_dir):
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (200, 120, 30)).save(image)
    env = {"PYTHONIOENCODING": "utf-8", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(clipforge.__file__).parent.parent), "HF_HUB_OFFLINE": "1"}
    run = [sys.executable, "-m", "clipforge.cli.main", "classify", str(image), "--model", str(hf_dir), "--labels", "猫,狗"]
    done = subprocess.run(run + ["--json"], capture_output=True, text=True, encoding="utf-8", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    predictions = json.loads(done.stdout)["results"][0]["predictions"]
    assert {p["label"] for p in predictions} == {"猫", "狗"}
    assert '"猫"' in done.stdout  # written as the character, not a \u escape
    done = subprocess.run(run, capture_output=True, text=True, encoding="utf-8", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "猫" in done.stdout and "狗" in done.stdout, done.stdout


def test_missing_vocabulary_is_named(tmp_path, hf_dir):
    import shutil

    bare = tmp_path / "no_vocab"
    shutil.copytree(hf_dir, bare)
    (bare / "vocab.txt").unlink()
    model, _, tokenizer = clipforge.load(bare)  # the model loads; tokenizing text names the missing file
    assert model.encode_text(torch.tensor([[2, 7, 3, 0]])).shape == (1, 48)
    with pytest.raises(clipforge.errors.ClipforgeError, match="vocab.txt"):
        tokenizer(["一只猫"])


def test_named_model_resolves_from_the_hf_cache(tmp_path, monkeypatch, hf_dir, loaded):
    """`load("chinese-clip-vit-base-patch16")` and the hub id find a cached snapshot offline, tokenizer
    included (the zoo entry's architecture is swapped for the tiny one these weights have)."""
    import dataclasses

    from test_hub_cache import make_hf_cache

    from clipforge import model_zoo

    for var in ("HF_ENDPOINT", "HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "clipforge"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name, hub_id = "chinese-clip-vit-base-patch16", "OFA-Sys/chinese-clip-vit-base-patch16"
    assert (name, hub_id) in model_zoo.list_models()
    make_hf_cache(tmp_path / "hf", hub_id, {p.name: p.read_bytes() for p in hf_dir.iterdir() if p.is_file()})
    model, _, tokenizer = loaded
    entry = model_zoo.NAMED_MODELS[name]
    monkeypatch.setitem(model_zoo.NAMED_MODELS, name, dataclasses.replace(entry, architecture=model.config))
    tokens = tokenizer(TEXTS[:3])
    for source in (name, hub_id):
        named, preprocess, named_tokenizer = clipforge.load(source, offline=True)
        assert named.record.tokenizer.prompt_templates == "chinese" and preprocess.config.resize_mode == "squash"
        assert torch.equal(named_tokenizer(TEXTS), tokenizer(TEXTS))
        with torch.no_grad():
            assert torch.equal(named.encode_text(tokens), model.encode_text(tokens))
    # The name stands for its image tower: other weights under it are refused.
    monkeypatch.setitem(model_zoo.NAMED_MODELS, name, entry)
    with pytest.raises(clipforge.errors.ClipforgeError, match=name):
        clipforge.load(name, offline=True)


def test_convert_to_transformers_and_onnx_export(tmp_path, hf_dir, loaded):
    """`clipforge convert --to hf` checks the written directory with transformers (which needs the
    padding mask the model names); the ONNX text graph masks padding too (texts of different lengths)."""
    from clipforge.conversion import convert

    report = convert(hf_dir, tmp_path / "hf", "hf")
    assert report.max_abs_diff == 0 and "reads the same numbers" in report.library_check, report
    pytest.importorskip("onnxruntime")
    from clipforge.export import export_onnx, onnx_parity

    model, _, tokenizer = loaded
    image_path, text_path = export_onnx(model, tmp_path / "onnx")
    diffs = onnx_parity(model, image_path, text_path, tokens=tokenizer(TEXTS[:4]))
    print("chinese-clip onnx max abs diff:", diffs)
    assert max(diffs.values()) <= 1e-4, diffs


def test_bad_inputs_are_named(loaded):
    model, _, tokenizer = loaded
    with pytest.raises(clipforge.errors.InvalidInputError, match="pixels must be"):
        model.encode_image(torch.zeros(1, 3, 16, 16))
    with pytest.raises(clipforge.errors.InvalidInputError, match="position table"):
        model.encode_text(torch.ones(1, 65, dtype=torch.long))  # over the 64 positions of the tiny config
    with pytest.raises(clipforge.errors.InvalidInputError, match="truncate"):
        tokenizer(["猫" * 80], truncate=False)
    from clipforge.text.wordpiece import WordPieceTokenizer

    with pytest.raises(clipforge.errors.InvalidInputError, match="special token"):
        WordPieceTokenizer("a\nb\n".encode())


@pytest.mark.parametrize("change", [
    {"text_config": {"num_hidden_layers": 10**9}},
    {"text_config": {"hidden_size": "wide"}},
    {"vision_config": {"hidden_act": "swish"}},
    {"text_config": {"num_attention_heads": 7}},
])
def test_untrusted_config_is_refused_by_name(tmp_path, hf_dir, change):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(hf_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    for section, values in change.items():
        config[section].update(values)
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(clipforge.errors.ClipforgeError) as info:
        clipforge.load(bad)
    assert "config.json" in str(info.value) and "\n" not in str(info.value)
