"""`load_prompt_encoder`: the CLIP text encoders inside Stable Diffusion checkpoints, against the
references on the same tensors — transformers' CLIPTextModel(WithProjection), open_clip's text
transformer, and diffusers' own `encode_prompt` on a pipeline assembled offline from tiny parts.

Tiny random encoders (77 positions, CLIP's vocabulary, a few narrow layers) saved under the key names
real files use, next to dummy UNet and VAE tensors that must never be read."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import clipforge
from clipforge.tasks.prompt_encoder import load_prompt_encoder
from clipforge.text import Tokenizer

PROMPTS = ["a red rose, oil painting", "a castle at dusk", ""]
TOL = 1e-5


def hf_text(quick_gelu: bool = True, projection: bool = False, width: int = 64, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=3,
                            num_attention_heads=max(1, width // 64), max_position_embeddings=77, projection_dim=48,
                            hidden_act="quick_gelu" if quick_gelu else "gelu", eos_token_id=49407, bos_token_id=49406)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()
    return model


def open_clip_text(seed: int = 1):
    """An open_clip CLIP whose text tower stands in for OpenCLIP bigG/H (GELU, fused in_proj)."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.model.CLIP(
        embed_dim=40, quick_gelu=False,
        vision_cfg={"image_size": 32, "patch_size": 16, "width": 64, "layers": 1, "head_width": 32},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 3},
    ).eval()
    return model


def hf_keys(model, prefix: str, text_model_level: bool = True) -> dict:
    out = {}
    for key, value in model.state_dict().items():
        if text_model_level and not key.startswith(("text_model.", "text_projection")):
            key = "text_model." + key  # real single files have the `text_model.` level; transformers 5.6 saves none
        out[prefix + key] = value.clone()
    return out


def open_clip_keys(model, prefix: str) -> dict:
    return {prefix + k: v.clone() for k, v in model.state_dict().items() if not k.startswith("visual.")}


def dummy_unet_and_vae() -> dict:
    return {"model.diffusion_model.input_blocks.0.0.weight": torch.randn(320, 4, 3, 3),
            "first_stage_model.decoder.conv_in.weight": torch.randn(8, 4, 3, 3)}


def hf_hidden(model, tokens, layer_from_end: int, final_norm: bool):
    out = model(input_ids=tokens, output_hidden_states=True)
    states = out.hidden_states[-layer_from_end]
    norm = model.text_model.final_layer_norm if hasattr(model, "text_model") else model.final_layer_norm
    return norm(states) if final_norm else states


def open_clip_penultimate(model, tokens, final_norm: bool):
    x = model.token_embedding(tokens) + model.positional_embedding
    for block in model.transformer.resblocks[:-1]:
        x = block(x, attn_mask=model.attn_mask)
    return model.ln_final(x) if final_norm else x


def close(a, b, what):
    scale = max(b.abs().max().item(), 1.0)
    assert (a - b).abs().max().item() <= TOL * scale, f"{what}: max diff {(a - b).abs().max().item():.3g}"


@pytest.fixture(scope="module")
def towers():
    return {"clip_l": hf_text(), "clip_l_proj": hf_text(projection=True, seed=2), "big": open_clip_text(),
            "big_hf": hf_text(quick_gelu=False, projection=True, width=128, seed=3)}


def tokens(pad: int) -> torch.Tensor:
    return Tokenizer(pad_token_id=pad)(PROMPTS)


@pytest.mark.parametrize("container", ["safetensors", "ckpt"])
def test_sd1_single_file(towers, tmp_path, container, monkeypatch):
    state = {**hf_keys(towers["clip_l"], "cond_stage_model.transformer."), **dummy_unet_and_vae()}
    path = tmp_path / f"sd1.{container}"
    if container == "safetensors":
        save_file(state, path)
    else:
        torch.save({"state_dict": state, "global_step": 1}, path)
    read = _record_reads(monkeypatch)
    enc = load_prompt_encoder(path)
    assert enc.preset == "sd1" and list(enc.encoders) == ["clip_l"]
    assert not any(k.startswith(("model.diffusion_model", "first_stage_model")) for k in read), "UNet/VAE were read"
    out = enc(PROMPTS)
    assert out.hidden_states.shape == (3, 77, 64) and out.pooled is None
    with torch.no_grad():
        close(out.hidden_states, towers["clip_l"](input_ids=tokens(49407)).last_hidden_state, "SD1 last_hidden_state")
        # CLIP skip 2 (A1111) = diffusers clip_skip 1 = hidden_states[-2] + final LayerNorm
        skipped = enc(PROMPTS, clip_skip=2).hidden_states
        close(skipped, hf_hidden(towers["clip_l"], tokens(49407), 2, final_norm=True), "SD1 clip skip 2")
        close(enc(PROMPTS, clip_skip=1, clip_skip_convention="diffusers").hidden_states, skipped, "conventions")


def test_sd1_without_the_text_model_level(towers, tmp_path):
    state = {**hf_keys(towers["clip_l"], "cond_stage_model.transformer.", text_model_level=False), **dummy_unet_and_vae()}
    state["cond_stage_model.transformer.embeddings.position_ids"] = torch.arange(77)[None]
    save_file(state, tmp_path / "sd1.safetensors")
    enc = load_prompt_encoder(tmp_path / "sd1.safetensors")
    with torch.no_grad():
        close(enc(PROMPTS).hidden_states, towers["clip_l"](input_ids=tokens(49407)).last_hidden_state, "no text_model.")


def test_sd2_single_file(towers, tmp_path):
    save_file({**open_clip_keys(towers["big"], "cond_stage_model.model."), **dummy_unet_and_vae()}, tmp_path / "sd2.safetensors")
    enc = load_prompt_encoder(tmp_path / "sd2.safetensors")
    assert enc.preset == "sd2" and list(enc.encoders) == ["clip_h"]
    out = enc(PROMPTS)
    assert out.hidden_states.shape == (3, 77, 128) and out.pooled is None
    with torch.no_grad():
        close(out.hidden_states, open_clip_penultimate(towers["big"], tokens(0), final_norm=True), "SD2 penultimate + LN")


@pytest.mark.parametrize("refiner", [False, True])
def test_sdxl_single_file(towers, tmp_path, refiner):
    if refiner:
        state = open_clip_keys(towers["big"], "conditioner.embedders.0.model.")
    else:
        state = {**hf_keys(towers["clip_l"], "conditioner.embedders.0.transformer."),
                 **open_clip_keys(towers["big"], "conditioner.embedders.1.model.")}
    save_file({**state, **dummy_unet_and_vae()}, tmp_path / "sdxl.safetensors")
    enc = load_prompt_encoder(tmp_path / "sdxl.safetensors")
    out = enc(PROMPTS)
    with torch.no_grad():
        big = open_clip_penultimate(towers["big"], tokens(0), final_norm=False)
        pooled = towers["big"].encode_text(tokens(0))
        if refiner:
            assert enc.preset == "sdxl-refiner" and out.hidden_states.shape == (3, 77, 128)
            close(out.hidden_states, big, "refiner hidden")
        else:
            assert enc.preset == "sdxl" and out.hidden_states.shape == (3, 77, 64 + 128)
            clip_l = hf_hidden(towers["clip_l"], tokens(49407), 2, final_norm=False)
            close(out.hidden_states, torch.cat([clip_l, big], dim=-1), "SDXL concatenated penultimate states")
        assert out.pooled.shape == (3, 40)
        close(out.pooled, pooled, "SDXL pooled: bigG final LN at the end token x text_projection")


def test_sd3_single_file_reports_t5_and_does_not_read_it(towers, tmp_path, monkeypatch):
    state = {**hf_keys(towers["clip_l_proj"], "text_encoders.clip_l.transformer."),
             **hf_keys(towers["big_hf"], "text_encoders.clip_g.transformer."),
             "text_encoders.t5xxl.transformer.shared.weight": torch.randn(64, 8), **dummy_unet_and_vae()}
    save_file(state, tmp_path / "sd3.safetensors")
    read = _record_reads(monkeypatch)
    enc = load_prompt_encoder(tmp_path / "sd3.safetensors")
    assert enc.preset == "sd3" and any("T5" in note for note in enc.notes)
    assert not any("t5xxl" in k for k in read)
    out = enc(PROMPTS)
    with torch.no_grad():
        l_out = towers["clip_l_proj"](input_ids=tokens(49407), output_hidden_states=True)
        g_out = towers["big_hf"](input_ids=tokens(0), output_hidden_states=True)
        close(out.hidden_states, torch.cat([l_out.hidden_states[-2], g_out.hidden_states[-2]], dim=-1), "SD3 hidden")
        close(out.pooled, torch.cat([l_out.text_embeds, g_out.text_embeds], dim=-1), "SD3 pooled")


def test_flux_clip_l_file_gives_the_pooler_output(towers, tmp_path):
    save_file(hf_keys(towers["clip_l"], ""), tmp_path / "clip_l.safetensors")
    enc = load_prompt_encoder(tmp_path / "clip_l.safetensors")
    assert enc.preset == "flux"
    out = enc(PROMPTS)
    assert out.hidden_states is None
    with torch.no_grad():
        close(out.pooled, towers["clip_l"](input_ids=tokens(49407)).pooler_output, "Flux pooler_output")
    # the same file read as SD 1.x's encoder
    assert load_prompt_encoder(tmp_path / "clip_l.safetensors", preset="sd1")(PROMPTS).hidden_states.shape == (3, 77, 64)


def test_not_a_stable_diffusion_file_is_a_clear_error(tmp_path):
    save_file(dummy_unet_and_vae(), tmp_path / "unet_only.safetensors")
    with pytest.raises(ValueError, match="no Stable Diffusion CLIP text encoder found"):
        load_prompt_encoder(tmp_path / "unet_only.safetensors")


def _write_tokenizer(folder, pad_token):
    from clipforge.text.hf_files import hf_tokenizer_files

    folder.mkdir(parents=True)
    for name, text in hf_tokenizer_files(pad_token=pad_token).items():
        (folder / name).write_text(text)


def test_sdxl_diffusers_folder_equals_diffusers_encode_prompt(towers, tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    root = tmp_path / "sdxl"
    towers["clip_l"].save_pretrained(root / "text_encoder")
    towers["big_hf"].save_pretrained(root / "text_encoder_2")
    _write_tokenizer(root / "tokenizer", "<|endoftext|>")
    _write_tokenizer(root / "tokenizer_2", "!")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLPipeline", "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"]}))
    enc = load_prompt_encoder(root)
    assert enc.preset == "sdxl" and enc.pad_token_ids == {"clip_l": 49407, "clip_g": 0}
    pipe = StableDiffusionXLPipeline(
        vae=None, text_encoder=towers["clip_l"], text_encoder_2=CLIPTextModelWithProjection.from_pretrained(root / "text_encoder_2"),
        tokenizer=CLIPTokenizer.from_pretrained(root / "tokenizer"), tokenizer_2=CLIPTokenizer.from_pretrained(root / "tokenizer_2"),
        unet=None, scheduler=None,
    )
    with torch.no_grad():
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(PROMPTS, device="cpu", do_classifier_free_guidance=True)
    cond, uncond = enc.encode_with_negative(PROMPTS)
    close(cond.hidden_states, embeds, "diffusers SDXL prompt_embeds")
    close(cond.pooled, pooled, "diffusers SDXL pooled_prompt_embeds")
    assert torch.equal(uncond.hidden_states, negative) and torch.equal(uncond.pooled, negative_pooled)  # zeros
    with torch.no_grad():
        skipped = pipe.encode_prompt(PROMPTS, device="cpu", do_classifier_free_guidance=False, clip_skip=1)[0]
    close(enc(PROMPTS, clip_skip=1, clip_skip_convention="diffusers").hidden_states, skipped, "diffusers clip_skip=1")


def _record_reads(monkeypatch) -> list:
    """Names of every tensor read from a safetensors file or a torch file."""
    import safetensors

    from clipforge.checkpoint_formats import safe_pickle

    read: list = []
    real_open = safetensors.safe_open

    class Recording:
        def __init__(self, *args, **kwargs):
            self.inner = real_open(*args, **kwargs)

        def __enter__(self):
            self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def get_tensor(self, name):
            read.append(name)
            return self.inner.get_tensor(name)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(safetensors, "safe_open", Recording)
    real_tensor = safe_pickle.TorchFile.tensor

    def tensor(self, ref):
        read.extend(k for k, v in (self.obj.get("state_dict", self.obj) if isinstance(self.obj, dict) else {}).items() if v is ref)
        return real_tensor(self, ref)

    monkeypatch.setattr(safe_pickle.TorchFile, "tensor", tensor)
    return read


def test_top_level_exports():
    assert clipforge.load_prompt_encoder is load_prompt_encoder
    assert callable(clipforge.encode_prompt) and callable(clipforge.clip_score)
