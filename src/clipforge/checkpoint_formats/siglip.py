"""SigLIP / SigLIP 2 files: key maps between transformers' SiglipModel / Siglip2Model, open_clip's
SigLIP (timm image tower, `text.` tower) and clipforge's canonical SigLIP layout, plus configs.

The canonical layout is `clipforge.models.SiglipModel.state_dict()`:
  visual.conv1.{weight,bias}, visual.positional_embedding [grid**2, width],
  visual.transformer.resblocks.N.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj},
  visual.ln_post, visual.attn_pool.{probe [1, 1, width], in_proj_*, out_proj, ln, mlp.c_fc, mlp.c_proj},
  text.token_embedding, text.positional_embedding, text.transformer.resblocks.N..., text.ln_final,
  text.text_projection.{weight,bias}, logit_scale [], logit_bias [].
Maps are exact: renames, q/k/v concatenation, reshapes and (SigLIP 2's Linear patch embedding over
(row, column, channel)-flattened patches <-> a convolution) one permutation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import torch

from ..configs import ModelRecord, SiglipConfig, SiglipTextConfig, SiglipVisionConfig, TokenizerConfig
from .errors import CheckpointError
from .infer_config import _LIMITS, Shape, _sane_float, _sane_int, _transformer_shapes
from .limits import MAX_TOKENIZER_MODEL_BYTES, optional_file, read_json

StateDict = dict[str, torch.Tensor]

# ---- shapes ----------------------------------------------------------------------------------------


def expected_shapes(cfg: SiglipConfig) -> dict[str, Shape]:
    v, t, d = cfg.vision, cfg.text, cfg.embed_dim
    out: dict[str, Shape] = {
        "visual.conv1.weight": (v.width, 3, v.patch_size, v.patch_size),
        "visual.conv1.bias": (v.width,),
        "visual.positional_embedding": (v.grid_size**2, v.width),
    }
    out.update(_transformer_shapes("visual.", v.width, v.layers, v.mlp_width))
    out.update({
        "visual.ln_post.weight": (v.width,), "visual.ln_post.bias": (v.width,),
        "visual.attn_pool.probe": (1, 1, v.width),
        "visual.attn_pool.in_proj_weight": (3 * v.width, v.width),
        "visual.attn_pool.in_proj_bias": (3 * v.width,),
        "visual.attn_pool.out_proj.weight": (v.width, v.width),
        "visual.attn_pool.out_proj.bias": (v.width,),
        "visual.attn_pool.ln.weight": (v.width,), "visual.attn_pool.ln.bias": (v.width,),
        "visual.attn_pool.mlp.c_fc.weight": (v.mlp_width, v.width),
        "visual.attn_pool.mlp.c_fc.bias": (v.mlp_width,),
        "visual.attn_pool.mlp.c_proj.weight": (v.width, v.mlp_width),
        "visual.attn_pool.mlp.c_proj.bias": (v.width,),
        "text.token_embedding.weight": (t.vocab_size, t.width),
        "text.positional_embedding": (t.context_length, t.width),
    })
    out.update(_transformer_shapes("text.", t.width, t.layers, t.mlp_width))
    out.update({
        "text.ln_final.weight": (t.width,), "text.ln_final.bias": (t.width,),
        "text.text_projection.weight": (d, t.width), "text.text_projection.bias": (d,),
        "logit_scale": (), "logit_bias": (),
    })
    return out


def describe(cfg: SiglipConfig) -> str:
    v, t = cfg.vision, cfg.text
    return (f"{cfg.variant} ViT(width {v.width}, {v.layers} layers, patch {v.patch_size}, {v.image_size}px) + "
            f"text(width {t.width}, {t.layers} layers, context {t.context_length})")


def check_config_limits(cfg: Any, source: str = "config") -> None:
    if not isinstance(cfg, SiglipConfig):
        raise CheckpointError(f"{source}: not a SigLIP config")
    L = _LIMITS
    for prefix, tower in (("vision", cfg.vision), ("text", cfg.text)):
        for name in ("width", "layers", "heads", "mlp_width"):
            _sane_int(getattr(tower, name), f"{prefix}.{name}", 1, L[name], source)
        if tower.width % tower.heads:
            raise CheckpointError(f"{source}: {prefix}.heads={tower.heads} does not divide {prefix}.width={tower.width}")
    _sane_int(cfg.vision.image_size, "vision.image_size", 1, L["image_size"], source)
    _sane_int(cfg.vision.patch_size, "vision.patch_size", 1, cfg.vision.image_size, source)
    _sane_int(cfg.text.context_length, "text.context_length", 1, L["context_length"], source)
    _sane_int(cfg.text.vocab_size, "text.vocab_size", 3, L["vocab_size"], source)
    _sane_int(cfg.embed_dim, "embed_dim", 1, L["embed_dim"], source)
    _sane_float(cfg.layer_norm_eps, "layer_norm_eps", 1e-12, 1.0, source)


def check_config(state_dict: StateDict, cfg: SiglipConfig) -> None:
    """Raise CheckpointError unless the canonical `state_dict` has exactly `cfg`'s keys and shapes."""
    check_config_limits(cfg)
    expected = expected_shapes(cfg)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    problems = []
    for key, shape in expected.items():
        if key in state_dict and tuple(state_dict[key].shape) != shape:
            problems.append(f"first shape mismatch: '{key}' has shape {tuple(state_dict[key].shape)} in the checkpoint "
                            f"but {shape} in {describe(cfg)}")
            break
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:20]}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected[:20]}")
    if problems:
        raise CheckpointError("state dict does not match the config: " + "; ".join(problems))


# ---- key maps --------------------------------------------------------------------------------------

_BLOCK = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
          "self_attn.out_proj": "attn.out_proj"}
# transformers' name -> canonical name of every tensor outside the blocks, but the patch embedding's
# weight (SigLIP 2 holds it as a Linear) and the logit scale and bias (their shapes differ).
_HF_OUTSIDE_BLOCKS = {
    "vision_model.embeddings.patch_embedding.bias": "visual.conv1.bias",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.head.probe": "visual.attn_pool.probe",
    "text_model.embeddings.token_embedding.weight": "text.token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "text.positional_embedding",
    **{f"{hf}.{kind}": f"{ours}.{kind}" for kind in ("weight", "bias") for hf, ours in (
        ("vision_model.post_layernorm", "visual.ln_post"),
        ("vision_model.head.layernorm", "visual.attn_pool.ln"),
        ("vision_model.head.mlp.fc1", "visual.attn_pool.mlp.c_fc"),
        ("vision_model.head.mlp.fc2", "visual.attn_pool.mlp.c_proj"),
        ("vision_model.head.attention.out_proj", "visual.attn_pool.out_proj"),
        ("text_model.final_layer_norm", "text.ln_final"),
        ("text_model.head", "text.text_projection"),
    )},
    **{f"vision_model.head.attention.in_proj_{kind}": f"visual.attn_pool.in_proj_{kind}" for kind in ("weight", "bias")},
}
_TIMM_BLOCK = {"norm1": "ln_1", "norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
               "attn.proj": "attn.out_proj", "attn.qkv": "attn.in_proj"}


def _take(sd: StateDict, key: str) -> torch.Tensor:
    try:
        return sd.pop(key)
    except KeyError:
        raise CheckpointError(f"missing key {key!r}") from None


def _unknown(sd: StateDict, what: str) -> None:
    if sd:
        raise CheckpointError(f"unknown keys for {what}: {sorted(sd)[:10]}")


def _patch_linear_to_conv(weight: torch.Tensor) -> torch.Tensor:
    """SigLIP 2's patch embedding, a Linear over patches flattened as (row, column, channel), as the
    equivalent convolution weight [width, 3, patch, patch]."""
    width, n = weight.shape
    patch = math.isqrt(n // 3)
    if 3 * patch * patch != n:
        raise CheckpointError(f"patch embedding of shape {tuple(weight.shape)} is not 3 x patch x patch inputs")
    return weight.reshape(width, patch, patch, 3).permute(0, 3, 1, 2).contiguous()


def hf_to_canonical(state_dict: StateDict) -> StateDict:
    """transformers' SiglipModel (or Siglip2Model) keys -> canonical."""
    sd = {k: v for k, v in state_dict.items() if not k.endswith("position_ids")}  # old files keep the buffer
    out: StateDict = {}
    for hf_tower, ours in (("vision_model.", "visual."), ("text_model.", "text.")):
        layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith(hf_tower + "encoder.layers.")})
        for i in layers:
            src, dst = f"{hf_tower}encoder.layers.{i}.", f"{ours}transformer.resblocks.{i}."
            for kind in ("weight", "bias"):
                out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                    [_take(sd, src + f"self_attn.{p}_proj.{kind}") for p in "qkv"])
                for a, b in _BLOCK.items():
                    out[dst + f"{b}.{kind}"] = _take(sd, src + f"{a}.{kind}")
    patch = _take(sd, "vision_model.embeddings.patch_embedding.weight")
    out["visual.conv1.weight"] = _patch_linear_to_conv(patch) if patch.dim() == 2 else patch
    for hf_key, ours in _HF_OUTSIDE_BLOCKS.items():
        out[ours] = _take(sd, hf_key)
    out["logit_scale"] = _take(sd, "logit_scale").reshape(())
    out["logit_bias"] = _take(sd, "logit_bias").reshape(())
    _unknown(sd, "a transformers SiglipModel")
    return out


def canonical_to_hf(state_dict: StateDict) -> StateDict:
    """canonical -> transformers' SiglipModel keys (SigLIP 2 models are written as SiglipModel: the
    fixed-resolution layout transformers' SigLIP 2 releases use too)."""
    sd = dict(state_dict)
    out: StateDict = {}
    for ours, hf_tower in (("visual.", "vision_model."), ("text.", "text_model.")):
        layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith(ours + "transformer.resblocks.")})
        for i in layers:
            src, dst = f"{ours}transformer.resblocks.{i}.", f"{hf_tower}encoder.layers.{i}."
            for kind in ("weight", "bias"):
                q, k, v = _take(sd, src + f"attn.in_proj_{kind}").chunk(3)
                out.update({dst + f"self_attn.q_proj.{kind}": q, dst + f"self_attn.k_proj.{kind}": k,
                            dst + f"self_attn.v_proj.{kind}": v})
                for a, b in _BLOCK.items():
                    out[dst + f"{a}.{kind}"] = _take(sd, src + f"{b}.{kind}")
    out["vision_model.embeddings.patch_embedding.weight"] = _take(sd, "visual.conv1.weight")
    for hf_key, ours in _HF_OUTSIDE_BLOCKS.items():
        out[hf_key] = _take(sd, ours)
    out["logit_scale"] = _take(sd, "logit_scale").reshape(1)
    out["logit_bias"] = _take(sd, "logit_bias").reshape(1)
    _unknown(sd, "clipforge's canonical SigLIP layout")
    return out


def open_clip_to_canonical(state_dict: StateDict) -> StateDict:
    """open_clip's SigLIP (`visual.trunk.` a timm ViT with a MAP head, `text.` open_clip's text
    tower without causal mask) -> canonical."""
    sd = dict(state_dict)
    out: StateDict = {}
    trunk = "visual.trunk."
    layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith(trunk + "blocks.")})
    for i in layers:
        src, dst = f"{trunk}blocks.{i}.", f"visual.transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            for a, b in _TIMM_BLOCK.items():
                name = f"{b}_{kind}" if b == "attn.in_proj" else f"{b}.{kind}"
                out[dst + name] = _take(sd, src + f"{a}.{kind}")
    out["visual.conv1.weight"] = _take(sd, trunk + "patch_embed.proj.weight")
    out["visual.conv1.bias"] = _take(sd, trunk + "patch_embed.proj.bias")
    out["visual.positional_embedding"] = _take(sd, trunk + "pos_embed").squeeze(0)
    pool = trunk + "attn_pool."
    out["visual.attn_pool.probe"] = _take(sd, pool + "latent")
    for kind in ("weight", "bias"):
        out[f"visual.ln_post.{kind}"] = _take(sd, f"{trunk}norm.{kind}")
        out[f"visual.attn_pool.in_proj_{kind}"] = torch.cat([_take(sd, f"{pool}q.{kind}"), _take(sd, f"{pool}kv.{kind}")])
        out[f"visual.attn_pool.out_proj.{kind}"] = _take(sd, f"{pool}proj.{kind}")
        out[f"visual.attn_pool.ln.{kind}"] = _take(sd, f"{pool}norm.{kind}")
        out[f"visual.attn_pool.mlp.c_fc.{kind}"] = _take(sd, f"{pool}mlp.fc1.{kind}")
        out[f"visual.attn_pool.mlp.c_proj.{kind}"] = _take(sd, f"{pool}mlp.fc2.{kind}")
    for key in [k for k in sd if k.startswith("text.")]:
        out[key] = sd.pop(key)  # open_clip's text tower has clipforge's names already
    out["logit_scale"] = _take(sd, "logit_scale").reshape(())
    out["logit_bias"] = _take(sd, "logit_bias").reshape(())
    _unknown(sd, "an open_clip SigLIP model")
    return out


def detect_format(keys: list[str]) -> Optional[str]:
    from .open_clip import strip_wrapper_prefix

    bare = {strip_wrapper_prefix(k) for k in keys}
    if "vision_model.head.probe" in bare or "text_model.head.weight" in bare:
        return "hf"
    if "visual.trunk.attn_pool.latent" in bare:
        return "open_clip"
    if "visual.attn_pool.probe" in bare:
        return "clipforge"
    return None


# ---- configs ---------------------------------------------------------------------------------------

_HF_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu": "gelu", "quick_gelu": "quick_gelu"}
_ACTIVATIONS_HF = {"gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu", "quick_gelu": "quick_gelu"}


def hf_config_to_config(config_json: dict[str, Any]) -> SiglipConfig:
    """A transformers SiglipConfig / Siglip2Config dict -> SiglipConfig (SigLIP 2: its square
    fixed-resolution use, image_size = sqrt(num_patches) * patch_size)."""
    v, t = config_json.get("vision_config") or {}, config_json.get("text_config") or {}
    variant = "siglip2" if config_json.get("model_type") == "siglip2" else "siglip"
    patch = int(v.get("patch_size", 16))
    if "num_patches" in v:
        grid = math.isqrt(int(v["num_patches"]))
        if grid * grid != int(v["num_patches"]):
            raise CheckpointError(f"vision num_patches {v['num_patches']} is not a square grid")
        image_size = grid * patch
    else:
        image_size = int(v.get("image_size", 224))
    acts = {v.get("hidden_act", "gelu_pytorch_tanh"), t.get("hidden_act", "gelu_pytorch_tanh")}
    if len(acts) != 1 or next(iter(acts)) not in _HF_ACTIVATIONS:
        raise CheckpointError(f"unsupported hidden_act {sorted(acts)} (clipforge reads one of {sorted(_HF_ACTIVATIONS)})")
    eps = {float(v.get("layer_norm_eps", 1e-6)), float(t.get("layer_norm_eps", 1e-6))}
    if len(eps) != 1:
        raise CheckpointError(f"the towers' layer_norm_eps differ ({sorted(eps)}): not supported")
    if v.get("vision_use_head", True) is False:
        raise CheckpointError("a SigLIP vision tower without its attention-pool head (vision_use_head=false) is not supported")
    width = int(v.get("hidden_size", 768))
    text_width = int(t.get("hidden_size", 768))
    projection = int(t.get("projection_size") or text_width)
    return SiglipConfig(
        embed_dim=projection,
        vision=SiglipVisionConfig(image_size=image_size, patch_size=patch, width=width,
                                  layers=int(v.get("num_hidden_layers", 12)), heads=int(v.get("num_attention_heads", 12)),
                                  mlp_width=int(v.get("intermediate_size", 3072))),
        text=SiglipTextConfig(context_length=int(t.get("max_position_embeddings", 64)),
                              vocab_size=int(t.get("vocab_size", 32000)), width=text_width,
                              heads=int(t.get("num_attention_heads", 12)), layers=int(t.get("num_hidden_layers", 12)),
                              mlp_width=int(t.get("intermediate_size", 3072))),
        activation=_HF_ACTIVATIONS[next(iter(acts))],  # type: ignore[arg-type]
        layer_norm_eps=eps.pop(),
        variant=variant,  # type: ignore[arg-type]
    )


def config_to_hf_config(cfg: SiglipConfig, dtype: str = "float32") -> dict[str, Any]:
    """SiglipConfig -> transformers' SiglipConfig dict (model_type "siglip", as SigLIP 2's fixed-resolution
    releases are too)."""
    act = _ACTIVATIONS_HF[cfg.activation]
    v, t = cfg.vision, cfg.text
    return {
        "architectures": ["SiglipModel"], "model_type": "siglip", "dtype": dtype, "initializer_factor": 1.0,
        "text_config": {"model_type": "siglip_text_model", "vocab_size": t.vocab_size, "hidden_size": t.width,
                        "intermediate_size": t.mlp_width, "num_hidden_layers": t.layers,
                        "num_attention_heads": t.heads, "max_position_embeddings": t.context_length,
                        "hidden_act": act, "layer_norm_eps": cfg.layer_norm_eps, "projection_size": cfg.embed_dim},
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": v.width, "intermediate_size": v.mlp_width,
                          "num_hidden_layers": v.layers, "num_attention_heads": v.heads, "image_size": v.image_size,
                          "patch_size": v.patch_size, "hidden_act": act, "layer_norm_eps": cfg.layer_norm_eps},
    }


def is_open_clip_config(model_cfg: dict[str, Any]) -> bool:
    vision = model_cfg.get("vision_cfg") or {}
    return vision.get("timm_pool") == "map" and "siglip" in str(vision.get("timm_model_name", ""))


def open_clip_config_to_config(model_cfg: dict[str, Any]) -> SiglipConfig:
    """open_clip's SigLIP model config (timm vision tower by name, open_clip text tower). The vision
    tower's depth, width and heads are not in the config but in timm's model name, so they are read
    from the name: vit_{base,large,so400m}_patch{P}_siglip[_gap]_{S}."""
    import re

    vision, text = model_cfg.get("vision_cfg") or {}, model_cfg.get("text_cfg") or {}
    name = str(vision.get("timm_model_name", ""))
    m = re.fullmatch(r"vit_(base|large|so400m|giant_opt)_patch(\d+)_siglip(?:_\d+)?_(\d+)", name)
    sizes = {"base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096), "so400m": (1152, 27, 16, 4304),
             "giant_opt": (1536, 40, 16, 6144)}
    if m is None:
        raise CheckpointError(f"open_clip SigLIP vision tower {name[:60]!r} is not one clipforge knows")
    width, layers, heads, mlp = sizes[m.group(1)]
    image_size = int(vision.get("image_size", m.group(3)))
    if text.get("no_causal_mask") is not True or text.get("pool_type", "last") != "last":
        raise CheckpointError("an open_clip SigLIP text tower must be bidirectional and pooled at the last token")
    text_width = int(text.get("width", 768))
    act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"  # timm's and open_clip's nn.GELU: exact
    eps = float((text.get("norm_kwargs") or {}).get("eps", 1e-6))
    return SiglipConfig(
        embed_dim=int(model_cfg.get("embed_dim", width)),
        vision=SiglipVisionConfig(image_size=image_size, patch_size=int(m.group(2)), width=width, layers=layers,
                                  heads=heads, mlp_width=mlp),
        text=SiglipTextConfig(context_length=int(text.get("context_length", 64)), vocab_size=int(text.get("vocab_size", 32000)),
                              width=text_width, heads=int(text.get("heads", 12)), layers=int(text.get("layers", 12)),
                              mlp_width=int(text_width * float(text.get("mlp_ratio", 4.0)))),
        activation=act,  # type: ignore[arg-type]
        layer_norm_eps=eps,
    )


# ---- tokenizer and processor files of a transformers directory -------------------------------------


def read_hf_tokenizer(directory: Path) -> Optional[TokenizerConfig]:
    """The SentencePiece tokenizer of a transformers SigLIP directory: spiece.model (SiglipTokenizer:
    big_vision's clean-up, eos "</s>", pad "</s>" unless tokenizer_config.json says otherwise) or
    tokenizer.model (Gemma's, SigLIP 2: lower case, pad "<pad>", bos / eos only where tokenizer_config.json's
    add_bos_token / add_eos_token say so, as transformers' Siglip2Tokenizer). None when neither file is there."""
    import sentencepiece

    for name, gemma in (("spiece.model", False), ("tokenizer.model", True)):
        path = directory / name
        if not optional_file(path):
            continue
        if path.stat().st_size > MAX_TOKENIZER_MODEL_BYTES:
            raise CheckpointError(f"{path}: a tokenizer model of over {MAX_TOKENIZER_MODEL_BYTES:,} bytes; refused")
        model = path.read_bytes()
        sp = sentencepiece.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(model)
        except Exception as exc:  # noqa: BLE001 - sentencepiece raises plain RuntimeError
            raise CheckpointError(f"{path}: not a SentencePiece model ({type(exc).__name__})") from None
        settings: dict[str, Any] = {}
        if optional_file(directory / "tokenizer_config.json"):
            raw = read_json(directory / "tokenizer_config.json", "tokenizer_config.json")
            settings = raw if isinstance(raw, dict) else {}

        def token_id(key: str, default: str) -> int:
            token = settings.get(key, default)
            token = token.get("content") if isinstance(token, dict) else token
            i = sp.piece_to_id(str(token))
            if i == sp.unk_id() and str(token) != sp.id_to_piece(sp.unk_id()):
                raise CheckpointError(f"{path}: {key} {str(token)[:30]!r} is not in the vocabulary")
            return i

        context = 64  # loading sets the model's own context length (what the text tower was trained on)
        if gemma:
            return TokenizerConfig(kind="sentencepiece", context_length=context, pad_token_id=token_id("pad_token", "<pad>"),
                                   eos_token_id=token_id("eos_token", "<eos>") if settings.get("add_eos_token", False) else None,
                                   bos_token_id=token_id("bos_token", "<bos>") if settings.get("add_bos_token", False) else None,
                                   clean="lower", model=model)
        return TokenizerConfig(kind="sentencepiece", context_length=context, pad_token_id=token_id("pad_token", "</s>"),
                               eos_token_id=token_id("eos_token", "</s>"),
                               clean="canonicalize" if settings.get("do_lower_case", True) else "none", model=model)
    return None


def write_hf_files(directory: Path, record: ModelRecord) -> None:
    """preprocessor_config.json and, when the record holds the SentencePiece model, spiece.model +
    tokenizer_config.json (SiglipTokenizer), so SiglipProcessor.from_pretrained opens the directory."""
    import json

    from ..atomic_files import atomic_write, atomic_write_text
    from .hf import hf_image_processor_config

    pre = hf_image_processor_config(record.preprocess, "SiglipImageProcessor", "SiglipProcessor")
    atomic_write_text(directory / "preprocessor_config.json", json.dumps(pre, indent=2) + "\n")
    tok = record.tokenizer
    if tok.model is None:
        return
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor()
    sp.LoadFromSerializedProto(tok.model)
    if tok.clean == "lower":
        # Gemma's tokenizer (SigLIP 2): tokenizer.model, as the fixed-resolution SigLIP 2 releases hold it,
        # with the bos / eos choices read_hf_tokenizer reads back (spiece.model would be read as T5's).
        atomic_write(directory / "tokenizer.model", lambda f: f.write(tok.model))
        gemma: dict[str, Any] = {"tokenizer_class": "GemmaTokenizer", "processor_class": "SiglipProcessor",
                                 "model_max_length": tok.context_length, "pad_token": sp.id_to_piece(tok.pad_token_id),
                                 "unk_token": sp.id_to_piece(sp.unk_id()), "add_bos_token": tok.bos_token_id is not None,
                                 "add_eos_token": tok.eos_token_id is not None}
        if tok.bos_token_id is not None:
            gemma["bos_token"] = sp.id_to_piece(tok.bos_token_id)
        if tok.eos_token_id is not None:
            gemma["eos_token"] = sp.id_to_piece(tok.eos_token_id)
        atomic_write_text(directory / "tokenizer_config.json", json.dumps(gemma, indent=2) + "\n")
        return
    atomic_write(directory / "spiece.model", lambda f: f.write(tok.model))
    config = {"tokenizer_class": "SiglipTokenizer", "processor_class": "SiglipProcessor",
              "model_max_length": tok.context_length, "do_lower_case": tok.clean != "none",
              "pad_token": sp.id_to_piece(tok.pad_token_id), "unk_token": sp.id_to_piece(sp.unk_id())}
    if tok.eos_token_id is not None:
        config["eos_token"] = sp.id_to_piece(tok.eos_token_id)
    atomic_write_text(directory / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
