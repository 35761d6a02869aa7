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
