"""The CLIP text encoders inside Stable Diffusion checkpoints: which are there, and their tensors in
the canonical (OpenAI) text layout — read from the file's headers first, and only those tensors.

Single files (.safetensors, or .ckpt through the safe unpickler), by key prefix:

| pipeline     | encoder | prefix                                             | layout                      |
|--------------|---------|----------------------------------------------------|-----------------------------|
| SD 1.x       | clip_l  | `cond_stage_model.transformer.` (`text_model.` optional) | transformers CLIPTextModel |
| SD 2.x       | clip_h  | `cond_stage_model.model.`                          | open_clip (fused in_proj)   |
| SDXL base    | clip_l  | `conditioner.embedders.0.transformer.`             | transformers                |
|              | clip_g  | `conditioner.embedders.1.model.`                   | open_clip, with text_projection |
| SDXL refiner | clip_g  | `conditioner.embedders.0.model.`                   | open_clip                   |
| SD 3 / 3.5   | clip_l  | `text_encoders.clip_l.transformer.`                | transformers, with projection |
|              | clip_g  | `text_encoders.clip_g.transformer.`                | transformers, with projection |
| Flux (its CLIP-L file) | clip_l | (none: `text_model.` at the top)          | transformers CLIPTextModel  |

SD 3's `text_encoders.t5xxl.*` is a T5 encoder, not CLIP: it is reported, never read. Diffusers
folders (`model_index.json`, `text_encoder/`, `text_encoder_2/`, `tokenizer*/`) are read per
sub-folder as transformers directories. transformers >= 5.6 saves CLIPTextModel without the
`text_model.` level: both spellings are read. UNet and VAE tensors never become tensors in memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Optional

import torch

from ..configs import Activation, TextConfig
from .errors import CheckpointError
from .hf import hf_to_canonical
from .infer_config import mlp_ratio_for
from .limits import optional_file, read_json

__all__ = ["TextEncoderSlot", "SdLayout", "detect_layout", "read_text_encoders", "text_config_of", "EncoderTensors"]

Pipeline = Literal["sd1", "sd2", "sdxl", "sdxl-refiner", "sd3", "flux"]
END_OF_TEXT_ID = 49407


@dataclass(frozen=True)
class TextEncoderSlot:
    """One CLIP text encoder of a pipeline: where its tensors are and how the pipeline reads it."""

    name: str  # "clip_l" (OpenAI ViT-L/14's text), "clip_h" (OpenCLIP ViT-H/14's), "clip_g" (OpenCLIP bigG/14's)
    prefix: str  # key prefix in the single file, or the diffusers sub-folder ("text_encoder_2/")
    layout: Literal["hf", "open_clip"]
    activation: Activation  # OpenAI's CLIP-L: QuickGELU; OpenCLIP's H and bigG: GELU
    pad_token_id: int  # what the pipeline's tokenizer pads with


@dataclass
class SdLayout:
    pipeline: Pipeline
    slots: list[TextEncoderSlot]
    notes: list[str] = field(default_factory=list)  # e.g. "T5-XXL present, not CLIP: not loaded"
    diffusers: bool = False


_CLIP_L = dict(name="clip_l", activation="quick_gelu", pad_token_id=END_OF_TEXT_ID)


def _layout_from_keys(keys: Iterable[str]) -> Optional[SdLayout]:
    keys = list(keys)
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    notes = []
    if has("text_encoders.t5xxl."):
        notes.append("a T5-XXL text encoder is there too (text_encoders.t5xxl.*): it is not CLIP and is not loaded")
    if has("conditioner.embedders.1.model."):
        return SdLayout("sdxl", [
            TextEncoderSlot(prefix="conditioner.embedders.0.transformer.", layout="hf", **_CLIP_L),
            TextEncoderSlot("clip_g", "conditioner.embedders.1.model.", "open_clip", "gelu", 0),
        ], notes)
    if has("conditioner.embedders.0.model."):
        return SdLayout("sdxl-refiner", [TextEncoderSlot("clip_g", "conditioner.embedders.0.model.", "open_clip", "gelu", 0)], notes)
    if has("text_encoders.clip_l.") or has("text_encoders.clip_g."):
        slots = []
        if has("text_encoders.clip_l."):
            slots.append(TextEncoderSlot(prefix="text_encoders.clip_l.transformer.", layout="hf", **_CLIP_L))
        if has("text_encoders.clip_g."):
            slots.append(TextEncoderSlot("clip_g", "text_encoders.clip_g.transformer.", "hf", "gelu", 0))
        return SdLayout("sd3", slots, notes)
    if has("cond_stage_model.model."):
        return SdLayout("sd2", [TextEncoderSlot("clip_h", "cond_stage_model.model.", "open_clip", "gelu", 0)], notes)
    if has("cond_stage_model.transformer."):
        return SdLayout("sd1", [TextEncoderSlot(prefix="cond_stage_model.transformer.", layout="hf", **_CLIP_L)], notes)
    if has("text_model.") and not has("vision_model.") and not has("model.diffusion_model."):
        return SdLayout("flux", [TextEncoderSlot(prefix="", layout="hf", **_CLIP_L)], notes)
    return None


_DIFFUSERS_PIPELINES = {
    "StableDiffusionPipeline": None,  # sd1 or sd2, told apart by the text encoder's width
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",  # with only text_encoder_2: the refiner
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}


def _diffusers_layout(folder: Path) -> SdLayout:
    index = read_json(folder / "model_index.json", "model_index.json")
    if not isinstance(index, dict):
        raise CheckpointError(f"{folder / 'model_index.json'}: not a JSON object")
    cls = index.get("_class_name")
    if cls not in _DIFFUSERS_PIPELINES:
        raise CheckpointError(f"{folder}: pipeline {cls!r} is not one clipforge reads text encoders of "
                              f"(known: {', '.join(_DIFFUSERS_PIPELINES)})")
    present = [name for name in ("text_encoder", "text_encoder_2") if isinstance(index.get(name), list)
               and index[name][0] is not None and (folder / name).is_dir()]
    notes = []
    if isinstance(index.get("text_encoder_3"), list) and index["text_encoder_3"][0] is not None:
        notes.append("a T5 text encoder is there too (text_encoder_3/): it is not CLIP and is not loaded")
    configs = {}
    for sub in present:
        config = read_json(folder / sub / "config.json", f"{sub}/config.json")
        if not isinstance(config, dict):
            raise CheckpointError(f"{folder / sub / 'config.json'}: not a JSON object")
        configs[sub] = config
    if not configs:
        raise CheckpointError(f"{folder}: no text_encoder/ or text_encoder_2/ with weights")
    pipeline = _DIFFUSERS_PIPELINES[cls]
    if pipeline is None:  # SD 1.x ships OpenAI's CLIP-L (QuickGELU), SD 2.x OpenCLIP-H (GELU)
        pipeline = "sd1" if configs.get("text_encoder", {}).get("hidden_act") == "quick_gelu" else "sd2"
    if pipeline == "sdxl" and list(configs) == ["text_encoder_2"]:
        pipeline = "sdxl-refiner"
    # The encoders by their role in the pipeline, not their size.
    roles = {"sd1": {"text_encoder": "clip_l"}, "sd2": {"text_encoder": "clip_h"},
             "sdxl": {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}, "sdxl-refiner": {"text_encoder_2": "clip_g"},
             "sd3": {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}, "flux": {"text_encoder": "clip_l"}}[pipeline]
    slots = []
    for sub, config in configs.items():
        if sub not in roles:
            continue
        act = "quick_gelu" if config.get("hidden_act") == "quick_gelu" else "gelu"
        pad = _diffusers_pad(folder / ("tokenizer" if sub == "text_encoder" else "tokenizer_2"))
        default_pad = END_OF_TEXT_ID if roles[sub] == "clip_l" else 0
        slots.append(TextEncoderSlot(roles[sub], f"{sub}/", "hf", act, pad if pad is not None else default_pad))
    return SdLayout(pipeline, slots, notes, diffusers=True)


def _diffusers_pad(tokenizer_dir: Path) -> Optional[int]:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if optional_file(tokenizer_dir / name):
            raw = read_json(tokenizer_dir / name, name)
            pad = raw.get("pad_token") if isinstance(raw, dict) else None
            pad = pad.get("content") if isinstance(pad, dict) else pad
            if pad is not None:
                return END_OF_TEXT_ID if pad == "<|endoftext|>" else 0
    return None


def detect_layout(path: Path, keys: Optional[Iterable[str]] = None) -> Optional[SdLayout]:
    """The Stable Diffusion layout of a file (from its tensor names) or a diffusers folder; None if
    it is neither."""
    if path.is_dir():
        return _diffusers_layout(path) if optional_file(path / "model_index.json") else None
    return _layout_from_keys(keys if keys is not None else _file_keys(path))


def _file_keys(path: Path) -> list[str]:
    from .reading import _safetensors_header, _safetensors_kind
    from .safe_pickle import open_torch_file

    if _safetensors_kind(path) == "safetensors":
        return [k for k in _safetensors_header(path) if k != "__metadata__"]
    obj = open_torch_file(path).obj
    obj = obj["state_dict"] if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a dict of tensors")
    return [k for k in obj if isinstance(k, str)]


EncoderTensors = dict[str, torch.Tensor]


def read_text_encoders(path: Path, layout: Optional[SdLayout] = None) -> tuple[SdLayout, dict[str, EncoderTensors], dict[str, dict]]:
    """(layout, {slot name: canonical text state dict}, {slot name: transformers config.json or {}}).

    Only the text encoders' tensors are read; a file with no CLIP text encoder is an error."""
    path = Path(path)
    layout = layout or detect_layout(path)
    if layout is None:
        raise CheckpointError(f"{path}: no Stable Diffusion CLIP text encoder found (neither a single-file "
                              "SD 1.x/2.x/XL/3 checkpoint, a CLIP-L text file nor a diffusers folder)")
    tensors: dict[str, EncoderTensors] = {}
    configs: dict[str, dict] = {}
    if layout.diffusers:
        from .reading import read_checkpoint

        for slot in layout.slots:
            checkpoint = read_checkpoint(path / slot.prefix)
            tensors[slot.name] = _to_canonical(slot, checkpoint.state_dict, str(path / slot.prefix))
            configs[slot.name] = checkpoint.hf_config or {}
        return layout, tensors, configs
    raw = _read_prefixed(path, [slot.prefix for slot in layout.slots])
    for slot in layout.slots:
        wanted = {k[len(slot.prefix):]: v for k, v in raw.items() if k.startswith(slot.prefix)}
        if slot.prefix == "":  # a bare CLIP text file: everything is the encoder's
            wanted = dict(raw)
        tensors[slot.name] = _to_canonical(slot, wanted, f"{path} ({slot.prefix or 'text_model.'}*)")
        configs[slot.name] = {}
    return layout, tensors, configs


def _read_prefixed(path: Path, prefixes: list[str]) -> dict[str, torch.Tensor]:
    """The tensors whose names start with one of `prefixes`; nothing else is read into memory."""
    from .reading import _safetensors_header, _safetensors_kind
    from .safe_pickle import open_torch_file

    wanted = lambda k: any(k.startswith(p) for p in prefixes)  # noqa: E731
    if _safetensors_kind(path) == "safetensors":
        from safetensors import safe_open

        names = [k for k in _safetensors_header(path) if k != "__metadata__" and wanted(k)]
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in names}
        except Exception as exc:  # noqa: BLE001 - SafetensorError and friends, named
            raise CheckpointError(f"{path}: unreadable safetensors file ({type(exc).__name__}: {exc})") from exc
    tf = open_torch_file(path)
    obj = tf.obj["state_dict"] if isinstance(tf.obj, dict) and isinstance(tf.obj.get("state_dict"), dict) else tf.obj
    from .safe_pickle import TensorRef

    return {k: tf.tensor(v) for k, v in obj.items() if isinstance(k, str) and wanted(k) and isinstance(v, TensorRef)}


_HF_TOP = ("embeddings.", "encoder.", "final_layer_norm.")
_OPEN_CLIP_KEEP = re.compile(r"^(token_embedding\.weight|positional_embedding|ln_final\.(weight|bias)|text_projection|"
                             r"transformer\.resblocks\.\d+\..+)$")


def _to_canonical(slot: TextEncoderSlot, state: dict[str, torch.Tensor], where: str) -> EncoderTensors:
    if slot.layout == "open_clip":
        dropped = {"logit_scale", "attn_mask"}
        unknown = [k for k in state if k not in dropped and not _OPEN_CLIP_KEEP.match(k)]
        if unknown:
            raise CheckpointError(f"{where}: unknown keys for an open_clip text encoder: {unknown[:10]}")
        out = {k: v for k, v in state.items() if k not in dropped}
    else:
        hf = {}
        for key, value in state.items():
            if key.endswith("position_ids"):
                continue
            hf[("text_model." + key) if key.startswith(_HF_TOP) else key] = value
        if any(not (k.startswith("text_model.") or k == "text_projection.weight") for k in hf):
            bad = [k for k in hf if not (k.startswith("text_model.") or k == "text_projection.weight")]
            raise CheckpointError(f"{where}: unknown keys for a CLIP text encoder: {bad[:10]}")
        out = hf_to_canonical(hf)
    if "token_embedding.weight" not in out or "positional_embedding" not in out:
        raise CheckpointError(f"{where}: no token or position embedding: not a CLIP text encoder")
    return out


def text_config_of(state: EncoderTensors, where: str, hf_config: Optional[dict] = None) -> tuple[TextConfig, Optional[int]]:
    """(TextConfig, projection width or None) of a canonical text state dict, from its shapes
    (heads = width / 64, as every CLIP text tower; a transformers config.json says it outright)."""
    vocab, width = state["token_embedding.weight"].shape
    context = state["positional_embedding"].shape[0]
    layers = len({int(m.group(1)) for k in state if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))})
    if layers == 0:
        raise CheckpointError(f"{where}: a text encoder without transformer blocks")
    heads = int((hf_config or {}).get("num_attention_heads") or max(1, width // 64))
    mlp = state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    text = TextConfig(context_length=context, vocab_size=vocab, width=width, heads=heads, layers=layers,
                      mlp_ratio=mlp_ratio_for(width, mlp))
    projection = state.get("text_projection")
    return text, (int(projection.shape[1]) if projection is not None else None)
