"""SigLIP: transformers' SiglipModel and open_clip's SigLIP files loaded by clipforge, parity on
the same inputs (fp32, <= 1e-5), the SentencePiece tokenizer against transformers' SiglipTokenizer
(padding to 64 included), preprocessing against SiglipImageProcessor, sigmoid classification."""

from __future__ import annotations

import pytest
import torch

import clipforge
from clipforge.models import SiglipModel
from siglip_helpers import TEXTS, open_clip_siglip, spm_model, tiny_config, write_hf_siglip_dir

TOL = 1e-5


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_siglip")
    model, tokenizer = write_hf_siglip_dir(path)
    return model, tokenizer, path


@pytest.fixture(scope="module")
def loaded(hf_dir):
    return clipforge.load(hf_dir[2])


def _pixels(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_hf_directory_loads_as_siglip_with_its_record(loaded):
    model, preprocess, tokenizer = loaded
    assert isinstance(model, SiglipModel)
    assert model.record.family == "siglip"
    assert model.config.activation == "gelu_tanh" and model.config.layer_norm_eps == 1e-6
    assert model.record.preprocess.resize_mode == "squash"
    assert model.record.preprocess.mean == (0.5, 0.5, 0.5)
    assert tokenizer.context_length == 64 and tokenizer.pad_token_id == 1 and tokenizer.eos_token_id == 1


def test_parity_with_transformers_siglip_model(hf_dir, loaded):
    hf, hf_tok, _ = hf_dir
    model, _, tokenizer = loaded
    pixels = _pixels()
    texts = TEXTS[:6]
    ref_ids = hf_tok(texts, padding="max_length", max_length=64, truncation=True, return_tensors="pt").input_ids
    ours_ids = tokenizer(texts)
    assert torch.equal(ours_ids, ref_ids)
    with torch.no_grad():
        ref = hf(input_ids=ref_ids, pixel_values=pixels)
        image = model.encode_image(pixels, normalize=True)
        text = model.encode_text(ours_ids, normalize=True)
        logits = model.logits(image, text)
        out = model(pixels, ours_ids)
    diffs = {"image_embeds": _max_diff(image, ref.image_embeds), "text_embeds": _max_diff(text, ref.text_embeds),
             "logits_per_image": _max_diff(logits, ref.logits_per_image)}
    print("SigLIP vs transformers", diffs)
    assert max(diffs.values()) <= TOL, diffs
    assert torch.equal(out.logits_per_image, logits)
    # The probabilities are the sigmoid of the logits, each pair on its own (rows do not sum to 1).
    probs = model.probabilities(image, text)
    assert _max_diff(probs, torch.sigmoid(ref.logits_per_image)) <= TOL
    pair = model.pair_probabilities(image, text[:3])
    assert _max_diff(pair, torch.sigmoid(ref.logits_per_image).diagonal()[:3]) <= TOL


def test_padding_to_max_length_is_what_the_model_reads(hf_dir, loaded):
    """SigLIP pools at the last position: padding to the longest text (transformers' padding=True)
    gives other embeddings. clipforge always pads to 64 with the pad id."""
    hf, hf_tok, _ = hf_dir
    model, _, tokenizer = loaded
    ids = tokenizer(["a photo of a cat"])
    assert ids.shape == (1, 64)
    n = int((ids[0] != tokenizer.pad_token_id).sum())  # the text's pieces; eos and padding are both id 1
    assert n > 2 and (ids[0, n:] == 1).all() and (ids[0, :n] != 1).all()
    short = hf_tok(["a photo of a cat"], padding=True, return_tensors="pt").input_ids
    with torch.no_grad():
        ours = model.encode_text(ids)
        ref_max = hf.get_text_features(input_ids=hf_tok(["a photo of a cat"], padding="max_length", max_length=64,
                                                         return_tensors="pt").input_ids)
        ref_short = hf.get_text_features(input_ids=short)
    ref_max = getattr(ref_max, "pooler_output", ref_max)
    ref_short = getattr(ref_short, "pooler_output", ref_short)
    assert _max_diff(ours, ref_max) <= TOL
    assert _max_diff(ours, ref_short) > 1e-3  # the trap is real: a shorter padding changes the embedding


def test_tokenizer_ids_match_siglip_tokenizer_on_real_text(hf_dir, loaded):
    from tokenizer_corpus import debian_descriptions

    _, hf_tok, _ = hf_dir
    tokenizer = loaded[2]
    texts = TEXTS + debian_descriptions()[1][:200]
    ref = hf_tok(texts, padding="max_length", max_length=64, truncation=True, return_tensors="pt").input_ids
    ours = tokenizer(texts)
    mismatched = [texts[i] for i in range(len(texts)) if not torch.equal(ours[i], ref[i])]
    assert not mismatched, mismatched[:5]


def test_hidden_states_match_siglip_vision_model(hf_dir, loaded):
    from transformers import SiglipVisionModel

    vision = SiglipVisionModel.from_pretrained(hf_dir[2]).eval()
    model = loaded[0]
    pixels = _pixels(2, seed=3)
    with torch.no_grad():
        ref = vision(pixel_values=pixels, output_hidden_states=True)
        ours = model.encode_image_full(pixels, output_hidden_states=True)
        tokens = model.image_tokens(pixels)
    assert len(ours.hidden_states) == len(ref.hidden_states) == 3
    worst = max(_max_diff(a, b) for a, b in zip(ours.hidden_states, ref.hidden_states))
    print("SigLIP hidden states vs SiglipVisionModel", worst)
    assert worst <= TOL
    assert _max_diff(ours.last_hidden_state, ref.last_hidden_state) <= TOL
    assert _max_diff(ours.pooled, ref.pooler_output) <= TOL
    assert ours.num_prefix_tokens == 0
    assert torch.equal(tokens, ours.hidden_states[-2])  # no class token to drop


def test_preprocess_matches_siglip_image_processor(hf_dir, loaded):
    from image_fixtures import corpus_sample
    from PIL import Image
    from transformers import SiglipImageProcessor

    processor = SiglipImageProcessor.from_pretrained(hf_dir[2])
    preprocess = loaded[1]
    images = [Image.open(p).convert("RGB") for p in corpus_sample(3)]
    ref = processor(images=images, return_tensors="pt").pixel_values
    ours = torch.stack([preprocess(im) for im in images])
    assert ours.shape == ref.shape == (3, 3, 32, 32)
    diff = _max_diff(ours, ref)
    print("SigLIP preprocess vs SiglipImageProcessor", diff)
    assert diff <= 2 / 255 * 2  # uint8 rounding of the resized image, scaled by 1/std = 2


def test_zero_shot_classify_returns_sigmoid_probabilities(hf_dir, loaded):
    from clipforge.tasks.zero_shot import build_classifier, probabilities

    hf, hf_tok, _ = hf_dir
    model, _, tokenizer = loaded
    labels = ["cat", "dog", "rose"]
    classifier = build_classifier(model, tokenizer, labels, templates=["{}"], progress=False)
    pixels = _pixels(2, seed=5)
    probs = probabilities(model, classifier, pixels)
    with torch.no_grad():
        ids = hf_tok(labels, padding="max_length", max_length=64, return_tensors="pt").input_ids
        ref = torch.sigmoid(hf(input_ids=ids, pixel_values=pixels).logits_per_image)
    assert _max_diff(probs, ref) <= TOL
    assert not torch.allclose(probs.sum(-1), torch.ones(2))  # not a softmax


def test_one_tower_loading(hf_dir, loaded):
    path = hf_dir[2]
    image_only = clipforge.load(path, tower="image")[0]
    text_only = clipforge.load(path, tower="text")[0]
    assert image_only.text is None and text_only.visual is None
    pixels, ids = _pixels(1), loaded[2](["a cat"])
    with torch.no_grad():
        assert torch.equal(image_only.encode_image(pixels), loaded[0].encode_image(pixels))
        assert torch.equal(text_only.encode_text(ids), loaded[0].encode_text(ids))
    with pytest.raises(clipforge.models.TowerNotLoadedError):
        image_only.encode_text(ids)


def test_clipforge_and_hf_round_trip(tmp_path, hf_dir, loaded):
    from transformers import SiglipModel as HFSiglip
    from transformers import SiglipTokenizer

    model = loaded[0]
    saved = clipforge.save(model, tmp_path / "m.safetensors")
    again, _, tok = clipforge.load(saved)
    assert again.record == model.record and tok.pad_token_id == 1
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    out = clipforge.save(model, tmp_path / "hf", format="hf")
    hf = HFSiglip.from_pretrained(out).eval()
    hf_tok = SiglipTokenizer.from_pretrained(out)
    ids = hf_tok(TEXTS[:3], padding="max_length", max_length=64, return_tensors="pt").input_ids
    assert torch.equal(ids, tok(TEXTS[:3]))
    with torch.no_grad():
        assert _max_diff(hf(input_ids=ids, pixel_values=_pixels(2)).logits_per_image, model(_pixels(2), ids).logits_per_image) <= TOL


def test_parity_with_open_clip_siglip(tmp_path):
    from safetensors.torch import save_file

    oc = open_clip_siglip()
    path = tmp_path / "open_clip_siglip.safetensors"
    save_file({k: v.contiguous() for k, v in oc.state_dict().items()}, str(path))
    # open_clip's SigLIP runs timm's and its own nn.GELU (exact), not the tanh approximation.
    model = clipforge.load(path, arch=tiny_config(activation="gelu"))[0]
    pixels = _pixels(3, seed=7)
    ids = torch.randint(3, 500, (4, 64), generator=torch.Generator().manual_seed(0))
    ids[:, 20:] = 1
    with torch.no_grad():
        img_ref, txt_ref = oc.encode_image(pixels, normalize=True), oc.encode_text(ids, normalize=True)
        ref_logits = oc.logit_scale.exp() * img_ref @ txt_ref.t() + oc.logit_bias
        image, text = model.encode_image(pixels, normalize=True), model.encode_text(ids, normalize=True)
    diffs = {"image": _max_diff(image, img_ref), "text": _max_diff(text, txt_ref),
             "logits": _max_diff(model.logits(image, text), ref_logits)}
    print("SigLIP vs open_clip", diffs)
    assert max(diffs.values()) <= TOL, diffs


def test_open_clip_siglip_config_is_read_from_its_timm_name():
    import open_clip

    from clipforge.checkpoint_formats.siglip import open_clip_config_to_config

    cfg = open_clip_config_to_config(open_clip.get_model_config("ViT-SO400M-14-SigLIP-384"))
    assert (cfg.vision.width, cfg.vision.layers, cfg.vision.mlp_width, cfg.vision.image_size) == (1152, 27, 4304, 384)
    assert cfg.text.context_length == 64 and cfg.activation == "gelu"


def test_tokenizer_needs_its_model_file(tmp_path, hf_dir):
    import shutil

    path = tmp_path / "no_tok"
    shutil.copytree(hf_dir[2], path)
    (path / "spiece.model").unlink()
    model, _, tokenizer = clipforge.load(path)  # the model loads; only tokenizing text needs the file
    assert tokenizer.context_length == 64
    with pytest.raises(clipforge.errors.InvalidInputError, match="SentencePiece tokenizer file"):
        tokenizer(["a cat"])


def test_spm_model_is_deterministic():
    assert spm_model("t5") == spm_model("t5")


def test_cli_classify_score_index_search_on_a_siglip_directory(tmp_path, hf_dir, loaded, capsys):
    """The CLI is family-blind: classify prints the sigmoid probabilities transformers gives."""
    import json
    import shutil

    from image_fixtures import corpus_sample
    from PIL import Image
    from transformers import SiglipImageProcessor

    from clipforge.cli.main import main

    hf, hf_tok, path = hf_dir
    folder = tmp_path / "images"
    folder.mkdir()
    for i, p in enumerate(corpus_sample(3)):
        shutil.copy(p, folder / f"im{i}{p.suffix}")
    image = sorted(folder.iterdir())[0]
    labels = ["cat", "dog", "rose"]
    assert main(["classify", str(image), "--model", str(path), "--labels", ",".join(labels), "--templates", "none",
                 "--json", "--top-k", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    row = out[0] if isinstance(out, list) else out["results"][0]
    predictions = row.get("predictions") or row.get("labels") or row.get("top")
    got = {p["label"]: p["prob"] if "prob" in p else p["probability"] for p in predictions}
    pixels = SiglipImageProcessor.from_pretrained(path)(images=[Image.open(image).convert("RGB")],
                                                        return_tensors="pt").pixel_values
    with torch.no_grad():
        ids = hf_tok(labels, padding="max_length", max_length=64, return_tensors="pt").input_ids
        ref = torch.sigmoid(hf(input_ids=ids, pixel_values=pixels).logits_per_image)[0]
    for label, prob in zip(labels, ref.tolist()):
        assert abs(got[label] - prob) <= 1e-4, (label, got[label], prob)

    assert main(["score", str(image), "--model", str(path), "--texts", "cat", "--definition", "probability",
                 "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)["scores"][0]["score"]
    assert abs(scored - ref[0].item()) <= 1e-4

    index = tmp_path / "index"
    assert main(["index", str(folder), "--out", str(index), "--model", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["search", str(index), "a cat", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("top 2 of 3") and len(lines) == 3


@pytest.fixture(scope="module")
def hf2_dir(tmp_path_factory):
    from siglip_helpers import hf_siglip2
    from transformers import Siglip2Tokenizer

    path = tmp_path_factory.mktemp("hf_siglip2")
    model = hf_siglip2()
    model.save_pretrained(path)
    (path / "tokenizer.model").write_bytes(spm_model("gemma"))
    tokenizer = Siglip2Tokenizer.from_pretrained(path)  # converted from tokenizer.model by transformers
    return model, tokenizer, path


def test_siglip2_parity_with_transformers_at_a_square_grid(hf2_dir):
    from siglip_helpers import siglip2_inputs

    hf, hf_tok, path = hf2_dir
    model, _, tokenizer = clipforge.load(path)
    assert model.config.variant == "siglip2" and model.config.image_size == 32
    texts = TEXTS[:6]
    # Right padding, as big_vision trained it (transformers' Siglip2Tokenizer class defaults to left padding
    # when a directory's tokenizer_config.json does not say; clipforge always pads right: docs/families.md).
    ref_ids = hf_tok(texts, padding="max_length", max_length=64, truncation=True, padding_side="right",
                     return_tensors="pt").input_ids
    ids = tokenizer(texts)
    assert torch.equal(ids, ref_ids)
    pixels = _pixels(3, seed=11)
    with torch.no_grad():
        ref = hf(input_ids=ref_ids, **siglip2_inputs(pixels))
        image, text = model.encode_image(pixels, normalize=True), model.encode_text(ids, normalize=True)
        logits = model.logits(image, text)
        vision = hf.vision_model(**siglip2_inputs(pixels), output_hidden_states=True)
        full = model.encode_image_full(pixels, output_hidden_states=True)
    diffs = {"image_embeds": _max_diff(image, ref.image_embeds), "text_embeds": _max_diff(text, ref.text_embeds),
             "logits_per_image": _max_diff(logits, ref.logits_per_image),
             "hidden_states": max(_max_diff(a, b) for a, b in zip(full.hidden_states, vision.hidden_states))}
    print("SigLIP 2 vs transformers", diffs)
    assert max(diffs.values()) <= TOL, diffs


def test_gemma_tokenizer_ids_match_siglip2_tokenizer_on_real_text(hf2_dir):
    from tokenizer_corpus import debian_descriptions

    _, hf_tok, path = hf2_dir
    tokenizer = clipforge.load(path)[2]
    assert tokenizer.pad_token_id == 0 and tokenizer.clean == "lower"
    texts = TEXTS + debian_descriptions()[1][:200]
    ref = hf_tok(texts, padding="max_length", max_length=64, truncation=True, padding_side="right",
                 return_tensors="pt").input_ids
    ours = tokenizer(texts)
    mismatched = [texts[i] for i in range(len(texts)) if not torch.equal(ours[i], ref[i])]
    assert not mismatched, mismatched[:5]


def test_named_siglip_models_resolve_from_the_hf_cache(tmp_path, monkeypatch, hf_dir):
    """`load("siglip-base-patch16-224")` finds google/siglip-base-patch16-224 in a Hugging Face cache
    laid out as huggingface_hub does (offline), and checks the files hold what the name stands for."""
    import dataclasses

    from test_hub_cache import make_hf_cache

    from clipforge import model_zoo
    from clipforge.loading import ConfigMismatchError

    assert ("siglip-so400m-patch14-384", "google/siglip-so400m-patch14-384") in clipforge.list_models()
    entry = model_zoo.NAMED_MODELS["siglip-base-patch16-224"]
    assert entry.license == "Apache-2.0" and entry.preprocess.resize_mode == "squash"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = {p.name: p.read_bytes() for p in hf_dir[2].iterdir() if p.is_file()}
    make_hf_cache(tmp_path / "hub", entry.hf_hub_id, files)
    # The cached files are a tiny model, not the released base one: refused, naming both.
    with pytest.raises(ConfigMismatchError, match="siglip-base-patch16-224"):
        clipforge.load("siglip-base-patch16-224")
    tiny = dataclasses.replace(entry, architecture=tiny_config())
    monkeypatch.setitem(model_zoo.NAMED_MODELS, entry.name, tiny)
    model, _, tokenizer = clipforge.load("siglip-base-patch16-224")
    direct = clipforge.load(hf_dir[2])[0]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), direct.state_dict().values()))
    assert torch.equal(tokenizer(TEXTS[:2]), clipforge.load(hf_dir[2])[2](TEXTS[:2]))


def test_onnx_export_of_siglip_at_two_text_lengths(tmp_path, loaded):
    pytest.importorskip("onnxruntime")
    from clipforge.export import export_onnx, onnx_parity, onnx_session

    model, _, tokenizer = loaded
    image_path, text_path = export_onnx(model, tmp_path)
    diffs = onnx_parity(model, image_path, text_path)
    print("SigLIP ONNX", diffs)
    assert diffs["image"] <= 1e-4 and diffs["text"] <= 1e-4, diffs
    session = onnx_session(text_path)
    ids = tokenizer(TEXTS[:3])
    for length in (64, 20):
        out = session.run(None, {"tokens": ids[:, :length].numpy()})[0]
        with torch.no_grad():
            assert _max_diff(torch.from_numpy(out), model.encode_text(ids[:, :length])) <= 1e-4, length


def test_convert_siglip_checks_with_transformers(tmp_path, hf_dir):
    from clipforge.conversion import convert

    report = convert(hf_dir[2], tmp_path / "m.safetensors", "clipforge")
    assert report.max_abs_diff == 0.0
    report = convert(tmp_path / "m.safetensors", tmp_path / "hf", "hf")
    assert report.library_check.startswith("transformers") and "same numbers" in report.library_check
    with pytest.raises(clipforge.checkpoint_formats.CheckpointError, match="siglip"):
        convert(hf_dir[2], tmp_path / "m.pt", "openai")


def test_inspect_names_a_siglip_directory(hf_dir):
    from clipforge.inspection import inspect_path

    result = inspect_path(hf_dir[2])
    assert result.format == "hf" and "siglip model" in result.summary
    assert any("spiece.model" in n for n in result.notes)
