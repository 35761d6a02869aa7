"""encode_prompt against transformers' CLIPTextModel / CLIPTextModelWithProjection, read as diffusers reads them.

The references below transcribe diffusers 0.42's `encode_prompt` (StableDiffusionPipeline for SD 1.x/2.x,
StableDiffusionXLPipeline) and AUTOMATIC1111's CLIP-skip rule; the models are small random transformers
CLIP models saved with save_pretrained and loaded back with clipforge.load.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
from conftest import CAPTIONS

import clipforge
from clipforge.tasks.diffusion_conditioning import encode_prompt
from clipforge.text import bpe

RTOL = 1e-5
LONG = CAPTIONS[-1]  # 82 tokens: more than one 77-token window


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    scale = ref.abs().max().item()
    diff = (ours - ref).abs().max().item()
    assert diff <= RTOL * scale, f"{what}: max abs diff {diff:.3g} > {RTOL} x scale {scale:.3g}"


def hf_tokenizer(pad_token: str):
    """transformers' CLIPTokenizer from clipforge's bundled vocabulary; SD 1.x pads with <|endoftext|>, SD 2.x with "!"."""
    from transformers import CLIPTokenizer

    vocab = bpe.load_vocab()
    lines = gzip.decompress((Path(bpe.__file__).parent / bpe.VOCAB_FILE).read_bytes()).decode().split("\n")
    merges = [tuple(t.split()) for t in lines[1 : bpe.N_MERGES + 1]]
    return CLIPTokenizer(vocab=vocab.encoder, merges=merges, pad_token=pad_token, model_max_length=77)


def hf_ids(tokenizer, texts) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def build_encoder(directory: Path, width: int, layers: int, act: str, projection: int, seed: int):
    """Save a small random transformers CLIPModel; return (clipforge model, CLIPTextModel, CLIPTextModelWithProjection,
    CLIPTextModel with its last block removed as diffusers ships SD 2.x's encoder)."""
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )
    from transformers.utils import logging

    logging.set_verbosity_error()  # loading the text tower alone from a CLIPModel dir reports the vision keys
    torch.manual_seed(seed)
    config = CLIPConfig(
        projection_dim=projection,
        text_config=dict(
            vocab_size=49408, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
            num_attention_heads=4, max_position_embeddings=77, hidden_act=act,
            bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
        ),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16, hidden_act=act),
    )
    CLIPModel(config).save_pretrained(directory)
    text_config = CLIPTextConfig.from_pretrained(directory)
    text_config.projection_dim = projection
    plain = CLIPTextModel.from_pretrained(directory, config=text_config).eval()
    projected = CLIPTextModelWithProjection.from_pretrained(directory, config=text_config).eval()
    text_config.num_hidden_layers = layers - 1
    truncated = CLIPTextModel.from_pretrained(directory, config=text_config).eval()
    model, _, _ = clipforge.load(directory)
    return model, plain, projected, truncated


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd_encoders")
    # "L": SD 1.x / SDXL's first encoder (QuickGELU); "G": SD 2.x / SDXL's OpenCLIP encoder (GELU, projected).
    return {
        "L": build_encoder(root / "l", width=32, layers=4, act="quick_gelu", projection=16, seed=0),
        "G": build_encoder(root / "g", width=48, layers=4, act="gelu", projection=24, seed=1),
    }


# ---- the references: diffusers' code and A1111's rule, on transformers' models ------------------------------


def diffusers_sd(text_encoder, ids: torch.Tensor, clip_skip) -> torch.Tensor:
    """StableDiffusionPipeline.encode_prompt (SD 1.x and 2.x)."""
    if clip_skip is None:
        return text_encoder(ids)[0]
    hidden = text_encoder(ids, output_hidden_states=True).hidden_states
    return text_encoder.final_layer_norm(hidden[-(clip_skip + 1)])


def a1111_sd1(text_encoder, ids: torch.Tensor, clip_skip_n: int) -> torch.Tensor:
    """AUTOMATIC1111's FrozenCLIPEmbedderWithCustomWords.encode_with_transformers, CLIP_stop_at_last_layers = N."""
    out = text_encoder(ids, output_hidden_states=True)
    if clip_skip_n > 1:
        return text_encoder.final_layer_norm(out.hidden_states[-clip_skip_n])
    return out.last_hidden_state


def diffusers_sdxl(encoders, ids, clip_skip):
    """StableDiffusionXLPipeline.encode_prompt: (prompt_embeds, pooled_prompt_embeds)."""
    embeds, pooled = [], None
    for text_encoder, input_ids in zip(encoders, ids):
        out = text_encoder(input_ids, output_hidden_states=True)
        if pooled is None and out[0].ndim == 2:
            pooled = out[0]
        embeds.append(out.hidden_states[-2] if clip_skip is None else out.hidden_states[-(clip_skip + 2)])
    return torch.cat(embeds, dim=-1), pooled


# CAPTIONS[4] is left out: its curly quotes are where transformers' (Rust) CLIPTokenizer and OpenAI's
# ftfy-based one disagree (docs/tokenizer.md), which is the tokenizer's business, not this module's.
TEXTS = CAPTIONS[:4] + [LONG, ""]


# ---- tests ------------------------------------------------------------------------------------------------------


def test_tokens_use_each_pipelines_padding(encoders):
    model_l, model_g = encoders["L"][0], encoders["G"][0]
    with torch.no_grad():
        sd1 = encode_prompt(model_l, TEXTS, "sd1")
        sd2 = encode_prompt(model_g, TEXTS, "sd2")
        xl1 = encode_prompt(model_l, TEXTS, "sdxl", encoder=1)
        xl2 = encode_prompt(model_g, TEXTS, "sdxl", encoder=2)
    end_padded, zero_padded = hf_ids(hf_tokenizer("<|endoftext|>"), TEXTS), hf_ids(hf_tokenizer("!"), TEXTS)
    assert int(zero_padded[0, -1]) == 0 and int(end_padded[0, -1]) == 49407
    assert torch.equal(sd1.tokens, end_padded) and torch.equal(xl1.tokens, end_padded)
    assert torch.equal(sd2.tokens, zero_padded) and torch.equal(xl2.tokens, zero_padded)


@pytest.mark.parametrize("clip_skip", [None, 1, 2, 3])
def test_sd1_matches_diffusers(encoders, clip_skip):
    model, plain, _, _ = encoders["L"]
    ids = hf_ids(hf_tokenizer("<|endoftext|>"), TEXTS)
    with torch.no_grad():
        ours = encode_prompt(model, TEXTS, "sd1", clip_skip=clip_skip, clip_skip_convention="diffusers")
        assert_close(ours.hidden_states, diffusers_sd(plain, ids, clip_skip), f"sd1 clip_skip={clip_skip}")
        assert_close(ours.pooled, plain(ids).pooler_output, "sd1 pooled")


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_sd1_matches_a1111_clip_skip(encoders, n):
    model, plain, _, _ = encoders["L"]
    ids = hf_ids(hf_tokenizer("<|endoftext|>"), TEXTS)
    with torch.no_grad():
        ours = encode_prompt(model, TEXTS, "sd1", clip_skip=n, clip_skip_convention="a1111")
        assert_close(ours.hidden_states, a1111_sd1(plain, ids, n), f"sd1 CLIP skip {n}")
        if n > 1:  # the same layer, named one lower by diffusers
            other = encode_prompt(model, TEXTS, "sd1", clip_skip=n - 1, clip_skip_convention="diffusers")
            assert torch.equal(ours.hidden_states, other.hidden_states)


@pytest.mark.parametrize("clip_skip", [None, 1])
def test_sd2_matches_diffusers_truncated_encoder(encoders, clip_skip):
    model, plain, _, truncated = encoders["G"]
    ids = hf_ids(hf_tokenizer("!"), TEXTS)
    with torch.no_grad():
        ours = encode_prompt(model, TEXTS, "sd2", clip_skip=clip_skip, clip_skip_convention="diffusers")
        assert_close(ours.hidden_states, diffusers_sd(truncated, ids, clip_skip), f"sd2 clip_skip={clip_skip}")
        # open_clip's "penultimate" on the full tower: hidden_states[-2] through the final LayerNorm.
        if clip_skip is None:
            full = plain(ids, output_hidden_states=True).hidden_states[-2]
            assert_close(ours.hidden_states, plain.final_layer_norm(full), "sd2 penultimate + LN")
        assert_close(ours.pooled, plain(ids).pooler_output, "sd2 pooled (full tower)")


@pytest.mark.parametrize("clip_skip", [None, 1])
def test_sdxl_matches_diffusers(encoders, clip_skip):
    model_l, plain_l, _, _ = encoders["L"]
    model_g, _, projected_g, _ = encoders["G"]
    ids = (hf_ids(hf_tokenizer("<|endoftext|>"), TEXTS), hf_ids(hf_tokenizer("!"), TEXTS))
    with torch.no_grad():
        one = encode_prompt(model_l, TEXTS, "sdxl", clip_skip, "diffusers", encoder=1)
        two = encode_prompt(model_g, TEXTS, "sdxl", clip_skip, "diffusers", encoder=2)
        ref_embeds, ref_pooled = diffusers_sdxl((plain_l, projected_g), ids, clip_skip)
        assert_close(torch.cat([one.hidden_states, two.hidden_states], dim=-1), ref_embeds, "sdxl prompt_embeds")
        assert_close(two.pooled, ref_pooled, "sdxl pooled_prompt_embeds (text_embeds)")
        assert two.pooled.shape == (len(TEXTS), 24)


def test_long_prompts_chunk_into_75_token_windows(encoders):
    model, plain, _, _ = encoders["L"]
    tokenizer = hf_tokenizer("<|endoftext|>")
    longer = f"{LONG}, {LONG}"
    texts = [longer, "a diagram"]
    content = tokenizer(longer, add_special_tokens=False).input_ids
    k = -(-len(content) // 75)
    assert k == 3
    with torch.no_grad():
        ours = encode_prompt(model, texts, "sd1", long_prompts="chunk")
        assert ours.hidden_states.shape == (2, 77 * k, 32) and ours.tokens.shape == (2, 77 * k)
        # Reference: every window [start] + 75 ids + [end] (+ padding), encoded on its own; the short
        # prompt's missing windows are the encoding of "".
        windows = [[49406] + content[j * 75 : (j + 1) * 75] + [49407] for j in range(k)]
        windows = torch.tensor([w + [49407] * (77 - len(w)) for w in windows])
        short = hf_ids(tokenizer, ["a diagram"] + [""] * (k - 1))
        ref_tokens = torch.stack([windows.reshape(-1), short.reshape(-1)])
        assert torch.equal(ours.tokens, ref_tokens)
        ref_states = plain(ref_tokens.view(-1, 77)).last_hidden_state.reshape(2, 77 * k, 32)
        assert_close(ours.hidden_states, ref_states, "chunked sd1")
        assert_close(ours.pooled, plain(ref_tokens[:, :77]).pooler_output, "pooled = first window's")
        # A prompt that fits is one window, identical to truncation.
        fits = encode_prompt(model, ["a diagram"], "sd1", long_prompts="chunk")
        assert torch.equal(fits.hidden_states, encode_prompt(model, ["a diagram"], "sd1").hidden_states)
        # A pasted megabyte is refused after tokenizing only what the window limit spans.
        with pytest.raises(ValueError, match="prompt 1 is longer than 2400 tokens"):
            encode_prompt(model, ["a diagram", "word " * 200_000], "sd1", long_prompts="chunk")


def test_errors_say_what_is_wrong(encoders):
    model = encoders["L"][0]
    with pytest.raises(ValueError, match="encoder=1"):
        encode_prompt(model, "a cat", "sdxl")
    with pytest.raises(ValueError, match="layers"):
        encode_prompt(model, "a cat", "sd1", clip_skip=6)
    with pytest.raises(ValueError, match="counts from 1"):
        encode_prompt(model, "a cat", "sd1", clip_skip=0, clip_skip_convention="a1111")
    with pytest.raises(ValueError, match="preset"):
        encode_prompt(model, "a cat", "sd3")
