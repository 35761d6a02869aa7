"""Write a canonical state dict in any supported format, with the model's record where the format has room.

Every writer first checks the tensors against the config (`check_config`), so a file is never
written for an architecture other than the one named. The `hf` writer also checks that its key
map inverts exactly before anything touches the disk.

Where the record (architecture, preprocessing, tokenizer, provenance) goes:
  clipforge  all of it, as JSON in the safetensors metadata
  hf         config.json (architecture), preprocessor_config.json (preprocessing), tokenizer files
             (context length, padding): what transformers reads
  open_clip  a directory: open_clip_model.safetensors + open_clip_config.json ({"model_cfg",
             "preprocess_cfg"}, open_clip's hub layout); a single weights file holds no record
  openai     a plain state dict: no room (OpenAI's numerics are assumed when it is read back)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import torch

from ..atomic_files import atomic_write_text
from ..configs import ClipConfig, ModelRecord, PreprocessConfig, ResNetConfig
from ..text.hf_files import hf_tokenizer_files
from .errors import CheckpointError
from .hf import canonical_to_hf, clip_config_to_hf_config, hf_to_canonical
from .infer_config import check_config
from .layouts import FORMATS
from .open_clip import clip_config_to_open_clip_config
from .openai import check_openai_representable
from .reading import CLIPFORGE_CONFIG_KEY, CLIPFORGE_RECORD_KEY, END_OF_TEXT

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
    state_dict: dict[str, torch.Tensor], record: Union[ModelRecord, ClipConfig], path: str | Path, format: str
) -> Path:
    """Write canonical `state_dict` with its `record` to `path` in `format`; returns the path written.

    A ClipConfig alone stands for `ModelRecord.default(config)` (OpenAI's preprocessing at its size).
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
    if isinstance(record, ClipConfig):
        record = ModelRecord.default(record)
    cfg = record.architecture
    check_config(state_dict, cfg)
    path = Path(path)
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
    elif format == "hf":
        if isinstance(cfg.vision, ResNetConfig):
            raise CheckpointError(
                "transformers has no ModifiedResNet CLIP: a ResNet model cannot be written in the 'hf' format. "
                "Use 'clipforge', 'openai' or 'open_clip'."
            )
        hf_sd = canonical_to_hf(state_dict)
        back = hf_to_canonical(hf_sd)
        if back.keys() != state_dict.keys() or not all(torch.equal(back[k], state_dict[k]) for k in back):
            raise CheckpointError("internal error: the transformers key map does not invert exactly; nothing written")
        dtype = str(state_dict["token_embedding.weight"].dtype).removeprefix("torch.")
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / "config.json", json.dumps(clip_config_to_hf_config(cfg, dtype=dtype), indent=2) + "\n")
        _save_safetensors(hf_sd, path / "model.safetensors", {"format": "pt"})
        _write_hf_processor_files(path, record)
    else:  # clipforge
        metadata = {"format": "pt", CLIPFORGE_RECORD_KEY: json.dumps(record.to_dict()),
                    CLIPFORGE_CONFIG_KEY: json.dumps(cfg.to_dict())}  # the config alone, for older readers
        _save_safetensors(state_dict, path, metadata)
    return path


def _open_clip_preprocess(preprocess: PreprocessConfig) -> dict:
    return {"size": preprocess.image_size, "mean": list(preprocess.mean), "std": list(preprocess.std),
            "interpolation": preprocess.interpolation, "resize_mode": "shortest"}


def _write_hf_processor_files(directory: Path, record: ModelRecord) -> None:
    """Tokenizer files and preprocessor_config.json: what `CLIPProcessor.from_pretrained` reads."""
    pad = END_OF_TEXT if record.tokenizer.pad_token_id == record.architecture.text.eot_token_id else "!"
    for name, text in hf_tokenizer_files(record.tokenizer.context_length, pad_token=pad).items():
        atomic_write_text(directory / name, text)
    preprocess = record.preprocess
    size = preprocess.image_size
    image_processor = {
        "image_processor_type": "CLIPImageProcessor",
        "processor_class": "CLIPProcessor",
        "do_resize": True,
        "size": {"shortest_edge": size},
        "resample": 2 if preprocess.interpolation == "bilinear" else 3,  # PIL's BILINEAR / BICUBIC
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(preprocess.mean),
        "image_std": list(preprocess.std),
        "do_convert_rgb": True,
    }
    atomic_write_text(directory / "preprocessor_config.json", json.dumps(image_processor, indent=2) + "\n")
