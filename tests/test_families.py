"""The family extension points on CLIP itself: the registries, one-tower loading and the token
features vision-language models consume (hidden states vs transformers' CLIPVisionModel)."""

from __future__ import annotations

import pytest
import torch

import clipforge
from clipforge.configs import ARCHITECTURE_CONFIGS, ClipConfig, ModelRecord, architecture_from_dict, architecture_to_dict
from clipforge.models import MODEL_CLASSES, TowerNotLoadedError, build_model, image_tokens
from tiny_models import TINY


def _hf_tiny_clip(seed: int = 0):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    v, t = TINY.vision, TINY.text
    config = CLIPConfig(
        projection_dim=TINY.embed_dim,
        text_config=dict(vocab_size=t.vocab_size, hidden_size=t.width, intermediate_size=t.width * 4,
                         num_hidden_layers=t.layers, num_attention_heads=t.heads,
                         max_position_embeddings=t.context_length, hidden_act="gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
        vision_config=dict(hidden_size=v.width, intermediate_size=v.width * 4, num_hidden_layers=v.layers,
                           num_attention_heads=v.heads, image_size=v.image_size, patch_size=v.patch_size,
                           hidden_act="gelu"),
    )
    return CLIPModel(config).eval()


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
    model = _hf_tiny_clip()
    path = tmp_path_factory.mktemp("hf_clip")
    model.save_pretrained(path)
    return model, path


def test_registries_cover_clip_and_round_trip():
    assert ARCHITECTURE_CONFIGS["clip"] is ClipConfig
    assert MODEL_CLASSES[ClipConfig] is clipforge.models.ClipModel
    d = architecture_to_dict(TINY)
    assert d["family"] == "clip"
    assert architecture_from_dict(d) == TINY
    record = ModelRecord.default(TINY)
    assert ModelRecord.from_dict(record.to_dict()) == record
    with pytest.raises(clipforge.errors.InvalidInputError, match="unknown model family"):
        architecture_from_dict({**d, "family": "nope"})


def test_one_tower_loading_reads_one_tower(hf_clip_dir):
    hf, path = hf_clip_dir
    pixels = torch.randn(2, 3, 32, 32)
    tokens = clipforge.load(path)[2](["a dog", "a cat"])
    full = clipforge.load(path)[0]
    image_only = clipforge.load(path, tower="image")[0]
    text_only = clipforge.load(path, tower="text")[0]
    assert image_only.token_embedding is None and text_only.visual is None
    assert not any(k.startswith("visual.") for k in text_only.state_dict())
    assert not any(not k.startswith("visual.") and k != "logit_scale" for k in image_only.state_dict())
    with torch.no_grad():
        assert torch.equal(image_only.encode_image(pixels), full.encode_image(pixels))
        assert torch.equal(text_only.encode_text(tokens), full.encode_text(tokens))
    with pytest.raises(TowerNotLoadedError, match="image tower only"):
        image_only.encode_text(tokens)
    with pytest.raises(TowerNotLoadedError, match="text tower only"):
        text_only.encode_image(pixels)


def test_clip_hidden_states_match_transformers_clip_vision_model(hf_clip_dir):
    from transformers import CLIPVisionModel

    hf, path = hf_clip_dir
    vision = CLIPVisionModel.from_pretrained(path).eval()
    model = clipforge.load(path)[0]
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = vision(pixel_values=pixels, output_hidden_states=True)
        ours = model.encode_image_full(pixels, output_hidden_states=True)
        tokens = image_tokens(model, pixels, layer=-2)
    assert len(ours.hidden_states) == len(ref.hidden_states) == TINY.vision.layers + 1
    for a, b in zip(ours.hidden_states, ref.hidden_states):
        assert (a - b).abs().max() <= 1e-5
    assert (ours.last_hidden_state - ref.last_hidden_state).abs().max() <= 1e-5
    assert (ours.pooled - ref.pooler_output).abs().max() <= 1e-5
    # LLaVA's vision_feature_layer=-2, "default" strategy: the class token dropped.
    llava = ref.hidden_states[-2][:, 1:]
    assert tokens.shape == (3, TINY.vision.grid_size**2, TINY.vision.width)
    assert (tokens - llava).abs().max() <= 1e-5
    assert torch.equal(model.image_tokens(pixels), tokens)
    with pytest.raises(clipforge.errors.InvalidInputError, match="out of range"):
        image_tokens(model, pixels, layer=5)


def test_build_model_any_family_and_towers():
    model = build_model(TINY, towers="text")
    assert model.visual is None and model.towers == "text"
    with pytest.raises(clipforge.errors.InvalidInputError, match="towers must be"):
        build_model(TINY, towers="left")


def test_clip_defines_no_pair_probability_and_score_says_so():
    from clipforge.tasks.scoring import clip_score

    model = build_model(TINY).eval()
    pixels = torch.randn(2, 3, 32, 32)
    image, text = model.encode_image(pixels, normalize=True), model.encode_text(model.example_tokens(2), normalize=True)
    assert model.pair_probabilities(image, text) is None
    probs = model.probabilities(image, text)
    assert torch.allclose(probs.sum(-1), torch.ones(2))  # a softmax over the texts
    with pytest.raises(clipforge.errors.InvalidInputError, match="no per-pair probability"):
        clip_score(model, pixels, ["a cat", "a dog"], definition="probability")
