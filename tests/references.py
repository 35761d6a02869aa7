"""Build the reference implementations' models with random weights, in each library's own classes.

Nothing here uses clipforge's models: these are the oracles. Shapes come from open_clip's model
configs (the source of the architecture names), optionally made shallower for the giant models.
"""

from __future__ import annotations

import copy
import warnings
from typing import Optional

import torch

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

# Architectures OpenAI released (its `clip` package can build these), by open_clip name.
OPENAI_ARCHS = ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336"]
ALL_ARCHS = OPENAI_ARCHS + ["ViT-H-14", "ViT-g-14", "ViT-bigG-14"]
FULL_SIZE = ["ViT-B-32", "ViT-B-16", "RN50", "ViT-L-14"]


def open_clip_cfg(name: str, depth: Optional[int] = None) -> dict:
    """open_clip's config for `name`; with `depth`, both towers cut to `depth` layers (ResNet: 1 block per stage)."""
    import open_clip

    cfg = copy.deepcopy(open_clip.get_model_config(name))
    if depth is not None:
        vision = cfg["vision_cfg"]
        vision["layers"] = [1, 1, 1, 1] if isinstance(vision["layers"], (list, tuple)) else depth
        cfg["text_cfg"]["layers"] = depth
    return cfg


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Fresh BatchNorm stats are identity-like; random ones make the test see whether they are used."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def build_open_clip(name: str, depth: Optional[int] = None, quick_gelu: bool = False, seed: int = 0):
    import open_clip

    torch.manual_seed(seed)
    cfg = open_clip_cfg(name, depth)
    cfg["quick_gelu"] = quick_gelu or cfg.get("quick_gelu", False)
    model = open_clip.model.CLIP(**cfg).eval()
    randomize_batchnorm(model, seed)
    return model


def build_openai(name: str, depth: Optional[int] = None, seed: int = 0):
    """OpenAI's `clip.model.CLIP` in fp32 (its build_model would cast to fp16, which we do not want here)."""
    import clip

    torch.manual_seed(seed)
    cfg = open_clip_cfg(name, depth)
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    layers = tuple(vision["layers"]) if isinstance(vision["layers"], list) else vision["layers"]
    model = clip.model.CLIP(
        cfg["embed_dim"], vision["image_size"], layers, vision["width"], vision.get("patch_size"),
        text["context_length"], text["vocab_size"], text["width"], text["heads"], text["layers"],
    ).eval()
    randomize_batchnorm(model, seed)
    return model


def build_hf(name: str, depth: Optional[int] = None, quick_gelu: bool = False, seed: int = 0):
    """transformers' CLIPModel with the shapes of open_clip's `name` config (ViTs only: HF has no ResNet CLIP)."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    cfg = open_clip_cfg(name, depth)
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    act = "quick_gelu" if quick_gelu else "gelu"
    head_width = vision.get("head_width", 64)
    config = CLIPConfig(
        projection_dim=cfg["embed_dim"],
        text_config=dict(
            vocab_size=text["vocab_size"], hidden_size=text["width"], intermediate_size=text["width"] * 4,
            num_hidden_layers=text["layers"], num_attention_heads=text["heads"],
            max_position_embeddings=text["context_length"], hidden_act=act,
            bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=vision["width"], intermediate_size=int(vision["width"] * vision.get("mlp_ratio", 4.0)),
            num_hidden_layers=vision["layers"], num_attention_heads=vision["width"] // head_width,
            image_size=vision["image_size"], patch_size=vision["patch_size"], hidden_act=act,
        ),
    )
    return CLIPModel(config).eval()


def build_hf_processor(size: int, mean=None, std=None):
    """transformers' CLIPProcessor built offline: CLIPTokenizer from clipforge's bundled BPE file."""
    import gzip
    from pathlib import Path

    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

    from clipforge.text import bpe

    vocab = bpe.load_vocab()
    lines = gzip.decompress((Path(bpe.__file__).parent / bpe.VOCAB_FILE).read_bytes()).decode().split("\n")
    merges = [tuple(t.split()) for t in lines[1 : bpe.N_MERGES + 1]]
    tokenizer = CLIPTokenizer(vocab=vocab.encoder, merges=merges, model_max_length=77)
    extra = {} if mean is None else {"image_mean": list(mean), "image_std": list(std)}
    images = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, **extra)
    return CLIPProcessor(image_processor=images, tokenizer=tokenizer)
