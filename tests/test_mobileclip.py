"""MobileCLIP-B / MobileCLIP2-B (family "mobileclip") against open_clip + timm, the reference: a
tiny `vit_base_mci`-style tower (conv stem with BatchNorm, patch-only positions) registered in timm
under a test name, built by open_clip with random weights (random BatchNorm statistics too), saved
as open_clip saves it, loaded by clipforge and compared (fp32: 1e-5). Both text towers: causal
(MobileCLIP-B) and bidirectional (open_clip's `no_causal_mask`, the S-variants' text)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
timm = pytest.importorskip("timm")

import clipforge  # noqa: E402
from clipforge.checkpoint_formats import CheckpointError, expected_shapes, to_canonical  # noqa: E402
from clipforge.checkpoint_formats.mobileclip import (  # noqa: E402
    canonical_to_open_clip,
    mobileclip_config_to_open_clip_config,
    open_clip_config_to_mobileclip_config,
)
from clipforge.configs import PreprocessConfig  # noqa: E402
from clipforge.models import MobileClipModel, build_model  # noqa: E402

TINY_TIMM = "vit_tiny_mci_32_cftest"
TOL = 1e-5


def _register_tiny_timm_mci() -> None:
    """timm's vit_base_mci_224 recipe (ConvStem 4/2/2, no_embed_class, HybridEmbed without proj) at width 128."""
    from functools import partial

    from timm.layers import HybridEmbed
    from timm.models import is_model, register_model
    from timm.models.vision_transformer import VisionTransformer
    from timm.models.vision_transformer_hybrid import ConvStem

    if is_model(TINY_TIMM):
        return

    def vit_tiny_mci_32_cftest(pretrained: bool = False, **kwargs):
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        backbone = ConvStem(channels=(32, 32, 128), stride=(4, 2, 2), kernel_size=(4, 2, 2), padding=0,
                            act_layer=torch.nn.GELU)
        args = dict(img_size=32, patch_size=1, embed_dim=128, depth=2, num_heads=2, no_embed_class=True,
                    embed_layer=partial(HybridEmbed, backbone=backbone, proj=False))
        return VisionTransformer(**dict(args, **kwargs))

    register_model(vit_tiny_mci_32_cftest)


def model_cfg(causal: bool) -> dict:
    return {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "timm_model_name": TINY_TIMM, "timm_model_pretrained": False,
                       "timm_pool": "token", "timm_proj": None, "timm_drop": 0.0, "timm_drop_path": 0.0},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2,
                     "no_causal_mask": not causal},
        "custom_text": True,
    }


def open_clip_tiny(causal: bool):
    return open_clip.model.CustomTextCLIP(**{k: v for k, v in model_cfg(causal).items() if k != "custom_text"})


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every tensor distinct, BatchNorm statistics included (fresh ones are identity-like)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.state_dict().items():
            if name.endswith("running_var"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.is_floating_point():
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() < 2 else 0.1))
        module.logit_scale.fill_(math.log(20.0))
    return module


@pytest.fixture(scope="module", params=[True, False], ids=["causal-text", "bidirectional-text"])
def reference(request, tmp_path_factory):
    """(causal, open_clip model, bare safetensors file)."""
    from safetensors.torch import save_file

    _register_tiny_timm_mci()
    torch.manual_seed(0)
    model = randomize_(open_clip_tiny(request.param), seed=3).eval()
    path = tmp_path_factory.mktemp("mobileclip") / "mobileclip_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return request.param, model, path


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(3, 3, 32, 32, generator=g)  # MobileCLIP reads pixels in [0, 1]
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
    ours_logits = model.logits(torch.nn.functional.normalize(ours_i, dim=-1), torch.nn.functional.normalize(ours_t, dim=-1))
    ref_logits, _ = reference_model.get_logits(images, tokens)
    full = model.encode_text_full(tokens).text_embeds  # the per-token path agrees with the fast one
    return {"image": (ours_i - ref_i).abs().max().item(), "text": (ours_t - ref_t).abs().max().item(),
            "text_full": (full - ref_t).abs().max().item(), "logits": (ours_logits - ref_logits).abs().max().item()}


def load_with_config(path, causal: bool):
    """The file states nothing; the test pins the architecture and preprocessing."""
    with pytest.warns(clipforge.errors.AssumptionWarning):
        inferred, _, _ = clipforge.load(path)
    assert isinstance(inferred, MobileClipModel) and inferred.config.text_causal  # shapes cannot show it
    return clipforge.load(path, arch=inferred.config.replace(text_causal=causal),
                          preprocess=PreprocessConfig(image_size=32, mean=(0.0,) * 3, std=(1.0,) * 3))


def test_matches_open_clip(reference):
    causal, ref, path = reference
    model, _, _ = load_with_config(path, causal)
    diffs = compare(model, ref)
    assert max(diffs.values()) <= TOL, diffs


def test_bidirectional_text_reads_the_padding(reference):
    """The bidirectional tower's embedding depends on what follows the end token; the causal one's does not."""
    causal, _, path = reference
    model, _, _ = load_with_config(path, causal)
    _, tokens = inputs()
    changed = tokens.clone()
    changed[0, 5:] = 7  # after row 0's end token (position 3)
    with torch.no_grad():
        diff = (model.encode_text(tokens) - model.encode_text(changed)).abs().max().item()
    assert (diff == 0.0) if causal else (diff > 1e-4)


def test_clipforge_round_trip_and_open_clip_map(reference, tmp_path):
    causal, ref, path = reference
    model, _, _ = load_with_config(path, causal)
    saved = clipforge.save(model, tmp_path / "m.safetensors")
    again, preprocess, _ = clipforge.load(saved)  # record travels: causal flag and mean/std included
    assert again.config == model.config and preprocess.config.std == (1.0, 1.0, 1.0)
    assert max(compare(again, ref).values()) <= TOL
    fresh = randomize_(open_clip_tiny(causal), seed=9).eval()
    fresh.load_state_dict(canonical_to_open_clip(dict(model.state_dict())), strict=True)
    assert max(compare(model, fresh).values()) <= TOL


def test_full_size_mobileclip_b_shapes_match_open_clip():
    for name in ("MobileCLIP-B", "MobileCLIP2-B"):
        oc = open_clip.get_model_config(name)
        cfg = open_clip_config_to_mobileclip_config(oc)
        with torch.device("meta"):
            ref = open_clip.model.CustomTextCLIP(**{k: v for k, v in oc.items() if k != "custom_text"})
            ours = build_model(cfg)
        canonical = to_canonical(dict(ref.state_dict()), "open_clip", family="mobileclip")
        assert {k: tuple(v.shape) for k, v in canonical.items()} == expected_shapes(cfg)
        assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected_shapes(cfg)
        assert mobileclip_config_to_open_clip_config(cfg)["vision_cfg"]["timm_model_name"] == "vit_base_mci_224"
        assert cfg.text_causal


def test_open_clip_directory_with_config(reference, tmp_path):
    """open_clip's hub layout: the config names a tower (here MobileCLIP-B's), clipforge builds that
    config and checks the tensors against it: the tiny file is refused, naming what differs."""
    from safetensors.torch import save_file

    _, ref, _ = reference
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "open_clip_model.safetensors"))
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": open_clip.get_model_config("MobileCLIP-B")}))
    with pytest.raises(CheckpointError, match=r"MobileCLIP \(conv-stem ViT 12x768.*12 vision layers"):
        clipforge.load(tmp_path)


def test_mobileclip2_l14_is_refused_by_name():
    with pytest.raises(CheckpointError, match="vit_large_patch14_clip_224"):
        open_clip_config_to_mobileclip_config(open_clip.get_model_config("MobileCLIP2-L-14"))


def test_convert_to_open_clip_file(reference, tmp_path):
    """conversion.convert checks the numbers before writing; open_clip loads the file strictly."""
    from safetensors.torch import load_file

    from clipforge.conversion import convert

    causal, ref, path = reference
    model, _, _ = load_with_config(path, causal)
    ours = clipforge.save(model, tmp_path / "m.safetensors")
    report = convert(ours, tmp_path / "m.open_clip.safetensors", "open_clip")
    assert report.max_abs_diff == 0.0
    fresh = open_clip_tiny(causal).eval()
    fresh.load_state_dict(load_file(str(tmp_path / "m.open_clip.safetensors")), strict=True)
    assert max(compare(model, fresh).values()) <= TOL


@pytest.mark.parametrize("name", ["MobileCLIP-B", "MobileCLIP2-B", "MobileCLIP-S1", "MobileCLIP-S2", "MobileCLIP2-S0",
                                  "MobileCLIP2-S2", "MobileCLIP2-S3", "MobileCLIP2-S4"])
def test_zoo_architectures_are_open_clips(name):
    """The named architectures equal what clipforge reads off open_clip's model configs; their weights
    records carry open_clip's pretrained.py numerics (mean 0 / std 1 except MobileCLIP2-S3/S4, bilinear)."""
    from clipforge import model_zoo

    assert model_zoo.get_architecture(name) == open_clip_config_to_mobileclip_config(open_clip.get_model_config(name))
    for arch, tag in model_zoo.list_models():
        if arch == name:
            record, ref = model_zoo.get_weights(arch, tag), open_clip.get_pretrained_cfg(arch, tag)
            assert record.hf_hub_id == ref["hf_hub"].rstrip("/")
            assert (record.preprocess.mean, record.preprocess.std) == (tuple(ref["mean"]), tuple(ref["std"]))
            assert record.preprocess.image_size == model_zoo.get_architecture(name).image_size
            assert record.preprocess.interpolation == ref["interpolation"] == "bilinear"


# ---- FastViT-MCi (MobileCLIP-S*, MobileCLIP2-S*) ------------------------------------------------------

FASTVIT_TINY = {"mci012": "fastvit_tiny012_cftest", "mci34": "fastvit_tiny34_cftest"}


def _register_tiny_fastvits() -> None:
    """timm's fastvit_mci0/2 (4 stages, BatchNorm attention, SE downsamples) and fastvit_mci3/4 (5 stages,
    LayerNorm2d attention, no stem scale branch) recipes at widths 32-64, one block per stage."""
    from functools import partial

    from timm.models import is_model, register_model
    from timm.models.fastvit import FastVit, RepConditionalPosEnc
    from timm.layers import LayerNorm2d

    cpe = partial(RepConditionalPosEnc, spatial_shape=(7, 7))
    recipes = {
        FASTVIT_TINY["mci012"]: dict(layers=(1, 1, 1, 2), embed_dims=(32, 32, 64, 64), mlp_ratios=(3, 3, 3, 3),
                                     se_downsamples=(False, False, True, True), pos_embs=(None, None, None, cpe),
                                     token_mixers=("repmixer", "repmixer", "repmixer", "attention"), lkc_use_act=True),
        FASTVIT_TINY["mci34"]: dict(layers=(1, 1, 1, 1, 1), embed_dims=(32, 32, 64, 64, 64), mlp_ratios=(4,) * 5,
                                    se_downsamples=(False,) * 5, downsamples=(False, True, True, True, True),
                                    pos_embs=(None, None, None, cpe, cpe),
                                    token_mixers=("repmixer",) * 3 + ("attention",) * 2, lkc_use_act=True,
                                    norm_layer=partial(LayerNorm2d, eps=1e-5), stem_use_scale_branch=False),
    }
    for name, args in recipes.items():
        if is_model(name):
            continue

        def make(pretrained: bool = False, _args=args, **kwargs):
            for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
                kwargs.pop(key, None)
            return FastVit(**dict(_args, **kwargs))

        make.__name__ = name
        register_model(make)


def fastvit_model_cfg(kind: str) -> dict:
    return {"embed_dim": 32,
            "vision_cfg": {"image_size": 64, "timm_model_name": FASTVIT_TINY[kind], "timm_model_pretrained": False,
                           "timm_pool": "avg", "timm_proj": None},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2,
                         "no_causal_mask": True}}


@pytest.fixture(scope="module", params=["mci012", "mci34"])
def fastvit_reference(request, tmp_path_factory):
    from safetensors.torch import save_file

    _register_tiny_fastvits()
    torch.manual_seed(0)
    model = randomize_(open_clip.model.CustomTextCLIP(**fastvit_model_cfg(request.param)), seed=4).eval()
    path = tmp_path_factory.mktemp("fastvit") / "fastvit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return request.param, model, path


def fastvit_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    images, tokens = inputs()
    return torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)), tokens


@torch.no_grad()
def fastvit_compare(model, reference_model) -> dict[str, float]:
    images, tokens = fastvit_inputs()
    ours_i, ours_t = model.encode_image(images), model.encode_text(tokens)
    ref_i, ref_t = reference_model.encode_image(images), reference_model.encode_text(tokens)
    ours_logits = model.logits(torch.nn.functional.normalize(ours_i, dim=-1), torch.nn.functional.normalize(ours_t, dim=-1))
    ref_logits, _ = reference_model.get_logits(images, tokens)
    return {"image": (ours_i - ref_i).abs().max().item(), "text": (ours_t - ref_t).abs().max().item(),
            "logits": (ours_logits - ref_logits).abs().max().item()}


def load_fastvit(path):
    with pytest.warns(clipforge.errors.AssumptionWarning):
        inferred, _, _ = clipforge.load(path)
    assert isinstance(inferred, MobileClipModel)
    # Shapes show neither the image size of a convolutional tower nor a bidirectional text tower.
    config = inferred.config.replace(text_causal=False, vision=dataclasses.replace(inferred.config.vision, image_size=64))
    return clipforge.load(path, arch=config, preprocess=PreprocessConfig(image_size=64, mean=(0.0,) * 3, std=(1.0,) * 3))


def test_fastvit_matches_open_clip(fastvit_reference):
    """The unfolded FastViT-MCi (branches summed, BatchNorm in eval mode) gives open_clip's numbers."""
    kind, ref, path = fastvit_reference
    model, _, _ = load_fastvit(path)
    assert model.config.vision.attention_norm == ("layernorm" if kind == "mci34" else "batchnorm")
    diffs = fastvit_compare(model, ref)
    assert max(diffs.values()) <= TOL, diffs


def test_fastvit_round_trips(fastvit_reference, tmp_path):
    kind, ref, path = fastvit_reference
    model, _, _ = load_fastvit(path)
    again, _, _ = clipforge.load(clipforge.save(model, tmp_path / "f.safetensors"))
    assert again.config == model.config and max(fastvit_compare(again, ref).values()) <= TOL
    fresh = randomize_(open_clip.model.CustomTextCLIP(**fastvit_model_cfg(kind)), seed=8).eval()
    fresh.load_state_dict(canonical_to_open_clip(dict(model.state_dict())), strict=True)
    assert max(fastvit_compare(model, fresh).values()) <= TOL
    out = model.encode_image_full(fastvit_inputs()[0], output_hidden_states=True)
    assert out.num_prefix_tokens == 0 and len(out.hidden_states) == 1 + len(model.config.vision.layers)


@pytest.mark.parametrize("name", ["MobileCLIP-S1", "MobileCLIP-S2", "MobileCLIP2-S0", "MobileCLIP2-S2",
                                  "MobileCLIP2-S3", "MobileCLIP2-S4"])
def test_full_size_fastvit_shapes_match_open_clip(name):
    oc = open_clip.get_model_config(name)
    cfg = open_clip_config_to_mobileclip_config(oc)
    with torch.device("meta"):
        ref = open_clip.model.CustomTextCLIP(**{k: v for k, v in oc.items() if k != "custom_text"})
        ours = build_model(cfg)
    canonical = to_canonical(dict(ref.state_dict()), "open_clip", family="mobileclip")
    assert {k: tuple(v.shape) for k, v in canonical.items()} == expected_shapes(cfg)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected_shapes(cfg)
    assert not cfg.text_causal  # the S models' text towers are bidirectional
    written = mobileclip_config_to_open_clip_config(cfg)  # what an open_clip directory we write holds
    assert written["vision_cfg"]["timm_model_name"] == oc["vision_cfg"]["timm_model_name"]
    with torch.device("meta"):
        rebuilt = open_clip.model.CustomTextCLIP(**{k: v for k, v in written.items() if k != "custom_text"})
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert rebuilt.text.attn_mask is None  # open_clip builds the bidirectional text tower from it


@pytest.mark.slow
def test_full_size_mobileclip_s2_parity_and_named_load(tmp_path, monkeypatch):
    """Real-size MobileCLIP-S2 (FastViT-MCi2, bidirectional text; open_clip's own random init with random
    BatchNorm statistics): clipforge reads open_clip's hub directory and matches it; the named weights
    load offline from a Hugging Face cache laid out as huggingface_hub does."""
    from references import randomize_batchnorm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    oc = open_clip.get_model_config("MobileCLIP-S2")
    ref = open_clip.model.CustomTextCLIP(**{k: v for k, v in oc.items() if k != "custom_text"}).eval()
    randomize_batchnorm(ref, seed=1)
    src = tmp_path / "src"
    src.mkdir()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(src / "open_clip_model.safetensors"))
    (src / "open_clip_config.json").write_text(json.dumps({"model_cfg": oc, "preprocess_cfg": {
        "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "interpolation": "bilinear"}}))
    model, preprocess, _ = clipforge.load(src)
    assert not model.config.text_causal and preprocess.config.interpolation == "bilinear"
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 256, 256, generator=g)
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[:, 0], tokens[0, 1:6], tokens[0, 6], tokens[1, 1:30], tokens[1, 30] = 49406, 320, 49407, 1125, 49407
    with torch.no_grad():
        ours_i, ours_t = model.encode_image(images), model.encode_text(tokens)
        ref_i, ref_t = ref.encode_image(images), ref.encode_text(tokens)
    diff_i, diff_t = (ours_i - ref_i).abs().max().item(), (ours_t - ref_t).abs().max().item()
    print(f"MobileCLIP-S2 fp32 max abs diff: image {diff_i:.3g} (scale {ref_i.abs().max():.3g}), text {diff_t:.3g}")
    assert diff_i <= 1e-5 * max(1.0, ref_i.abs().max().item()) and diff_t <= 1e-5 * max(1.0, ref_t.abs().max().item())
    hub_id = "apple/MobileCLIP-S2-OpenCLIP"
    snapshot = tmp_path / "hf" / ("models--" + hub_id.replace("/", "--")) / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    (snapshot / "open_clip_model.safetensors").symlink_to(src / "open_clip_model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cf"))
    named, named_preprocess, _ = clipforge.load("MobileCLIP-S2", "datacompdr", offline=True)
    assert named.config == model.config and named_preprocess.config.mean == (0.0, 0.0, 0.0)
    with torch.no_grad():
        assert torch.equal(named.encode_text(tokens), ours_t)


def test_fastvit_hidden_states_are_timm_stage_outputs(fastvit_reference):
    _, ref, path = fastvit_reference
    model, _, _ = load_fastvit(path)
    images, _ = fastvit_inputs()
    captured = []
    hook = ref.visual.trunk.stages[-2].register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        ref.encode_image(images)
        out = model.encode_image_full(images, output_hidden_states=True)
    hook.remove()
    assert (out.hidden_states[-2] - captured[0].flatten(2).transpose(1, 2)).abs().max() <= TOL
    assert torch.equal(model.image_tokens(images, drop_class_token=True), out.hidden_states[-2])  # no class token


@pytest.mark.parametrize("name", ["MobileCLIP-S2", "MobileCLIP-B"])
def test_plan_refuses_other_families_in_one_line(name, capsys):
    from clipforge.cli.main import main

    assert main(["plan", "--model", name, "--pairs", "1M", "--gpu", "H100"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mobileclip model" in err[0] and "CLIP architectures only" in err[0]
