"""Number-for-number parity with OpenAI's clip, open_clip and transformers.

Each test builds a reference model with random weights in the reference library, saves it in that
library's native format, loads the file with `clipforge.load`, and compares image features, text
features and logits on real images and captions. Tolerance: fp32 max abs difference <= 1e-5
relative to the largest absolute value of the reference's output.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from references import (
    ALL_ARCHS,
    FULL_SIZE,
    OPENAI_ARCHS,
    build_hf,
    build_open_clip,
    build_openai,
)

import clipforge
from clipforge import model_zoo

RTOL = 1e-5
VIT_ARCHS = [a for a in ALL_ARCHS if a.startswith("ViT")]


def params(archs):
    """Architectures as test parameters; the full-size ones (size is the point there) are `slow`."""
    return [pytest.param(a, marks=pytest.mark.slow) if a in FULL_SIZE else a for a in archs]


def depth_for(arch: str):
    return None if arch in FULL_SIZE else 2


def shallow_config(arch: str, depth):
    """clipforge's named config for `arch`, cut to the depth the reference was built with."""
    cfg = model_zoo.get_architecture(arch)
    if depth is None:
        return cfg
    vision = cfg.vision
    layers = (1, 1, 1, 1) if isinstance(vision.layers, tuple) else depth
    return cfg.replace(
        vision=dataclasses.replace(vision, layers=layers), text=dataclasses.replace(cfg.text, layers=depth)
    )


def assert_parity(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    ours, ref = ours.detach().float(), ref.detach().float()
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != reference {tuple(ref.shape)}"
    scale = ref.abs().max().item()
    diff = (ours - ref).abs().max().item()
    assert diff <= RTOL * max(scale, 1e-6), f"{what}: max abs diff {diff:.3g} > {RTOL} x scale {scale:.3g}"


def compare(model, pixels, tokens, image_fn, text_fn, logits_fn, label):
    with torch.no_grad():
        assert_parity(model.encode_image(pixels), image_fn(pixels), f"{label} image features")
        assert_parity(model.encode_text(tokens), text_fn(tokens), f"{label} text features")
        logits_per_image, logits_per_text = model(pixels, tokens)
        ref_logits = logits_fn(pixels, tokens)
        assert_parity(logits_per_image, ref_logits, f"{label} logits_per_image")
        assert_parity(logits_per_text, ref_logits.t(), f"{label} logits_per_text")


@pytest.mark.parametrize("arch", params(OPENAI_ARCHS))
def test_openai_state_dict(arch, tmp_path, real_pixels, real_tokens):
    """OpenAI's own model class, saved as a plain state dict, loaded without naming an arch."""
    ref = build_openai(arch, depth_for(arch))
    path = tmp_path / f"{arch}.pt"
    torch.save(ref.state_dict(), path)
    model, preprocess, _ = clipforge.load(path)
    assert model.config.activation == "quick_gelu"  # OpenAI's loader convention for bare state dicts
    assert preprocess.config.image_size == ref.visual.input_resolution
    pixels = real_pixels(ref.visual.input_resolution)
    compare(model, pixels, real_tokens, ref.encode_image, ref.encode_text, lambda p, t: ref(p, t)[0], f"openai {arch}")


@pytest.mark.parametrize("arch", params(ALL_ARCHS + ["ViT-B-32-quickgelu"]))
def test_open_clip_safetensors(arch, tmp_path, real_pixels, real_tokens):
    """open_clip's CLIP (GELU for plain names, as open_clip builds them), saved as safetensors."""
    from safetensors.torch import save_file

    base = arch.removesuffix("-quickgelu")
    depth = depth_for(base)
    ref = build_open_clip(base, depth, quick_gelu=arch.endswith("-quickgelu"))
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model, _, _ = clipforge.load(path, arch=arch if depth is None else shallow_config(arch, depth))
    pixels = real_pixels(ref.visual.image_size[0] if isinstance(ref.visual.image_size, tuple) else ref.visual.image_size)
    compare(model, pixels, real_tokens, ref.encode_image, ref.encode_text,
            lambda p, t: _open_clip_logits(ref, p, t), f"open_clip {arch}")


def _open_clip_logits(ref, pixels, tokens):
    image, text, scale = ref(pixels, tokens)[:3]
    return scale * image @ text.t()


@pytest.mark.parametrize("arch", params(VIT_ARCHS))
def test_hf_directory(arch, tmp_path, real_pixels, real_tokens):
    """transformers' CLIPModel saved with save_pretrained; QuickGELU for OpenAI's shapes, GELU for LAION's."""
    depth = depth_for(arch)
    quick = arch in OPENAI_ARCHS
    ref = build_hf(arch, depth, quick_gelu=quick)
    ref.save_pretrained(tmp_path / "hf")
    model, _, _ = clipforge.load(tmp_path / "hf")
    assert model.config.activation == ("quick_gelu" if quick else "gelu")
    pixels = real_pixels(ref.config.vision_config.image_size)
    attention_mask = torch.ones_like(real_tokens)  # SD-style: transformers attends to every position

    def features(out):
        return out if torch.is_tensor(out) else out.pooler_output

    compare(
        model, pixels, real_tokens,
        lambda p: features(ref.get_image_features(pixel_values=p)),
        lambda t: features(ref.get_text_features(input_ids=t, attention_mask=attention_mask)),
        lambda p, t: ref(input_ids=t, pixel_values=p, attention_mask=attention_mask).logits_per_image,
        f"hf {arch}",
    )


def test_torchscript_archive_loads_without_running_code(tmp_path, real_pixels, real_tokens, monkeypatch):
    """An OpenAI-style TorchScript archive (traced model, torch.jit.save) loads with parity and without jit.load."""
    ref = build_openai("ViT-B-32", depth=2)
    pixels = real_pixels(224)
    traced = torch.jit.trace_module(
        ref, {"forward": (pixels, real_tokens), "encode_image": (pixels,), "encode_text": (real_tokens,)}
    )
    path = tmp_path / "ViT-B-32.pt"
    torch.jit.save(traced, str(path))

    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load must not be called")

    monkeypatch.setattr(torch.jit, "load", refuse)
    model, _, _ = clipforge.load(path)
    compare(model, pixels, real_tokens, ref.encode_image, ref.encode_text, lambda p, t: ref(p, t)[0], "torchscript")


def test_named_arch_disagreeing_with_tensors_names_the_tensor(tmp_path):
    ref = build_openai("ViT-B-32", depth=2)
    path = tmp_path / "model.pt"
    torch.save(ref.state_dict(), path)
    with pytest.raises(ValueError) as err:  # depths differ: named by layer count, before any shape
        clipforge.load(path, arch="ViT-B-16-quickgelu")
    assert "has 12 text layers but the state dict has 2" in str(err.value), str(err.value)
    with pytest.raises(ValueError) as err:  # same depths, another patch size: named by tensor
        clipforge.load(path, arch=shallow_config("ViT-B-16-quickgelu", 2))
    message = str(err.value)
    assert "visual.conv1.weight" in message or "visual.positional_embedding" in message, message


def test_activation_mismatch_is_an_error(tmp_path):
    """A GELU (LAION-style) transformers checkpoint asked to run as a QuickGELU architecture."""
    ref = build_hf("ViT-B-32", depth=2, quick_gelu=False)
    ref.save_pretrained(tmp_path / "hf")
    cfg = shallow_config("ViT-B-32-quickgelu", 2)
    with pytest.raises(clipforge.loading.ConfigMismatchError, match="activation"):
        clipforge.load(tmp_path / "hf", arch=cfg)


@pytest.mark.parametrize("fmt", ["clipforge", "openai", "open_clip", "hf"])
def test_save_load_round_trip_is_bit_exact(fmt, tmp_path):
    # OpenAI's format carries no config, and OpenAI's loader assumes QuickGELU: only such a model may be written there.
    cfg = shallow_config("ViT-B-32-quickgelu" if fmt == "openai" else "ViT-B-32", 2)
    model = clipforge.ClipModel(cfg).eval()
    destination = tmp_path / ("out" if fmt == "hf" else "out.safetensors" if fmt != "openai" else "out.pt")
    clipforge.save(model, destination, format=fmt)
    loaded, _, _ = clipforge.load(destination, arch=None if fmt in ("clipforge", "hf", "openai") else cfg)
    assert loaded.config == cfg
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_resnet_round_trip_through_open_clip_and_back_is_bit_exact(tmp_path):
    cfg = shallow_config("RN50-quickgelu", 2)
    model = clipforge.ClipModel(cfg).eval()
    clipforge.save(model, tmp_path / "a.bin", format="open_clip")
    loaded, _, _ = clipforge.load(tmp_path / "a.bin", arch=cfg)
    clipforge.save(loaded, tmp_path / "b.pt", format="openai")
    again, _, _ = clipforge.load(tmp_path / "b.pt")  # inferred from shapes: RN heads follow OpenAI's rule
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[key]), key


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_half_precision_inference_on_cpu(dtype, tol, real_pixels, real_tokens):
    model = clipforge.ClipModel(shallow_config("ViT-B-32", 2)).eval()
    half = clipforge.ClipModel(model.config).to(dtype).eval()
    half.load_state_dict(model.state_dict())
    assert half.dtype == dtype and next(half.parameters()).dtype == dtype
    pixels = real_pixels(224)
    with torch.no_grad():
        for ours, ref in [
            (half.encode_image(pixels, normalize=True), model.encode_image(pixels, normalize=True)),
            (half.encode_text(real_tokens, normalize=True), model.encode_text(real_tokens, normalize=True)),
        ]:
            assert ours.dtype == dtype
            assert (ours.float() - ref).abs().max().item() < tol


def test_saving_a_gelu_model_in_openai_format_is_refused(tmp_path):
    model = clipforge.ClipModel(shallow_config("ViT-B-32", 2))
    with pytest.raises(ValueError, match="QuickGELU"):
        clipforge.save(model, tmp_path / "x.pt", format="openai")
    assert not (tmp_path / "x.pt").exists()
