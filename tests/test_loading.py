"""`clipforge.load` end to end: named weights through a fake offline hub cache, hub ids, errors, safety, convert."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from references import build_hf, build_hf_processor, build_open_clip, build_openai
from safetensors.torch import save_file
from test_model_parity import assert_parity, shallow_config

import clipforge
from clipforge.checkpoint_formats import CheckpointError
from clipforge.hub_cache import WeightsNotFoundError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_caches(tmp_path, monkeypatch):
    """Empty clipforge and HF caches under tmp_path, offline (as huggingface_hub and clipforge read it)."""
    from huggingface_hub import constants

    for var in ("HF_HOME", "HF_ENDPOINT", "XDG_CACHE_HOME", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "clipforge"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # huggingface_hub reads it once at import
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "hf"


def put_in_hf_cache(root: Path, hub_id: str, files: dict[str, Path]) -> Path:
    """Lay files out as huggingface_hub does: snapshots/<commit>/<name> and refs/main."""
    repo = root / ("models--" + hub_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for name, source in files.items():
        (snapshot / name).write_bytes(source.read_bytes())
    return snapshot


def test_named_weights_from_offline_cache_match_open_clip_end_to_end(offline_caches, tmp_path):
    """Same cached file, both libraries by name: open_clip's preprocess+tokenizer+model vs clipforge's."""
    import open_clip
    from conftest import CAPTIONS
    from image_fixtures import corpus_sample
    from PIL import Image

    ref = build_open_clip("ViT-B-32", quick_gelu=True)
    weights = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(weights))
    put_in_hf_cache(offline_caches, "timm/vit_base_patch32_clip_224.openai", {"open_clip_model.safetensors": weights})

    # open_clip 3.3 builds GELU for ("ViT-B-32", "openai") and only warns; its correct spelling is the -quickgelu name.
    oc_model, _, oc_preprocess = open_clip.create_model_and_transforms("ViT-B-32-quickgelu", pretrained="openai")
    oc_model.eval()
    oc_tokenizer = open_clip.get_tokenizer("ViT-B-32")
    model, preprocess, tokenizer = clipforge.load("ViT-B-32", weights="openai")
    assert model.config.activation == "quick_gelu"  # the tag brought the QuickGELU twin by itself

    images = [Image.open(p) for p in corpus_sample(6)]
    ours_pixels = torch.stack([preprocess(im) for im in images])
    ref_pixels = torch.stack([oc_preprocess(im) for im in images])
    assert torch.allclose(ours_pixels, ref_pixels, atol=1e-6, rtol=0)
    assert torch.equal(tokenizer(CAPTIONS), oc_tokenizer(CAPTIONS))
    with torch.no_grad():
        assert_parity(model.encode_image(ours_pixels), oc_model.encode_image(ref_pixels), "image features")
        assert_parity(model.encode_text(tokenizer(CAPTIONS)), oc_model.encode_text(oc_tokenizer(CAPTIONS)), "text")


def test_hub_id_from_offline_cache(offline_caches, tmp_path, real_pixels, real_tokens):
    ref = build_hf("ViT-B-32", depth=2, quick_gelu=True)
    ref.save_pretrained(tmp_path / "hf")
    put_in_hf_cache(
        offline_caches, "openai/clip-vit-base-patch32",
        {"config.json": tmp_path / "hf" / "config.json", "model.safetensors": tmp_path / "hf" / "model.safetensors"},
    )
    model, preprocess, _ = clipforge.load("openai/clip-vit-base-patch32")
    assert preprocess.config.mode == "hf"  # transformers-format weights get CLIPImageProcessor's numbers
    pixels = real_pixels(224)
    with torch.no_grad():
        ref_image = ref.get_image_features(pixel_values=pixels)
        ref_image = ref_image if torch.is_tensor(ref_image) else ref_image.pooler_output
        assert_parity(model.encode_image(pixels), ref_image, "image features")


def test_offline_with_nothing_cached_is_one_clear_error(offline_caches):
    with pytest.raises(WeightsNotFoundError) as err:
        clipforge.load("ViT-L-14", weights="openai")
    message = str(err.value)
    for expected in ("ViT-L-14", "openai", "timm/vit_large_patch14_clip_224.openai", "HF_HUB_OFFLINE"):
        assert expected in message, f"{expected!r} missing from: {message}"


def test_offline_hub_id_not_cached_says_what_to_do(offline_caches):
    with pytest.raises(FileNotFoundError) as err:
        clipforge.load("openai/clip-vit-large-patch14")
    message = str(err.value)
    assert "openai/clip-vit-large-patch14" in message and "config.json" in message, message


def test_load_without_a_model_or_with_a_wrong_name_explains(tmp_path):
    with pytest.raises(ValueError, match="without a model name"):
        clipforge.load(weights="openai")  # a tag but no architecture: an error, not the bundled model
    with pytest.raises(FileNotFoundError, match="is not a file or folder, a named architecture or a hub id"):
        clipforge.load(str(tmp_path / "nope.pt"))
    with pytest.raises(KeyError, match="ViT-B-32"):
        clipforge.load("ViT-B-32", weights="no-such-tag")
    # A typo gets the close names; OpenAI's spelling is an architecture name.
    with pytest.raises(FileNotFoundError, match="did you mean ViT-B-32"):
        clipforge.load("ViT-B-23")
    with pytest.raises(FileNotFoundError, match="did you mean clipforge-mini"):
        clipforge.load("clipforge-mni")


def test_an_architecture_without_weights_is_refused_unless_random_is_asked_for():
    # A random model would answer with confident-looking nonsense: the tag is required.
    for name in ("ViT-B-32", "ViT-B/32"):
        with pytest.raises(ValueError, match="choose its weights, one of 'openai'.*'none' for a randomly initialised"):
            clipforge.load(name)
    model, preprocess, tokenizer = clipforge.load("ViT-B/32", weights="none")
    assert model.config == clipforge.model_zoo.get_architecture("ViT-B-32")
    assert preprocess.image_size == 224 and tokenizer.context_length == 77


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.parametrize("container", ["torch.save", "pickle"])
def test_loading_a_pickle_with_a_code_payload_runs_no_code(tmp_path, container):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    payload = {"visual.proj": torch.zeros(2, 2), "evil": _Payload(marker)}
    if container == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError):
        clipforge.load(path)
    assert not marker.exists(), "loading a checkpoint executed code from the file"


def test_convert_cli_writes_hf_that_transformers_loads_with_parity(tmp_path, real_pixels, real_tokens):
    """`clipforge convert` OpenAI .pt -> transformers dir; transformers' own CLIPModel gives OpenAI's numbers."""
    from transformers import CLIPModel

    ref = build_openai("ViT-B-32", depth=2)
    torch.save(ref.state_dict(), tmp_path / "model.pt")
    result = subprocess.run(
        [sys.executable, "-m", "clipforge.cli.main", "convert", str(tmp_path / "model.pt"), str(tmp_path / "hf"), "--to", "hf"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "max abs difference" in result.stdout
    hf = CLIPModel.from_pretrained(tmp_path / "hf").eval()
    pixels = real_pixels(224)
    with torch.no_grad():
        out = hf(input_ids=real_tokens, pixel_values=pixels, attention_mask=torch.ones_like(real_tokens))
        assert_parity(out.logits_per_image, ref(pixels, real_tokens)[0], "transformers logits after convert")


def test_convert_refuses_an_unrepresentable_target_and_writes_nothing(tmp_path):
    """A GELU (LAION-style) model cannot be written in OpenAI's config-less format: a clear error, no file."""
    model = clipforge.ClipModel(shallow_config("ViT-B-32", 1))
    clipforge.save(model, tmp_path / "m.safetensors")
    result = subprocess.run(
        [sys.executable, "-m", "clipforge.cli.main", "convert", str(tmp_path / "m.safetensors"), str(tmp_path / "m.pt"), "--to", "openai"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1 and "QuickGELU" in result.stderr, result.stderr
    assert not (tmp_path / "m.pt").exists()


def test_models_cli_lists_named_weights():
    result = subprocess.run([sys.executable, "-m", "clipforge.cli.main", "models"], capture_output=True, text=True, check=True)
    assert "ViT-B-32-quickgelu\topenai" in result.stdout.splitlines()
    assert ("ViT-bigG-14", "laion2b_s39b_b160k") in clipforge.list_models()


def test_import_is_light():
    """`import clipforge` must not import torch (the CLI's --help stays instant)."""
    code = "import sys, clipforge; assert 'torch' not in sys.modules, 'torch imported'; print(clipforge.__version__)"
    subprocess.run([sys.executable, "-c", code], check=True)
    result = subprocess.run([sys.executable, "-m", "clipforge.cli.main", "--help"], capture_output=True, text=True, check=True)
    assert "convert" in result.stdout


@pytest.mark.parametrize("writer", ["image_processor", "processor"])
def test_hf_directory_brings_its_own_preprocessing_constants(tmp_path, writer):
    """Mean/std/size saved by transformers (either file layout) are what clipforge.load's preprocess uses."""
    ref = build_hf("ViT-B-32", depth=1, quick_gelu=True)
    ref.save_pretrained(tmp_path)
    processor = build_hf_processor(224, mean=(0.5,) * 3, std=(0.5,) * 3)
    if writer == "image_processor":
        processor.image_processor.save_pretrained(tmp_path)
    else:
        processor.save_pretrained(tmp_path)
        (tmp_path / "preprocessor_config.json").unlink(missing_ok=True)  # older transformers also wrote this
    _, preprocess, _ = clipforge.load(tmp_path)
    assert preprocess.config.mean == (0.5, 0.5, 0.5) and preprocess.config.std == (0.5, 0.5, 0.5)
    assert preprocess.config.mode == "hf"
