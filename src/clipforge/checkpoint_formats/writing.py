"""Write a canonical state dict in any supported format, with the model's record where the format has room.

Every writer first checks the tensors against the config (`check_config`), so a file is never
written for an architecture other than the one named. The `hf` writer also checks that its key
map inverts exactly before anything touches the disk.

Where the record (architecture, preprocessing, tokenizer, provenance) goes:
  clipforge  all of it, as JSON in the safetensors metadata; a tokenizer model file (sentencepiece
             kinds) as base64 under its own metadata key, tied to the record by its sha256
  hf         config.json (architecture), preprocessor_config.json (preprocessing), tokenizer files
             (context length, padding): what transformers reads
  open_clip  a directory: open_clip_model.safetensors + open_clip_config.json ({"model_cfg",
             "preprocess_cfg"}, open_clip's hub layout); a single weights file holds no record
  openai     a plain state dict: no room (OpenAI's numerics are assumed when it is read back)
Families other than CLIP are written in the formats their `FamilyLayout` has writers for.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Union

import torch

from ..atomic_files import atomic_write_text
from ..configs import ClipConfig, ModelRecord, PreprocessConfig, ResNetConfig
from ..text.hf_files import hf_tokenizer_files
from .errors import CheckpointError
from .families import check_config, layout_of
from .hf import hf_image_processor_config
from .layouts import FORMATS, from_canonical, to_canonical
from .open_clip import clip_config_to_open_clip_config
from .openai import check_openai_representable
from .reading import CLIPFORGE_CONFIG_KEY, CLIPFORGE_RECORD_KEY, CLIPFORGE_TOKENIZER_KEY, END_OF_TEXT

OPEN_CLIP_WEIGHTS_NAME = "open_clip_model.safetensors"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _own_storage(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU tensors that each own exactly their storage.

    safetensors refuses tensors sharing memory, and torch.save of a view writes the whole
    underlying storage (e.g. all of in_proj_weight for a q slice).
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, t in state_dict.items():
        t = t.detach().cpu()
        storage = t.untyped_storage()
        whole = t.is_contiguous() and t.storage_offset() == 0 and storage.nbytes() == t.numel() * t.element_size()
        if not whole or (storage.nbytes() and storage.data_ptr() in seen):
            t = t.clone(memory_format=torch.contiguous_format)
        if t.untyped_storage().nbytes():
            seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def _save_safetensors(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    save_file(_own_storage(state_dict), str(path), metadata=metadata)


def write_checkpoint(
    state_dict: dict[str, torch.Tensor], record: Union[ModelRecord, Any], path: str | Path, format: str
) -> Path:
    """Write canonical `state_dict` with its `record` to `path` in `format`; returns the path written.

    A config alone stands for `ModelRecord.default(config)` (for CLIP, OpenAI's preprocessing at its size).
    format:
      "openai"    plain state dict via torch.save (`clip.load(path, jit=False)` / `build_model`)
      "open_clip" a directory (no weights suffix): open_clip_model.safetensors + open_clip_config.json
                  (`open_clip.create_model("hf-hub:...")`'s layout); or one `.safetensors` / `.bin` /
                  `.pt` / `.pth` file (`open_clip.create_model(arch, pretrained=path)`), weights only
      "hf"        directory with config.json + model.safetensors, tokenizer files and
                  preprocessor_config.json (`CLIPModel` / `CLIPProcessor.from_pretrained(path)`)
      "clipforge" one safetensors file, canonical keys, the record as JSON in its metadata
    """
    if format not in FORMATS:
        raise CheckpointError(f"unknown format {format!r}; expected one of {FORMATS}")
    if not isinstance(record, ModelRecord):
        record = ModelRecord.default(record)
    cfg = record.architecture
    layout = layout_of(cfg)
    check_config(state_dict, cfg)
    path = Path(path)
    if format == "clipforge":
        metadata = {"format": "pt", CLIPFORGE_RECORD_KEY: json.dumps(record.to_dict())}
        if isinstance(cfg, ClipConfig):
            metadata[CLIPFORGE_CONFIG_KEY] = json.dumps(cfg.to_dict())  # the config alone, for older readers
        if record.tokenizer.model is not None:
            metadata[CLIPFORGE_TOKENIZER_KEY] = base64.b64encode(record.tokenizer.model).decode("ascii")
        _save_safetensors(state_dict, path, metadata)
        return path
    if format == "hf":
        if isinstance(cfg, ClipConfig) and isinstance(cfg.vision, ResNetConfig):
            raise CheckpointError(
                "transformers has no ModifiedResNet CLIP: a ResNet model cannot be written in the 'hf' format. "
                "Use 'clipforge', 'openai' or 'open_clip'."
            )
        if layout.config_to_hf_config is None or "hf" not in layout.writers:
            raise CheckpointError(f"clipforge cannot write a {layout.family} model in the 'hf' format")
        hf_sd = from_canonical(state_dict, "hf", family=layout.family)
        back = to_canonical(hf_sd, "hf", validate=False, family=layout.family)
        if back.keys() != state_dict.keys() or not all(torch.equal(back[k], state_dict[k]) for k in back):
            raise CheckpointError("internal error: the transformers key map does not invert exactly; nothing written")
        dtype = str(next(t.dtype for t in state_dict.values() if t.is_floating_point())).removeprefix("torch.")
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / "config.json", json.dumps(layout.config_to_hf_config(cfg, dtype), indent=2) + "\n")
        _save_safetensors(hf_sd, path / "model.safetensors", {"format": "pt"})
        (layout.write_hf_files or _write_hf_processor_files)(path, record)
        return path
    if layout.family != "clip" and format == "open_clip" and "open_clip" in layout.writers:
        # Families open_clip builds with its own key layout (EVA02-CLIP, MobileCLIP: CustomTextCLIP).
        _write_open_clip(from_canonical(state_dict, "open_clip", family=layout.family), record, path,
                         layout.config_to_open_clip_config)
        return path
    if layout.family != "clip":
        writable = sorted({"clipforge"} | set(layout.writers))
        raise CheckpointError(f"clipforge writes {layout.family} models in the {writable} formats, not {format!r}")
    if format == "openai":
        check_openai_representable(cfg)
        torch.save(_own_storage(state_dict), path)
    elif format == "open_clip":
        if path.suffix in WEIGHT_SUFFIXES:
            if path.suffix == ".safetensors":
                _save_safetensors(state_dict, path, {"format": "pt"})
            else:
                torch.save(_own_storage(state_dict), path)
        elif path.suffix:
            raise CheckpointError(f"{path}: open_clip weights need a .safetensors, .bin, .pt or .pth extension "
                                  "(or no extension: a directory in open_clip's hub layout)")
        else:
            config = {"model_cfg": clip_config_to_open_clip_config(cfg), "preprocess_cfg": _open_clip_preprocess(record.preprocess)}
            path.mkdir(parents=True, exist_ok=True)
            _save_safetensors(state_dict, path / OPEN_CLIP_WEIGHTS_NAME, {"format": "pt"})
            atomic_write_text(path / "open_clip_config.json", json.dumps(config, indent=2) + "\n")
    return path


def _write_open_clip(state_dict: dict[str, torch.Tensor], record: ModelRecord, path: Path, to_model_cfg: Any) -> None:
    """open_clip's files for a non-CLIP family: one weights file, or (no suffix) a hub directory
    with open_clip_config.json when the family can name its open_clip model config."""
    if path.suffix in WEIGHT_SUFFIXES:
        if path.suffix == ".safetensors":
            _save_safetensors(state_dict, path, {"format": "pt"})
        else:
            torch.save(_own_storage(state_dict), path)
        return
    if path.suffix:
        raise CheckpointError(f"{path}: open_clip weights need a .safetensors, .bin, .pt or .pth extension "
                              "(or no extension: a directory in open_clip's hub layout)")
    if to_model_cfg is None:
        raise CheckpointError(f"{path}: a {record.family} model's open_clip config cannot be written: give a "
                              ".safetensors or .bin file name (weights only)")
    config = {"model_cfg": to_model_cfg(record.architecture), "preprocess_cfg": _open_clip_preprocess(record.preprocess)}
    path.mkdir(parents=True, exist_ok=True)
    _save_safetensors(state_dict, path / OPEN_CLIP_WEIGHTS_NAME, {"format": "pt"})
    atomic_write_text(path / "open_clip_config.json", json.dumps(config, indent=2) + "\n")


def _open_clip_preprocess(preprocess: PreprocessConfig) -> dict:
    return {"size": preprocess.image_size, "mean": list(preprocess.mean), "std": list(preprocess.std),
            "interpolation": preprocess.interpolation, "resize_mode": preprocess.resize_mode}


def _write_hf_processor_files(directory: Path, record: ModelRecord) -> None:
    """Tokenizer files and preprocessor_config.json: what `CLIPProcessor.from_pretrained` reads."""
    pad = END_OF_TEXT if record.tokenizer.pad_token_id == record.architecture.text.eot_token_id else "!"
    for name, text in hf_tokenizer_files(record.tokenizer.context_length, pad_token=pad).items():
        atomic_write_text(directory / name, text)
    image_processor = hf_image_processor_config(record.preprocess, "CLIPImageProcessor", "CLIPProcessor")
    atomic_write_text(directory / "preprocessor_config.json", json.dumps(image_processor, indent=2) + "\n")
