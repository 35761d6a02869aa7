"""What a newcomer meets first: the real `clipforge` command in a subprocess (one-line errors, never a
traceback), named models, image inputs of every kind, complete transformers directories, the
transformers drop-in, the demo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_models import TINY

import clipforge

SAMPLES = Path(clipforge.__file__).parent / "bundled" / "samples"


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed entry point's code path (`python -m clipforge.cli.main`), isolated caches."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "clipforge.cli.main", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=300)


def assert_clean_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith("clipforge "), result.stderr
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in {result.stderr!r}"


@pytest.fixture()
def isolated(tmp_path) -> dict:
    """Empty caches and no network: what a fresh machine offline sees."""
    return {"HOME": str(tmp_path / "home"), "CLIPFORGE_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf"),
            "XDG_CACHE_HOME": str(tmp_path / "xdg")}


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return clipforge.save(clipforge.ClipModel(TINY), tmp_path_factory.mktemp("tiny") / "tiny.safetensors")


# ---- 1. no silent random weights; 4. names ------------------------------------------------------------


def test_a_named_architecture_without_weights_is_refused_with_the_tags(isolated):
    result = run_cli("classify", str(SAMPLES / "airplane.png"), "--labels", "cat,dog", "--model", "ViT-B-32", env=isolated)
    assert_clean_error(result, "choose its weights", "'openai'", "--weights TAG", "'none'")
    assert result.stdout == ""  # no probabilities printed


def test_names_resolve_with_suggestions(isolated):
    assert_clean_error(run_cli("classify", str(SAMPLES / "airplane.png"), "--labels", "a,b", "--model", "ViT-B-23",
                               env=isolated), "did you mean ViT-B-32")
    # OpenAI's spelling is an architecture, not a hub repo
    assert_clean_error(run_cli("classify", str(SAMPLES / "airplane.png"), "--labels", "a,b", "--model", "ViT-B/32",
                               env=isolated), "ViT-B-32 is an architecture")
    # a hub id that does not exist (from a seed article): no such model, and the real ones
    result = run_cli("classify", str(SAMPLES / "airplane.png"), "--labels", "a,b", "--model",
                     "openai/clip-vit-large-patch32", env=isolated)
    assert_clean_error(result, "no such model known", "openai/clip-vit-large-patch14", "openai/clip-vit-base-patch32")
    # a mistyped weights tag: one line with the known tags
    assert_clean_error(run_cli("classify", str(SAMPLES / "airplane.png"), "--labels", "a,b", "--model", "ViT-B-32",
                               "--weights", "opneai", env=isolated), "unknown weights tag 'opneai'", "openai")


def test_models_lists_the_bundled_model_and_hub_ids():
    result = run_cli("models")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("clipforge-mini") and "bundled" in lines[0]
    assert any(line.startswith("ViT-B-32-quickgelu\topenai") for line in lines)
    assert any(line.startswith("openai/clip-vit-large-patch14\t") for line in lines)


# ---- 3. offline quickly ----------------------------------------------------------------------------------


def test_no_network_is_detected_quickly_with_cli_advice(isolated):
    started = time.monotonic()
    result = run_cli("classify", str(SAMPLES / "airplane.png"), "--labels", "a,b", "--model",
                     "openai/clip-vit-large-patch14", env={**isolated, "HF_ENDPOINT": "http://127.0.0.1:9"})
    elapsed = time.monotonic() - started
    assert_clean_error(result, "not available locally", "Offline (no network", "--model /path/to/folder")
    # the interpreter and torch imports dominate; without the probe huggingface_hub retries for ~30 s
    assert elapsed < 25, elapsed


def test_the_network_probe_is_bounded(monkeypatch):
    from clipforge import hub_cache

    monkeypatch.setattr(hub_cache, "_PROBED", {})
    started = time.monotonic()
    # a non-routable address: the connection hangs (or a sandbox's interceptor fails TLS)
    reason = hub_cache.unreachable_reason("https://10.255.255.1:81/")
    assert time.monotonic() - started < hub_cache.NETWORK_PROBE_SECONDS + 1.5
    assert reason is not None
    assert "refused" in hub_cache.unreachable_reason("http://127.0.0.1:9/")  # refused at once


# ---- 5. inputs alike for every command --------------------------------------------------------------


def test_every_image_command_takes_files_folders_and_globs(tiny_file, tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i, name in enumerate(sorted(SAMPLES.glob("*.png"))[:3]):
        shutil.copy(name, (photos / "sub" if i == 2 else photos) / name.name)
    for images in ([str(photos)], [str(photos / "*.png"), str(photos / "sub" / "*.png")],
                   [str(p) for p in sorted(photos.rglob("*.png"))]):
        result = run_cli("classify", *images, "--labels", "a,b", "--model", str(tiny_file), "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["n_classified"] == 3, images
    result = run_cli("compare", str(photos), "--texts", "a,b", "--model", str(tiny_file))
    assert result.returncode == 0 and len(result.stdout.strip().splitlines()) == 4, result.stderr
    result = run_cli("score", str(photos / "sub"), "--texts", "a cat", "--model", str(tiny_file), "--json")
    assert result.returncode == 0 and "score" in json.loads(result.stdout), result.stderr
    result = run_cli("embed", str(photos / "sub" / next((photos / "sub").iterdir()).name), "--out", str(tmp_path / "e1"),
                     "--model", str(tiny_file), "--no-progress")
    assert result.returncode == 0 and "embedded 1 images" in result.stdout, result.stderr


def test_nothing_to_do_is_an_error_not_a_silent_success(tiny_file, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(run_cli("embed", str(empty), "--out", str(tmp_path / "e"), "--model", str(tiny_file)),
                       "nothing to embed")
    assert_clean_error(run_cli("classify", str(empty), "--labels", "a,b", "--model", str(tiny_file)), "no images found")
    assert_clean_error(run_cli("classify", str(tmp_path / "*.jpg"), "--labels", "a,b", "--model", str(tiny_file)),
                       "no files match")
    assert_clean_error(run_cli("interrogate", str(empty), "--model", str(tiny_file)), "no images found")


def test_files_that_are_no_checkpoint_get_a_clear_error(tmp_path):
    notes = tmp_path / "notes.pt"
    notes.write_text("NG\r\nthis is not a checkpoint\n")
    assert_clean_error(run_cli("classify", str(SAMPLES / "airplane.png"), "--labels", "a,b", "--model", str(notes)),
                       str(notes))


def test_untrusted_names_and_labels_reach_the_terminal_escaped(tiny_file, tmp_path):
    name = "evil\u202egnp.png"  # a right-to-left override would show "evilpng.png"-like text
    shutil.copy(SAMPLES / "airplane.png", tmp_path / name)
    result = run_cli("classify", str(tmp_path / name), "--labels", "a\x1b[31mred,b", "--model", str(tiny_file))
    assert result.returncode == 0, result.stderr
    assert "\u202e" not in result.stdout and "\x1b" not in result.stdout
    assert "\\u202e" in result.stdout and "\\u001b" in result.stdout


# ---- 6. convert --to hf is a complete directory; 7. the transformers drop-in -----------------------------


def test_convert_to_hf_writes_a_directory_transformers_opens_whole(tiny_file, tmp_path, real_pixels):
    import clip as openai_clip
    from transformers import CLIPModel as HFCLIPModel
    from transformers import CLIPProcessor as HFCLIPProcessor

    out = tmp_path / "hf"
    result = run_cli("convert", str(tiny_file), str(out), "--to", "hf")
    assert result.returncode == 0, result.stderr
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json",
                 "special_tokens_map.json", "preprocessor_config.json"):
        assert (out / name).is_file(), name
    processor = HFCLIPProcessor.from_pretrained(out)
    captions = ["a diagram", "Red Rose (still life), red flower painting", "cat sitting on a wooden chair, cartoon clip-art"]
    ids = processor(text=captions, padding="max_length", return_tensors="pt")["input_ids"]
    reference = openai_clip.tokenize(captions)
    real = reference != 0
    assert torch.equal(ids[real], reference[real])  # OpenAI's ids
    # the padding is the record's: 0 ("!") for this model, as open_clip and LAION's repos pad
    assert (ids[~real] == 0).all() and json.loads((out / "tokenizer_config.json").read_text())["pad_token"] == "!"
    model = HFCLIPModel.from_pretrained(out).eval()
    ours, preprocess, _ = clipforge.load(out)
    from PIL import Image

    image = Image.open(SAMPLES / "airplane.png")
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    assert torch.allclose(pixels, preprocess(image).unsqueeze(0), atol=1e-6)
    with torch.no_grad():
        theirs = model.get_image_features(pixel_values=pixels)
        theirs = theirs if torch.is_tensor(theirs) else theirs.pooler_output
        assert torch.allclose(ours.encode_image(pixels), theirs, atol=1e-5)


def test_transformers_drop_in_runs_seed_002_code_with_one_changed_import(tiny_file, tmp_path):
    from PIL import Image
    from transformers import CLIPModel as HFCLIPModel
    from transformers import CLIPProcessor as HFCLIPProcessor

    from clipforge.compat.transformers import CLIPModel, CLIPProcessor

    clip_path = tmp_path / "clip-vit-tiny"
    assert run_cli("convert", str(tiny_file), str(clip_path), "--to", "hf").returncode == 0
    image = Image.open(SAMPLES / "airplane.png")

    def seed_002(CLIPModel, CLIPProcessor):  # noqa: N803 - the article's code, verbatim but for the image
        model = CLIPModel.from_pretrained(clip_path)
        processor = CLIPProcessor.from_pretrained(clip_path)
        inputs = processor(text=["a photo of a cat", "a photo of a dog"], images=image, return_tensors="pt", padding=True)
        outputs = model(**inputs)
        logits_per_image = outputs.logits_per_image  # this is the image-text similarity score
        probs = logits_per_image.softmax(dim=1)  # we can take the softmax to get the label probabilities
        return probs

    with torch.no_grad():
        ours, theirs = seed_002(CLIPModel, CLIPProcessor), seed_002(HFCLIPModel, HFCLIPProcessor)
    assert ours.shape == (1, 2) and torch.allclose(ours, theirs, atol=1e-5)
    model = CLIPModel.from_pretrained(clip_path)
    assert set(model.state_dict()) == set(clipforge.load(clip_path)[0].state_dict())  # no wrapper prefix


# ---- 8. plotting is an extra with a hint; 9. the demo ----------------------------------------------------


def test_compare_png_without_matplotlib_is_a_one_line_hint(tiny_file, tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "matplotlib").mkdir()
    (blocker / "matplotlib" / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    result = run_cli("compare", str(SAMPLES / "airplane.png"), "--texts", "a,b", "--model", str(tiny_file),
                     "--png", str(tmp_path / "sim.png"), env={"PYTHONPATH": str(blocker) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert_clean_error(result, "clipforge[plot]")
