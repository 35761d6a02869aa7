"""Write a canonical state dict in any supported format.

Every writer first checks the tensors against the config (`check_config`), so a file is never
written for an architecture other than the one named. The `hf` writer also checks that its key
map inverts exactly before anything touches the disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..configs import ClipConfig, ResNetConfig
from .errors import CheckpointError
from .hf import canonical_to_hf, clip_config_to_hf_config, hf_to_canonical
from .infer_config import check_config
from .layouts import FORMATS
from .openai import check_openai_representable
from .reading import CLIPFORGE_CONFIG_KEY


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


def write_checkpoint(state_dict: dict[str, torch.Tensor], cfg: ClipConfig, path: str | Path, format: str) -> Path:
    """Write canonical `state_dict` (architecture `cfg`) to `path` in `format`; returns the path written.

    format:
      "openai"    plain state dict via torch.save (`clip.load(path, jit=False)` / `build_model`)
      "open_clip" `.safetensors`, or `.bin` / `.pt` / `.pth` via torch.save, by `path`'s extension
                  (`open_clip.create_model(arch, pretrained=path)`)
      "hf"        directory with config.json + model.safetensors (`CLIPModel.from_pretrained(path)`)
      "clipforge" one safetensors file, canonical keys, ClipConfig JSON in its metadata
    """
    if format not in FORMATS:
        raise CheckpointError(f"unknown format {format!r}; expected one of {FORMATS}")
    check_config(state_dict, cfg)
    path = Path(path)
    if format == "openai":
        check_openai_representable(cfg)
        torch.save(_own_storage(state_dict), path)
    elif format == "open_clip":
        if path.suffix == ".safetensors":
            _save_safetensors(state_dict, path, {"format": "pt"})
        elif path.suffix in (".bin", ".pt", ".pth"):
            torch.save(_own_storage(state_dict), path)
        else:
            raise CheckpointError(f"{path}: open_clip weights need a .safetensors, .bin, .pt or .pth extension")
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
        (path / "config.json").write_text(json.dumps(clip_config_to_hf_config(cfg, dtype=dtype), indent=2) + "\n")
        _save_safetensors(hf_sd, path / "model.safetensors", {"format": "pt"})
    else:  # clipforge
        metadata = {"format": "pt", CLIPFORGE_CONFIG_KEY: json.dumps(cfg.to_dict())}
        _save_safetensors(state_dict, path, metadata)
    return path
