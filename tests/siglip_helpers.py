"""Tiny SigLIP reference models and a SentencePiece tokenizer trained here (no downloads): the
oracles for tests/test_siglip.py and the CLI/zoo tests. transformers, open_clip and timm are used
only here and in tests, never by clipforge."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import torch

from clipforge.configs import SiglipConfig, SiglipTextConfig, SiglipVisionConfig

CHINESE = ["一只猫坐在椅子上", "红色的玫瑰花", "这是一张狗的照片", "蓝天白云和绿色的山", "我们在北京吃饭"]
TEXTS = [
    "a photo of a cat", "A Photo of a DOG!!", "Red Rose (still life), red flower painting",
    "GNU C compiler - the compiler for the C programming language", "  spaces   and\ttabs\n", "",
    "caf\u00e9 \u201ccurly quotes\u201d & friends: 50% off?", "一只猫坐在椅子上", "mixed 中文 and English, ok.",
    " ".join(["a very long caption that goes on"] * 20),
]


@functools.lru_cache(maxsize=None)
def spm_model(kind: str = "t5") -> bytes:
    """A small unigram SentencePiece model trained on Debian package descriptions and Chinese lines.
    kind "t5": SigLIP's (unigram; pad 0, eos 1, unk 2); "gemma": Gemma's (BPE with byte fallback; pad 0,
    eos 1, bos 2, unk 3)."""
    import sentencepiece
    from tokenizer_corpus import debian_descriptions

    lines = debian_descriptions()[0][:3000] + CHINESE * 20
    out = io.BytesIO()
    ids = dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1) if kind == "t5" else dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out, vocab_size=500, model_type="unigram" if kind == "t5" else "bpe",
        character_coverage=1.0, byte_fallback=kind == "gemma", num_threads=1,
        pad_piece="<pad>", eos_piece="</s>" if kind == "t5" else "<eos>", unk_piece="<unk>",
        bos_piece="<bos>", minloglevel=2, **ids,
        # Gemma's normalizer adds no "▁" before the text and keeps whitespace runs.
        **({} if kind == "t5" else dict(add_dummy_prefix=False, remove_extra_whitespaces=False, normalization_rule_name="identity")),
    )
    return out.getvalue()


def tiny_config(activation: str = "gelu_tanh", variant: str = "siglip") -> SiglipConfig:
    return SiglipConfig(
        embed_dim=32,
        vision=SiglipVisionConfig(image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_width=64),
        text=SiglipTextConfig(context_length=64, vocab_size=500, width=32, heads=2, layers=2, mlp_width=64),
        activation=activation, layer_norm_eps=1e-6, variant=variant,
    )


def hf_siglip(seed: int = 0):
    from transformers import SiglipConfig as HFConfig
    from transformers import SiglipModel

    torch.manual_seed(seed)
    config = HFConfig(
        text_config=dict(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )
    model = SiglipModel(config).eval()
    with torch.no_grad():  # transformers initialises some of these to constants: make every tensor count
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def write_hf_siglip_dir(path: Path, seed: int = 0):
    """A transformers SigLIP directory as save_pretrained writes it: config + weights, spiece.model +
    tokenizer config (SiglipTokenizer), preprocessor_config.json (SiglipImageProcessor)."""
    from transformers import SiglipImageProcessor, SiglipTokenizer

    model = hf_siglip(seed)
    model.save_pretrained(path)
    spm_path = path / "trained_spiece.model"
    spm_path.write_bytes(spm_model("t5"))
    tokenizer = SiglipTokenizer(vocab_file=str(spm_path))
    tokenizer.save_pretrained(path)
    spm_path.unlink()
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return model, tokenizer


def open_clip_siglip(seed: int = 0):
    """open_clip's SigLIP (CustomTextCLIP, timm MAP image tower) at tiny size: the text tower from the
    config, the timm trunk swapped for a tiny one built the way timm builds its SigLIP ViTs."""
    import open_clip
    import timm.models.vision_transformer as tvt

    torch.manual_seed(seed)
    text_cfg = dict(context_length=64, vocab_size=500, width=32, heads=2, layers=2, no_causal_mask=True,
                    proj_bias=True, pool_type="last", norm_kwargs={"eps": 1e-6}, mlp_ratio=2.0)
    vision_cfg = dict(image_size=32, timm_model_name="vit_base_patch16_siglip_224", timm_model_pretrained=False,
                      timm_pool="map", timm_proj="none")
    model = open_clip.model.CustomTextCLIP(embed_dim=32, vision_cfg=vision_cfg, text_cfg=text_cfg, init_logit_bias=-10)
    model.visual.trunk = tvt.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                               mlp_ratio=2.0, class_token=False, global_pool="map", num_classes=0)
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def hf_siglip2(seed: int = 0):
    """transformers' Siglip2Model (NaFlex) at a square 4 x 4 patch grid (32 px, patch 8)."""
    from transformers import Siglip2Config, Siglip2Model

    torch.manual_seed(seed)
    config = Siglip2Config(
        text_config=dict(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           num_patches=16, patch_size=8),
    )
    model = Siglip2Model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def siglip2_inputs(pixels: torch.Tensor, patch: int = 8) -> dict:
    """Siglip2ImageProcessor's patch layout of [batch, 3, H, W] pixels: (row, column, channel)-flattened
    patches, all valid, and the grid shape."""
    batch, channels, height, width = pixels.shape
    gh, gw = height // patch, width // patch
    patches = pixels.reshape(batch, channels, gh, patch, gw, patch).permute(0, 2, 4, 3, 5, 1)
    return {"pixel_values": patches.reshape(batch, gh * gw, -1),
            "pixel_attention_mask": torch.ones(batch, gh * gw, dtype=torch.long),
            "spatial_shapes": torch.tensor([[gh, gw]] * batch)}
