"""Checkpoint layouts against the reference libraries as oracles (no clipforge model involved).

Every conversion is checked two ways: numerically, by loading the canonical dict into OpenAI's
reference `clip.model.CLIP` and comparing features with the library the file came from (fp32,
max abs diff <= 1e-5 on tiny random models), and exactly, by bit-exact round trips.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

clip = pytest.importorskip("clip")
open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

from clip.model import CLIP as OpenAICLIP  # noqa: E402

from clipforge.checkpoint_formats import (  # noqa: E402
    CheckpointError,
    check_config,
    clip_config_to_hf_config,
    clip_config_to_open_clip_config,
    detect_format,
    expected_shapes,
    from_canonical,
    hf_config_to_clip_config,
    infer_config,
    open_clip_config_to_clip_config,
    read_checkpoint,
    to_canonical,
    write_checkpoint,
)
from clipforge.configs import (  # noqa: E402
    ClipConfig,
    ResNetConfig,
    TextConfig,
    VisionTransformerConfig,
)

TOL = 1e-5
TEXTS = ["a photo of a cat", "two dogs playing in the snow", "a diagram"]

# OpenAI's reference CLIP hard-codes vision heads = width // 64, so tiny vision towers are 128 wide
# to have 2 heads. Text heads are a constructor argument; the OpenAI-format tests keep 64-wide heads
# (build_model infers heads that way).
TEXT = TextConfig(context_length=16, vocab_size=49408, width=128, heads=2, layers=2)
VIT = ClipConfig(embed_dim=32, vision=VisionTransformerConfig(image_size=32, patch_size=8, width=128, layers=2, heads=2),
                 text=TEXT)
RESNET = ClipConfig(embed_dim=32, vision=ResNetConfig(image_size=64, layers=(1, 2, 1, 1), width=16, heads=8), text=TEXT)


# ---------------------------------------------------------------------------------------------
# helpers


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every tensor a distinctive value (biases, norms and BN statistics are constant at init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(11)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith((".bias", "running_mean")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.02)
            elif name.endswith(".weight") and t.ndim == 1:  # LayerNorm / BatchNorm scales
                t.copy_(1 + torch.randn(t.shape, generator=g) * 0.1)
    return module.eval()


def openai_reference(cfg: ClipConfig, seed: int = 0) -> OpenAICLIP:
    torch.manual_seed(seed)
    v, t = cfg.vision, cfg.text
    layers = tuple(v.layers) if isinstance(v, ResNetConfig) else v.layers
    patch = None if isinstance(v, ResNetConfig) else v.patch_size
    model = OpenAICLIP(cfg.embed_dim, v.image_size, layers, v.width, patch, t.context_length, t.vocab_size,
                       t.width, t.heads, t.layers)
    return randomize_(model, seed)


def inputs(cfg: ClipConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=g)
    return images, clip.tokenize(TEXTS, context_length=cfg.text.context_length)


@torch.no_grad()
def openai_features(model: OpenAICLIP, images, tokens) -> tuple[torch.Tensor, torch.Tensor]:
    return model.encode_image(images), model.encode_text(tokens)


def as_tensor(out) -> torch.Tensor:
    # transformers 5 returns a ModelOutput whose pooler_output holds the projected features.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def hf_features(model, images, tokens) -> tuple[torch.Tensor, torch.Tensor]:
    return as_tensor(model.get_image_features(pixel_values=images)), as_tensor(model.get_text_features(input_ids=tokens))


def max_diff(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def load_canonical_into_openai(canonical: dict[str, torch.Tensor], cfg: ClipConfig) -> OpenAICLIP:
    model = openai_reference(cfg, seed=123)  # different weights, all overwritten below
    model.load_state_dict(canonical, strict=True)
    return model


def assert_bit_exact(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b), set(a) ^ set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def register_open_clip_config(tmp_path: Path, name: str, cfg: ClipConfig) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(clip_config_to_open_clip_config(cfg)))
    open_clip.add_model_config(path)
    return name


@torch.no_grad()
def open_clip_features(model, images, tokens) -> tuple[torch.Tensor, torch.Tensor]:
    return model.encode_image(images), model.encode_text(tokens)


# ---------------------------------------------------------------------------------------------
# transformers


@pytest.fixture(scope="module")
def hf_tiny(tmp_path_factory):
    """A random transformers CLIPModel saved with save_pretrained."""
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=49408, max_position_embeddings=16, hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8, hidden_act="quick_gelu"),
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = randomize_(transformers.CLIPModel(config), seed=0)
    path = tmp_path_factory.mktemp("hf") / "tiny"
    model.save_pretrained(path)
    return model, path


def test_hf_directory_matches_openai_reference(hf_tiny):
    model, path = hf_tiny
    ck = read_checkpoint(path)
    assert ck.format == "hf" and ck.hf_config is not None
    cfg = hf_config_to_clip_config(ck.hf_config)
    assert (cfg.vision.width, cfg.vision.heads, cfg.text.width, cfg.text.heads) == (128, 2, 64, 2)
    canonical = to_canonical(ck.state_dict, "hf")
    check_config(canonical, cfg)
    reference = load_canonical_into_openai(canonical, cfg)
    images, tokens = inputs(cfg)
    diff = max_diff(openai_features(reference, images, tokens), hf_features(model, images, tokens))
    assert diff <= TOL, diff
    # and back: canonical -> hf is the exact inverse
    assert_bit_exact(from_canonical(canonical, "hf"), {k: v for k, v in model.state_dict().items()})


def test_write_hf_loads_in_transformers(tmp_path):
    reference = openai_reference(VIT, seed=1)
    canonical = state_of(reference)
    out = write_checkpoint(canonical, VIT, tmp_path / "hf_out", "hf")
    model = transformers.CLIPModel.from_pretrained(out).eval()
    images, tokens = inputs(VIT)
    diff = max_diff(openai_features(reference, images, tokens), hf_features(model, images, tokens))
    assert diff <= TOL, diff
    # openai -> hf -> openai through the file, bit for bit; the config survives too
    ck = read_checkpoint(out)
    assert_bit_exact(to_canonical(ck.state_dict, ck.format), canonical)
    assert hf_config_to_clip_config(ck.hf_config) == VIT


def test_hf_sharded_and_pytorch_bin_directories(hf_tiny, tmp_path):
    model, saved = hf_tiny
    weights = state_of(model)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="5MB")
    assert (sharded / "model.safetensors.index.json").is_file()
    legacy = tmp_path / "legacy"  # older transformers: pytorch_model.bin with position_ids buffers
    legacy.mkdir()
    shutil.copy(saved / "config.json", legacy / "config.json")
    torch.save({**weights, "text_model.embeddings.position_ids": torch.arange(16)[None],
                "vision_model.embeddings.position_ids": torch.arange(17)[None]}, legacy / "pytorch_model.bin")
    expected = to_canonical(weights, "hf")
    for path in (sharded, legacy):
        ck = read_checkpoint(path)
        assert ck.format == "hf" and ck.hf_config["projection_dim"] == 32
        assert_bit_exact(to_canonical(ck.state_dict, ck.format), expected)


def test_hf_refuses_resnet(tmp_path):
    canonical = state_of(openai_reference(RESNET))
    with pytest.raises(CheckpointError, match="ResNet"):
        from_canonical(canonical, "hf")
    with pytest.raises(CheckpointError, match="ResNet"):
        write_checkpoint(canonical, RESNET, tmp_path / "x", "hf")


def test_hf_config_round_trip_and_legacy_ids():
    for cfg in (VIT, VIT.replace(activation="gelu", layer_norm_eps=1e-6)):
        assert hf_config_to_clip_config(clip_config_to_hf_config(cfg)) == cfg
    legacy = {"model_type": "clip", "projection_dim": 512,
              "text_config": {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1},
              "vision_config": {"patch_size": 32}}
    text = hf_config_to_clip_config(legacy).text
    assert (text.sot_token_id, text.eot_token_id, text.pad_token_id) == (49406, 49407, 0)
    with pytest.raises(CheckpointError, match="gelu_new"):
        hf_config_to_clip_config({"text_config": {"hidden_act": "gelu_new"}, "vision_config": {"hidden_act": "gelu_new"}})
    with pytest.raises(CheckpointError, match="siglip"):
        hf_config_to_clip_config({"model_type": "siglip"})


# ---------------------------------------------------------------------------------------------
# open_clip


@pytest.mark.parametrize("cfg", [VIT, RESNET], ids=["vit", "resnet"])
def test_open_clip_files_match_openai_reference(tmp_path, cfg):
    name = register_open_clip_config(tmp_path, f"cf-test-read-{'rn' if isinstance(cfg.vision, ResNetConfig) else 'vit'}", cfg)
    model = randomize_(open_clip.create_model(name), seed=2)
    weights = state_of(model)
    images, tokens = inputs(cfg)
    expected = open_clip_features(model, images, tokens)

    from safetensors.torch import save_file

    files = {
        "bin": tmp_path / "open_clip_pytorch_model.bin",
        "safetensors": tmp_path / "open_clip_model.safetensors",
        "training": tmp_path / "epoch_2.pt",
    }
    torch.save(weights, files["bin"])
    save_file(weights, str(files["safetensors"]))
    wrapped = {"module._orig_mod." + k: v for k, v in weights.items()}
    torch.save({"epoch": 2, "name": "run", "state_dict": wrapped,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}}, files["training"])
    for kind, path in files.items():
        ck = read_checkpoint(path)
        assert ck.format == ("open_clip" if kind == "training" else "openai")  # same layout as OpenAI's
        canonical = to_canonical(ck.state_dict, ck.format)
        assert_bit_exact(canonical, weights)
        reference = load_canonical_into_openai(canonical, cfg)
        diff = max_diff(openai_features(reference, images, tokens), expected)
        assert diff <= TOL, (kind, diff)


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
@pytest.mark.parametrize("cfg", [VIT, RESNET], ids=["vit", "resnet"])
def test_write_open_clip_loads_in_open_clip(tmp_path, cfg, suffix):
    kind = "rn" if isinstance(cfg.vision, ResNetConfig) else "vit"
    name = register_open_clip_config(tmp_path, f"cf-test-write-{kind}", cfg)
    reference = openai_reference(cfg, seed=3)
    canonical = state_of(reference)
    path = write_checkpoint(canonical, cfg, tmp_path / f"w{suffix}", "open_clip")
    model = open_clip.create_model(name, pretrained=str(path)).eval()
    images, tokens = inputs(cfg)
    diff = max_diff(openai_features(reference, images, tokens), open_clip_features(model, images, tokens))
    assert diff <= TOL, diff
    # openai -> open_clip -> openai, bit for bit
    ck = read_checkpoint(path)
    assert_bit_exact(to_canonical(ck.state_dict, ck.format), canonical)


def test_open_clip_hub_directory_and_torchscript(tmp_path, monkeypatch):
    name = register_open_clip_config(tmp_path, "cf-test-hub-vit", VIT)
    model = randomize_(open_clip.create_model(name), seed=8)
    weights = state_of(model)
    hub = tmp_path / "hub"
    hub.mkdir()
    from safetensors.torch import save_file

    save_file(weights, str(hub / "open_clip_model.safetensors"))
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": clip_config_to_open_clip_config(VIT)}))
    ck = read_checkpoint(hub)
    assert ck.format == "open_clip" and ck.clipforge_config == VIT
    assert_bit_exact(to_canonical(ck.state_dict, ck.format), weights)
    # A TorchScript export of an open_clip model keeps its (non-persistent) causal-mask buffer.
    images, tokens = inputs(VIT)
    archive = tmp_path / "open_clip_traced.pt"
    torch.jit.save(torch.jit.trace(model, (images, tokens), check_trace=False), str(archive))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load called"))
    ck = read_checkpoint(archive)
    assert "attn_mask" in ck.state_dict and ck.format == "open_clip"
    assert_bit_exact(to_canonical(ck.state_dict, ck.format), weights)


def test_open_clip_config_mapping():
    for cfg in (VIT, RESNET, VIT.replace(activation="gelu")):
        assert open_clip_config_to_clip_config(clip_config_to_open_clip_config(cfg)) == cfg
    with pytest.raises(CheckpointError, match="timm_model_name"):
        open_clip_config_to_clip_config({"embed_dim": 512, "vision_cfg": {"timm_model_name": "vit"}, "text_cfg": {}})


def test_open_clip_siglip_and_custom_text():
    canonical = state_of(openai_reference(VIT))
    with pytest.raises(CheckpointError, match="SigLIP"):
        to_canonical({**canonical, "logit_bias": torch.zeros(())}, "open_clip")
    text_keys = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
    custom = {("text." + k if k.startswith(text_keys) else k): v for k, v in canonical.items()}
    assert detect_format(custom) == "open_clip"
    assert_bit_exact(to_canonical(custom, "open_clip"), canonical)


# ---------------------------------------------------------------------------------------------
# OpenAI: state-dict .pt files and TorchScript archives


@pytest.mark.parametrize("cfg", [VIT, RESNET], ids=["vit", "resnet"])
def test_write_openai_loads_with_clip(tmp_path, cfg):
    reference = openai_reference(cfg, seed=4)
    canonical = state_of(reference)
    path = write_checkpoint(canonical, cfg, tmp_path / "model.pt", "openai")
    images, tokens = inputs(cfg)
    expected = openai_features(reference, images, tokens)
    # build_model infers the architecture from the file (strict load); it casts to fp16, so the
    # weights are loaded again in fp32 for an exact comparison.
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    rebuilt = clip.model.build_model(dict(loaded)).float().eval()
    rebuilt.load_state_dict(loaded, strict=True)
    assert max_diff(openai_features(rebuilt, images, tokens), expected) <= TOL
    # clip.load(jit=False) end to end (its fp16 round trip costs precision)
    model, _ = clip.load(str(path), device="cpu", jit=False)
    assert max_diff(openai_features(model.eval(), images, tokens), expected) <= 5e-2


def test_write_openai_refuses_what_build_model_would_change(tmp_path):
    canonical = state_of(openai_reference(VIT))
    for bad in (VIT.replace(activation="gelu"), VIT.replace(text=TextConfig(**{**TEXT.__dict__, "heads": 4}))):
        with pytest.raises(CheckpointError, match="build_model|QuickGELU"):
            write_checkpoint(canonical, bad, tmp_path / "x.pt", "openai")


def _traced_archive(cfg: ClipConfig, path: Path, half: bool) -> dict[str, torch.Tensor]:
    model = openai_reference(cfg, seed=5)
    # OpenAI's archives carry these int tensors on the top module too (here plain attributes).
    del model.context_length, model.vocab_size
    model.register_buffer("input_resolution", torch.tensor(cfg.image_size))
    model.register_buffer("context_length", torch.tensor(cfg.text.context_length))
    model.register_buffer("vocab_size", torch.tensor(cfg.text.vocab_size))
    images, tokens = inputs(cfg)
    traced = torch.jit.trace(model, (images, tokens), check_trace=False)
    if half:
        traced = traced.half()  # OpenAI's released archives are fp16
    torch.jit.save(traced, str(path))
    return state_of(traced)


@pytest.mark.parametrize("cfg,half", [(VIT, True), (RESNET, False)], ids=["vit-fp16", "resnet-fp32"])
def test_torchscript_archive_is_read_without_jit_load(tmp_path, monkeypatch, cfg, half):
    path = tmp_path / "archive.pt"
    original = _traced_archive(cfg, path, half)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load / torch.load must not be called")

    monkeypatch.setattr(torch.jit, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    ck = read_checkpoint(path)
    assert ck.format == "openai"
    assert_bit_exact(ck.state_dict, original)  # parameters and buffers (BatchNorm stats included)
    canonical = to_canonical(ck.state_dict, ck.format)
    assert not {"input_resolution", "context_length", "vocab_size"} & set(canonical)
    check_config(canonical, cfg)
    assert infer_config(canonical) == cfg


# ---------------------------------------------------------------------------------------------
# clipforge's own format, errors, detection


def test_clipforge_format_carries_its_config(tmp_path):
    cfg = RESNET.replace(activation="gelu")
    canonical = state_of(openai_reference(RESNET, seed=6))
    path = write_checkpoint(canonical, cfg, tmp_path / "m.safetensors", "clipforge")
    ck = read_checkpoint(path)
    assert ck.format == "clipforge" and ck.clipforge_config == cfg
    assert_bit_exact(to_canonical(ck.state_dict, ck.format), canonical)


def test_unknown_missing_and_misshapen_keys_are_named():
    canonical = state_of(openai_reference(VIT))
    with pytest.raises(CheckpointError, match=r"visual\.bogus"):
        to_canonical({**canonical, "visual.bogus": torch.zeros(1)}, "openai")
    partial = {k: v for k, v in canonical.items() if k != "visual.ln_post.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys.*visual\.ln_post\.bias"):
        to_canonical(partial, "openai")
    hf = from_canonical(canonical, "hf")
    with pytest.raises(CheckpointError, match=r"vision_model\.encoder\.layers\.0\.bogus"):
        to_canonical({**hf, "vision_model.encoder.layers.0.bogus": torch.zeros(1)}, "hf")
    del hf["text_model.encoder.layers.1.self_attn.k_proj.bias"]
    with pytest.raises(CheckpointError, match=r"transformer\.resblocks\.1\.attn\.in_proj_bias.*\bk\b"):
        to_canonical(hf, "hf")
    wrong = VIT.replace(vision=VisionTransformerConfig(image_size=32, patch_size=16, width=128, layers=2, heads=2))
    with pytest.raises(CheckpointError, match=r"'visual\.positional_embedding' has shape \(17, 128\).*\(5, 128\)"):
        check_config(canonical, wrong)


def test_detect_format():
    canonical = state_of(openai_reference(VIT))
    assert detect_format(canonical) == "openai"
    assert detect_format({"module." + k: v for k, v in canonical.items()}) == "open_clip"
    assert detect_format(from_canonical(canonical, "hf")) == "hf"
    with pytest.raises(CheckpointError, match="unrecognized"):
        detect_format({"encoder.weight": torch.zeros(1)})


# ---------------------------------------------------------------------------------------------
# infer_config / expected_shapes on open_clip's named architectures (meta tensors: no memory)

NAMED = ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336",
         "ViT-H-14", "ViT-g-14", "ViT-bigG-14"]


@pytest.mark.parametrize("name", NAMED)
def test_infer_config_on_named_open_clip_architectures(name):
    with torch.device("meta"):  # construct on meta too, or open_clip allocates (and inits) on CPU first
        model = open_clip.create_model(name, device="meta")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    real = open_clip_config_to_clip_config(open_clip.get_model_config(name))
    assert expected_shapes(real) == shapes  # key set, order-independent, and every shape
    meta_sd = model.state_dict()
    check_config(meta_sd, real)
    inferred = infer_config(meta_sd, activation=real.activation)
    # Everything but attention heads is read off the shapes; heads follow OpenAI's width // 64 rule,
    # which open_clip's ViT-H/g/bigG (head width 80/88/104) do not: the named-arch path passes `real`.
    head_width = open_clip.get_model_config(name)["vision_cfg"].get("head_width", 64)
    if head_width == 64:
        assert inferred == real
    else:
        assert inferred.vision.heads == real.vision.width // 64 != real.vision.heads
        assert inferred.replace(vision=real.vision) == real


# ---------------------------------------------------------------------------------------------
# one full-size model


def test_full_size_vit_b_32_round_trip(tmp_path):
    torch.manual_seed(7)
    model = open_clip.create_model("ViT-B-32-quickgelu").eval()
    canonical = state_of(model)
    cfg = open_clip_config_to_clip_config(open_clip.get_model_config("ViT-B-32-quickgelu"))
    assert infer_config(canonical) == cfg
    out = write_checkpoint(canonical, cfg, tmp_path / "vit-b-32", "hf")
    ck = read_checkpoint(out)
    assert_bit_exact(to_canonical(ck.state_dict, "hf"), canonical)
    hf_model = transformers.CLIPModel.from_pretrained(out).eval()
    images, tokens = inputs(cfg)
    diff = max_diff(open_clip_features(model, images[:1], tokens), hf_features(hf_model, images[:1], tokens))
    assert diff <= TOL, diff
