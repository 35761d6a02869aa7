"""Drop-in imports: the seed scripts' code runs with only its import changed and gives the numbers of
clipforge's direct API and of the reference library itself, on one random-weights file.

The file sits in a fake offline Hugging Face cache where `clip.load("ViT-B/32")` and
`open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai")` resolve it. OpenAI's own
`clip.load` cannot take a random file by name (it checks OpenAI's sha256), so the reference run
gets the same tensors by path; its loader rounds weights to fp16, so the random weights are made
fp16-representable first and every library sees exactly the same numbers.
"""

from __future__ import annotations

import re
from typing import Optional

import pytest
import torch
from conftest import CAPTIONS
from image_fixtures import corpus_sample
from references import build_openai
from safetensors.torch import save_file
from test_loading import offline_caches, put_in_hf_cache  # noqa: F401  (offline_caches is a fixture)
from test_model_parity import assert_parity

import clipforge

HUB_ID = "timm/vit_base_patch32_clip_224.openai"  # where ("ViT-B-32", "openai") resolves in the HF cache

# Seed snippets (/work/shared/seeds), verbatim except the image file name. 002 and 003 (OpenAI's README):
SEED_CLIP = '''
import torch
import clip
from PIL import Image

device = "cuda" if torch.cuda.is_available() else "cpu"
model, preprocess = clip.load("ViT-B/32", device=device)

image = preprocess(Image.open("CLIP.png")).unsqueeze(0).to(device)
text = clip.tokenize(["a diagram", "a dog", "a cat"]).to(device)

with torch.no_grad():
    image_features = model.encode_image(image)
    text_features = model.encode_text(text)
    
    logits_per_image, logits_per_text = model(image, text)
    probs = logits_per_image.softmax(dim=-1).cpu().numpy()

print("Label probs:", probs)  # prints: [[0.9927937  0.00421068 0.00299572]]
'''

# 000: raw features, scaled by hand.
SEED_CLIP_SCORES = '''
target_classes = ["cat", "dog", "owl"]
text_inputs = clip.tokenize(target_classes).to(device)
with torch.no_grad():
    text_features = model.encode_text(text_inputs)
similarity_scores = (100.0 * image_features @ text_features.T).softmax(dim=-1)
_, predicted_class = similarity_scores.max(dim=-1)
predicted_class = predicted_class.item()
'''

# 004 (Stable Diffusion guidance notebook): open_clip + torchvision augmentations + encode_text.
SEED_OPEN_CLIP = '''
import torch
import torchvision.transforms as transforms
import torch.nn.functional as F
import open_clip

clip_model, _, preprocess = open_clip.create_model_and_transforms(
    "ViT-B-32", pretrained="openai"
)
clip_model.to(device)

# Transforms to resize and augment an image + normalize to match CLIP's training data
tfms = transforms.Compose(
    [
        transforms.RandomResizedCrop(224),  # Random CROP each time
        transforms.RandomAffine(
            5
        ),  # One possible random augmentation: skews the image
        transforms.RandomHorizontalFlip(),  # You can add additional augmentations if you like
        transforms.Normalize(
            mean=(0.48145466, 0.4578275, 0.40821073),
            std=(0.26862954, 0.26130258, 0.27577711),
        ),
    ]
)

# And define a loss function that takes an image, embeds it and compares with
# the text features of the prompt
def clip_loss(image, text_features):
    image_features = clip_model.encode_image(
        tfms(image)
    )  # Note: applies the above transforms
    input_normed = F.normalize(image_features.unsqueeze(1), dim=2)
    embed_normed = F.normalize(text_features.unsqueeze(0), dim=2)
    dists = (
        input_normed.sub(embed_normed).norm(dim=2).div(2).arcsin().pow(2).mul(2)
    )  # Squared Great Circle Distance
    return dists.mean()

prompt = "Red Rose (still life), red flower painting"
text_tokens = open_clip.tokenize([prompt]).to(device)
text_features = clip_model.encode_text(text_tokens)
'''


def run_seed(code: str, namespace: Optional[dict] = None, **names) -> dict:
    """Run seed code as a script would (module-level names); a later snippet continues in the same namespace."""
    namespace = {} if namespace is None else namespace
    namespace.update(names)
    exec(compile(code, "<seed>", "exec"), namespace)
    return namespace


def only_import_changed(code: str, module: str) -> str:
    changed = code.replace(f"import {module}\n", f"from clipforge.compat import {module}\n", 1)
    assert changed != code
    return changed


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """One full-size random ViT-B/32 in OpenAI's class, as an OpenAI .pt and as open_clip's hub safetensors."""
    ref = build_openai("ViT-B-32")
    state = {k: v.half().float() if v.is_floating_point() else v for k, v in ref.state_dict().items()}
    del ref
    folder = tmp_path_factory.mktemp("vitb32")
    torch.save(state, folder / "ViT-B-32.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture
def cached(weights, offline_caches):  # noqa: F811
    put_in_hf_cache(offline_caches, HUB_ID, {"open_clip_model.safetensors": weights / "open_clip_model.safetensors"})
    return weights


@pytest.fixture(scope="module")
def image_path():
    return str(corpus_sample(1)[0])


def test_openai_seed_with_compat_import_matches_direct_api_and_clip(cached, image_path, capsys):
    seed = SEED_CLIP.replace('"CLIP.png"', repr(image_path))
    ours = run_seed(only_import_changed(seed, "clip"))
    run_seed(SEED_CLIP_SCORES, ours)
    assert type(ours["model"]).__name__ == "OpenAIClipModel"
    assert ours["model"].visual.input_resolution == 224 and ours["model"].context_length == 77

    # clipforge's direct API on the same cached file.
    from PIL import Image

    model, preprocess, tokenizer = clipforge.load("ViT-B-32", weights="openai")
    pixels = preprocess(Image.open(image_path)).unsqueeze(0)
    tokens = tokenizer(["a diagram", "a dog", "a cat"])
    assert torch.equal(ours["image"], pixels) and torch.equal(ours["text"], tokens)
    with torch.no_grad():
        direct_logits, _ = model(pixels, tokens)
        direct_image = model.encode_image(pixels)
    assert torch.allclose(ours["logits_per_image"], direct_logits, rtol=0, atol=1e-6)
    assert torch.allclose(ours["image_features"], direct_image, rtol=0, atol=1e-6)

    # OpenAI's clip package itself, on the same tensors (by path: see the module docstring).
    ref = run_seed(seed.replace('"ViT-B/32"', repr(str(cached / "ViT-B-32.pt"))))
    run_seed(SEED_CLIP_SCORES, ref)
    assert torch.equal(ref["image"], ours["image"]) and torch.equal(ref["text"], ours["text"])
    for name in ("image_features", "text_features", "logits_per_image", "logits_per_text", "similarity_scores"):
        assert_parity(ours[name], ref[name], name)
    assert abs(ours["probs"] - ref["probs"]).max() <= 1e-5
    assert ours["predicted_class"] == ref["predicted_class"]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("Label probs:") and len(printed) == 2


def test_open_clip_seed_with_compat_import_matches_direct_api_and_open_clip(cached, image_path):
    import open_clip
    from PIL import Image

    ours = run_seed(only_import_changed(SEED_OPEN_CLIP, "open_clip"), device="cpu")
    # open_clip 3.x builds the plain "ViT-B-32" with GELU for these QuickGELU weights (it only warns);
    # clipforge builds what the weights need, which is open_clip's "-quickgelu" model.
    ref_code = SEED_OPEN_CLIP.replace('"ViT-B-32", pretrained', '"ViT-B-32-quickgelu", pretrained')
    ref = run_seed(ref_code, device="cpu")
    assert type(ours["clip_model"]).__name__ == "OpenClipModel"

    model, preprocess, tokenizer = clipforge.load("ViT-B-32", weights="openai")
    tokens = tokenizer(["Red Rose (still life), red flower painting"])
    assert torch.equal(ours["text_tokens"], tokens) and torch.equal(ref["text_tokens"], tokens)
    with torch.no_grad():
        direct_text = model.encode_text(tokens)
    assert torch.allclose(ours["text_features"].detach(), direct_text, rtol=0, atol=1e-6)
    assert_parity(ours["text_features"], ref["text_features"], "open_clip seed text features")

    # The seed's loss: identical random augmentations in both runs, gradients flow to the image.
    pixels = ours["preprocess"](Image.open(image_path)).unsqueeze(0)
    assert torch.equal(pixels, preprocess(Image.open(image_path)).unsqueeze(0))
    assert torch.allclose(ref["preprocess"](Image.open(image_path)).unsqueeze(0), pixels, rtol=0, atol=1e-6)
    losses = []
    for namespace in (ours, ref):
        torch.manual_seed(0)
        image = pixels.clone().requires_grad_(True)
        loss = namespace["clip_loss"](image, namespace["text_features"])
        loss.backward()
        assert image.grad is not None and image.grad.abs().sum() > 0
        losses.append(loss.detach())
    assert_parity(losses[0], losses[1], "clip_loss")

    # open_clip's forward convention, and the state dict is open_clip's own (no wrapper prefix).
    text = open_clip.tokenize(CAPTIONS[:3])
    with torch.no_grad():
        image_features, text_features, logit_scale = ours["clip_model"](pixels, text)
        ref_image, ref_text, ref_scale = ref["clip_model"](pixels, text)
    assert_parity(image_features, ref_image, "forward image_features")
    assert_parity(text_features, ref_text, "forward text_features")
    assert torch.allclose(logit_scale, ref_scale)
    missing, unexpected = ref["clip_model"].load_state_dict(ours["clip_model"].state_dict(), strict=False)
    assert not unexpected and all(k == "attn_mask" or k.endswith(".attn_mask") for k in missing), (missing, unexpected)


def test_open_clip_options(cached):
    from clipforge.compat import open_clip

    model, train, val = open_clip.create_model_and_transforms(
        "ViT-B-32", pretrained="openai", precision="bf16", output_dict=True, image_mean=(0.5, 0.5, 0.5)
    )
    assert val.config.mean == (0.5, 0.5, 0.5)
    assert model.token_embedding.weight.dtype == torch.bfloat16 and model.visual.image_size == (224, 224)
    # preprocess_train is open_clip's training transform, random from torch's global RNG: bit-identical
    import open_clip as reference
    from PIL import Image

    _, ref_train, _ = reference.create_model_and_transforms("ViT-B-32", pretrained=None, image_mean=(0.5, 0.5, 0.5))
    import numpy as np

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    torch.manual_seed(7)
    ours = torch.stack([train(image) for _ in range(4)])
    torch.manual_seed(7)
    theirs = torch.stack([ref_train(image) for _ in range(4)])
    assert torch.equal(ours, theirs) and not torch.equal(ours[0], ours[1])
    out = model(text=open_clip.tokenize(["a cat"]))
    assert out["image_features"] is None and out["text_features"].shape == (1, 512)
    with pytest.raises(ValueError, match="force_image_size"):
        open_clip.create_model("ViT-B-32", pretrained="openai", force_image_size=336)
    with pytest.raises(ValueError, match="TorchScript"):
        open_clip.create_model("ViT-B-32", jit=True)
    with pytest.raises(ValueError, match="precision"):
        open_clip.create_model("ViT-B-32", precision="fp8")


def test_open_clip_tokenizers_and_listing_match_open_clip():
    import open_clip as reference

    from clipforge.compat import open_clip

    assert torch.equal(open_clip.tokenize(CAPTIONS), reference.tokenize(CAPTIONS))
    assert torch.equal(open_clip.get_tokenizer("ViT-B-32")(CAPTIONS), reference.get_tokenizer("ViT-B-32")(CAPTIONS))
    assert set(open_clip.list_pretrained()) <= set(reference.list_pretrained())
    assert "ViT-B-32-quickgelu:openai" in open_clip.list_pretrained(as_str=True)
    with pytest.raises(KeyError):
        open_clip.get_tokenizer("ViT-B-16-SigLIP")


def test_clip_tokenize_load_errors_and_names_match_openai():
    import clip as reference

    from clipforge.compat import clip

    assert clip.available_models() == reference.available_models()
    texts = CAPTIONS + ["a cat <|endoftext|> and a dog"]  # OpenAI reads a typed special token as special
    assert torch.equal(clip.tokenize(texts, truncate=True), reference.tokenize(texts, truncate=True))
    with pytest.raises(RuntimeError, match="context length"):  # OpenAI's default: raise, as RuntimeError
        clip.tokenize(CAPTIONS)
    with pytest.raises(RuntimeError, match=re.escape("available models")):
        clip.load("ViT-B/99")
    with pytest.raises(ValueError, match="jit=False"):
        clip.load("ViT-B/32", jit=True)


def test_compat_imports_load_nothing_heavy_at_import():
    import subprocess
    import sys

    code = (
        "import sys, clipforge.compat; assert 'torch' not in sys.modules; "
        "from clipforge.compat import clip, open_clip; "
        "assert not {'clip', 'open_clip', 'torchvision', 'transformers'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
