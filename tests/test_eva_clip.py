"""EVA02-CLIP (family "eva_clip") against open_clip + timm, the reference: a tiny EVA-02 tower
registered in timm under a test name, built by open_clip with random weights, saved as open_clip
saves it, loaded by clipforge, compared output for output (fp32: 1e-5). Also the full-size
EVA02-B-16 shapes (built on the meta device), conversion both ways, and the tasks."""

from __future__ import annotations

import json
import math

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
timm = pytest.importorskip("timm")

import clipforge  # noqa: E402
from clipforge.checkpoint_formats import CheckpointError, expected_shapes, to_canonical  # noqa: E402
from clipforge.checkpoint_formats.eva import (  # noqa: E402
    canonical_to_open_clip,
    eva_config_to_open_clip_config,
    open_clip_config_to_eva_config,
)
from clipforge.configs import EvaClipConfig, EvaVisionConfig, PreprocessConfig, TextConfig  # noqa: E402
from clipforge.models import EvaClipModel, build_model  # noqa: E402

TINY_TIMM = "eva02_tiny_patch8_clip_cftest"
TOL = 1e-5


def _register_tiny_timm_eva() -> None:
    """timm's eva02_*_clip_* arguments at a tiny size (head width 64, so shapes imply the heads)."""
    from timm.models import is_model, register_model
    from timm.models.eva import Eva

    if is_model(TINY_TIMM):
        return

    def eva02_tiny_patch8_clip_cftest(pretrained: bool = False, **kwargs):
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        args = dict(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2, qkv_fused=False,
                    mlp_ratio=4 * 2 / 3, swiglu_mlp=True, scale_mlp=True, scale_attn_inner=True,
                    use_rot_pos_emb=True, ref_feat_shape=(16, 16), global_pool=kwargs.pop("global_pool", "token"))
        return Eva(**dict(args, **kwargs))

    register_model(eva02_tiny_patch8_clip_cftest)


TINY_MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "timm_model_name": TINY_TIMM, "timm_model_pretrained": False,
                   "timm_pool": "token", "timm_proj": None},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
    "custom_text": True,
}
TINY = EvaClipConfig(
    embed_dim=32,
    vision=EvaVisionConfig(image_size=32, patch_size=8, width=128, layers=2, heads=2, mlp_width=341),
    text=TextConfig(context_length=16, width=64, heads=1, layers=2),
)


def open_clip_tiny():
    cfg = {k: v for k, v in TINY_MODEL_CFG.items() if k != "custom_text"}
    return open_clip.model.CustomTextCLIP(**cfg)


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every tensor distinct (timm starts norms at 1/0 and the head near zero: that would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.state_dict().items():
            if p.is_floating_point():
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() < 2 else 0.1) + (1.0 if name.endswith("norm1.weight") else 0.0))
        if hasattr(module, "logit_scale"):
            module.logit_scale.fill_(math.log(20.0))
    return module


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(open_clip model, directory in open_clip's hub layout, bare safetensors file)."""
    from safetensors.torch import save_file

    _register_tiny_timm_eva()
    tmp = tmp_path_factory.mktemp("eva")
    torch.manual_seed(0)
    model = randomize_(open_clip_tiny(), seed=1).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    directory = tmp / "hub"
    directory.mkdir()
    save_file(state, str(directory / "open_clip_model.safetensors"))
    bare = tmp / "eva_tiny.safetensors"
    save_file(state, str(bare))
    return model, directory, bare


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, 32, 32, generator=g)
    tokens = torch.zeros(3, 16, dtype=torch.long)
    for row, n in enumerate((3, 9, 14)):
        tokens[row, 0] = 49406
        tokens[row, 1:n] = torch.randint(1, 49405, (n - 1,), generator=g)
        tokens[row, n] = 49407
    return images, tokens


@torch.no_grad()
def compare(model, reference_model) -> dict[str, float]:
    images, tokens = inputs()
    ours_i, ours_t = model.encode_image(images), model.encode_text(tokens)
    ref_i, ref_t = reference_model.encode_image(images), reference_model.encode_text(tokens)
    logits = model.logits(torch.nn.functional.normalize(ours_i, dim=-1), torch.nn.functional.normalize(ours_t, dim=-1))
    ref_logits, _ = reference_model.get_logits(images, tokens)
    return {"image": (ours_i - ref_i).abs().max().item(), "text": (ours_t - ref_t).abs().max().item(),
            "logits": (logits - ref_logits).abs().max().item()}


def test_bare_weights_file_matches_open_clip(reference):
    ref, _, bare = reference
    with pytest.warns(clipforge.errors.AssumptionWarning):  # a bare file states no numerics
        model, _, _ = clipforge.load(bare)
    assert isinstance(model, EvaClipModel)
    assert model.config == TINY  # heads and the rotary grid follow EVA02-CLIP's rule
    diffs = compare(model, ref)
    assert max(diffs.values()) <= TOL, diffs


def test_directory_with_config_matches_open_clip(reference):
    ref, directory, _ = reference
    (directory / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": dict(TINY_MODEL_CFG, vision_cfg=dict(TINY_MODEL_CFG["vision_cfg"], timm_model_name="eva02_base_patch16_clip_224",
                                                                        image_size=224)),
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"},
    }))
    # The config names EVA02-B/16's tower, the file holds a tiny one: refused, naming a shape.
    with pytest.raises(CheckpointError, match="EVA02-CLIP"):
        clipforge.load(directory)
    (directory / "open_clip_config.json").unlink()
    model, preprocess, _ = clipforge.load(directory, arch=TINY, preprocess=PreprocessConfig(image_size=32))
    diffs = compare(model, ref)
    assert max(diffs.values()) <= TOL, diffs


def test_rope_matches_timm():
    """The rotary table itself, at a size where the grid is rescaled (14 patches onto 16)."""
    from timm.layers import RotaryEmbeddingCat

    from clipforge.models.eva_vision import rope_sin_cos

    cfg = EvaVisionConfig(image_size=224, patch_size=16, width=768, heads=12)
    rope = RotaryEmbeddingCat(dim=64, in_pixels=False, feat_shape=[14, 14], ref_feat_shape=(16, 16))
    sin, cos = rope.get_embed().chunk(2, -1)
    ours_sin, ours_cos = rope_sin_cos(cfg)
    assert torch.equal(ours_sin, sin) and torch.equal(ours_cos, cos)


def test_full_size_eva02_b16_shapes_match_open_clip():
    """EVA02-B-16 as open_clip builds it (on the meta device: shapes only) has exactly the keys and
    shapes clipforge expects of the config it reads from open_clip's model config."""
    cfg = open_clip_config_to_eva_config(open_clip.get_model_config("EVA02-B-16"))
    with torch.device("meta"):
        ref = open_clip.model.CustomTextCLIP(**{k: v for k, v in open_clip.get_model_config("EVA02-B-16").items()
                                                if k != "custom_text"})
        ours = build_model(cfg)
    canonical = to_canonical({k: v for k, v in ref.state_dict().items()}, "open_clip", family="eva_clip")
    assert {k: tuple(v.shape) for k, v in canonical.items()} == expected_shapes(cfg)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected_shapes(cfg)
    assert eva_config_to_open_clip_config(cfg)["vision_cfg"]["timm_model_name"] == "eva02_base_patch16_clip_224"


@pytest.mark.parametrize("name", ["EVA02-L-14", "EVA02-L-14-336"])
def test_other_eva02_configs_are_read(name):
    cfg = open_clip_config_to_eva_config(open_clip.get_model_config(name))
    assert cfg.vision.width == 1024 and cfg.vision.layers == 24 and cfg.embed_dim == 768


def test_unsupported_eva_towers_are_refused_by_name():
    with pytest.raises(CheckpointError, match="eva02_enormous"):
        open_clip_config_to_eva_config(open_clip.get_model_config("EVA02-E-14"))


def test_clipforge_and_open_clip_round_trip(reference, tmp_path):
    ref, _, bare = reference
    with pytest.warns(clipforge.errors.AssumptionWarning):
        model, _, _ = clipforge.load(bare)
    saved = clipforge.save(model, tmp_path / "eva.safetensors")
    again, _, _ = clipforge.load(saved)  # the record travels: no warning, same config
    assert again.config == model.config
    assert max(compare(again, ref).values()) <= TOL
    # The canonical -> open_clip map is the inverse of the reader: open_clip loads it strictly.
    back = canonical_to_open_clip(dict(model.state_dict()))
    fresh = open_clip_tiny().eval()
    fresh.load_state_dict(back, strict=True)
    assert max(compare(model, fresh).values()) <= TOL


def test_one_tower_loads(reference):
    ref, _, bare = reference
    images, tokens = inputs()
    with pytest.warns(clipforge.errors.AssumptionWarning):
        image_only, _, _ = clipforge.load(bare, tower="image")
    assert image_only.token_embedding is None
    with torch.no_grad():
        assert (image_only.encode_image(images) - ref.encode_image(images)).abs().max() <= TOL
    with pytest.raises(clipforge.models.TowerNotLoadedError):
        image_only.encode_text(tokens)


def test_tasks_run_through_the_public_api(reference):
    """Zero-shot classification and CLIP score, family-blind tasks, give open_clip's numbers."""
    from PIL import Image

    from clipforge.tasks import scoring, zero_shot

    ref, _, bare = reference
    with pytest.warns(clipforge.errors.AssumptionWarning):
        model, preprocess, tokenizer = clipforge.load(bare, preprocess=PreprocessConfig(image_size=32))
    images = [Image.new("RGB", (40, 30), color) for color in ("red", "blue")]
    labels = ["a red square", "a blue square", "a dog"]
    classifier = zero_shot.build_classifier(model, tokenizer, labels, templates=["{}"], progress=False)
    pixels = torch.stack([preprocess(im) for im in images])
    probs = zero_shot.probabilities(model, classifier, pixels)
    with torch.no_grad():
        ref_logits, _ = ref.get_logits(pixels, tokenizer(labels))
    assert (probs - ref_logits.softmax(-1)).abs().max() <= TOL
    top = zero_shot.classify(model, classifier, pixels, top_k=1)
    assert [row[0][0] for row in top] == [labels[int(i)] for i in ref_logits.argmax(-1)]
    score = scoring.clip_score(model, images, labels[:2], preprocess=preprocess, tokenizer=tokenizer,
                               definition="paper")
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(ref.encode_image(pixels), ref.encode_text(tokenizer(labels[:2])))
    assert torch.allclose(score, scoring.score_from_cosine(cos, "paper"), atol=1e-4)


def test_bad_eva_config_is_one_named_error():
    with pytest.raises(CheckpointError, match="rotary"):
        clipforge.checkpoint_formats.check_config_limits(TINY.replace(vision=EvaVisionConfig(width=130, heads=13)))


def test_convert_command_both_ways(reference, tmp_path, capsys):
    """`clipforge convert`: open_clip file -> clipforge -> open_clip file, which open_clip loads strictly."""
    import warnings

    from safetensors.torch import load_file

    from clipforge.cli.main import main

    ref, _, bare = reference
    ours = tmp_path / "eva.clipforge.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", clipforge.errors.AssumptionWarning)  # the bare file states no numerics
        assert main(["convert", str(bare), str(ours), "--to", "clipforge"]) == 0
    back = tmp_path / "eva.open_clip.safetensors"
    assert main(["convert", str(ours), str(back), "--to", "open_clip"]) == 0
    assert "max abs difference" in capsys.readouterr().out
    fresh = open_clip_tiny().eval()
    fresh.load_state_dict(load_file(str(back)), strict=True)
    diffs = compare(clipforge.load(ours)[0], fresh)
    assert max(diffs.values()) <= TOL, diffs
    with torch.no_grad():  # and it is the reference's model, bit for bit
        images, tokens = inputs()
        assert torch.equal(fresh.encode_image(images), ref.encode_image(images))


@pytest.mark.parametrize("name", ["EVA02-B-16", "EVA02-L-14", "EVA02-L-14-336"])
def test_zoo_architectures_are_open_clips(name):
    """The named architectures equal what clipforge reads off open_clip's model configs; each has weights."""
    from clipforge import model_zoo

    assert model_zoo.get_architecture(name) == open_clip_config_to_eva_config(open_clip.get_model_config(name))
    tags = [tag for arch, tag in model_zoo.list_models() if arch == name]
    assert len(tags) == 1 and open_clip.get_pretrained_cfg(name, tags[0])["hf_hub"].startswith("timm/eva02_")


@pytest.mark.slow
def test_full_size_eva02_b16_parity_and_hub_directory(tmp_path, monkeypatch):
    """Real-size EVA02-B-16 (random weights) as open_clip builds it: clipforge reads open_clip's hub
    directory (config from open_clip_config.json), matches it, and writes one open_clip reads back."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    oc = open_clip.get_model_config("EVA02-B-16")
    ref = randomize_(open_clip.model.CustomTextCLIP(**{k: v for k, v in oc.items() if k != "custom_text"}), 5).eval()
    src = tmp_path / "src"
    src.mkdir()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(src / "open_clip_model.safetensors"))
    (src / "open_clip_config.json").write_text(json.dumps({"model_cfg": oc, "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}))
    model, _, _ = clipforge.load(src)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 224, 224, generator=g)
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[:, 0], tokens[0, 1:6], tokens[0, 6], tokens[1, 1:30], tokens[1, 30] = 49406, 320, 49407, 1125, 49407
    with torch.no_grad():
        diff_i = (model.encode_image(images) - ref.encode_image(images)).abs().max().item()
        diff_t = (model.encode_text(tokens) - ref.encode_text(tokens)).abs().max().item()
    assert max(diff_i, diff_t) <= 1e-4, (diff_i, diff_t)  # 12 blocks of width 768 in fp32
    print(f"EVA02-B-16 fp32 max abs diff: image {diff_i:.3g}, text {diff_t:.3g}")
    out = clipforge.save(model, tmp_path / "out", format="open_clip")
    again = open_clip.create_model(f"local-dir:{out}").eval()
    with torch.no_grad():
        assert torch.equal(again.encode_image(images), ref.encode_image(images))
    # The named weights, from a Hugging Face cache laid out as huggingface_hub does (offline).
    hub_id = "timm/eva02_base_patch16_clip_224.merged2b_s8b_b131k"
    snapshot = tmp_path / "hf" / ("models--" + hub_id.replace("/", "--")) / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    for name in ("open_clip_model.safetensors", "open_clip_config.json"):
        (snapshot / name).symlink_to(src / name)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cf"))
    named, preprocess, _ = clipforge.load("EVA02-B-16", "merged2b_s8b_b131k", offline=True)
    assert named.record.provenance.weights_tag == "merged2b_s8b_b131k" and preprocess.config.interpolation == "bicubic"
    with torch.no_grad():
        assert torch.equal(named.encode_image(images), model.encode_image(images))


def test_cli_classify_index_search_on_an_eva_file(reference, tmp_path, capsys):
    """The CLI is family-blind: classify prints open_clip's softmax probabilities; index and search run."""
    import shutil
    import warnings

    from image_fixtures import corpus_sample
    from PIL import Image

    from clipforge.cli.main import main

    ref, _, bare = reference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", clipforge.errors.AssumptionWarning)
        model, _, _ = clipforge.load(bare, preprocess=PreprocessConfig(image_size=32))
    path = clipforge.save(model, tmp_path / "eva.safetensors")
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
    _, preprocess, tokenizer = clipforge.load(path)
    with torch.no_grad():
        pixels = preprocess(Image.open(image).convert("RGB")).unsqueeze(0)
        expected = ref.get_logits(pixels, tokenizer(labels))[0].softmax(-1)[0]
    for label, prob in zip(labels, expected.tolist()):
        assert abs(got[label] - prob) <= 1e-4, (label, got[label], prob)
    index = tmp_path / "index"
    assert main(["index", str(folder), "--out", str(index), "--model", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["search", str(index), "a cat", "-k", "2"]) == 0
    hits = [line for line in capsys.readouterr().out.splitlines() if "im" in line and str(folder.name) in line]
    assert len(hits) == 2, hits


def test_inspect_names_the_family_and_only_formats_it_can_write(reference):
    from clipforge.inspection import inspect_path

    _, _, bare = reference
    found = inspect_path(bare)
    assert found.format == "open_clip" and "eva_clip" in found.summary
    convert = next(line for line in found.usage if line.startswith("clipforge convert"))
    assert "--to clipforge" in convert and "open_clip" in convert and "hf" not in convert


def test_token_features_match_timm_blocks(reference):
    """encode_image_full's hidden states are the timm blocks' outputs (hook on the reference); image_tokens
    is the penultimate block without the class token, last_hidden_state timm's forward_features."""
    ref, _, bare = reference
    with pytest.warns(clipforge.errors.AssumptionWarning):
        model, _, _ = clipforge.load(bare)
    images, _ = inputs()
    captured = []
    hook = ref.visual.trunk.blocks[-2].register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        features = ref.visual.trunk.forward_features(images)
        out = model.encode_image_full(images, output_hidden_states=True)
        tokens = model.image_tokens(images)
    hook.remove()
    assert len(out.hidden_states) == 1 + TINY.vision.layers and out.num_prefix_tokens == 1
    assert torch.equal(out.hidden_states[-2], captured[0]) and torch.equal(tokens, captured[0][:, 1:])
    assert (out.last_hidden_state - features).abs().max() <= TOL


def test_open_clip_drop_in_api_refuses_other_families(reference):
    from clipforge.compat.open_clip import _as_open_clip_model

    _, _, bare = reference
    with pytest.warns(clipforge.errors.AssumptionWarning):
        model, _, _ = clipforge.load(bare)
    with pytest.raises(clipforge.errors.InvalidInputError, match="eva_clip model"):
        _as_open_clip_model(model, False)
    assert type(model) is EvaClipModel  # untouched
