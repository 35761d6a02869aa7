"""Read any supported checkpoint file or directory into a raw state dict plus what is known about it.

Resolution for a path:
  directory   -> transformers layout (config.json + model.safetensors / pytorch_model.bin, possibly
                 sharded via *.index.json), or open_clip's hub layout (open_clip_config.json +
                 open_clip_model.safetensors / open_clip_pytorch_model.bin)
  file        -> safetensors (by header), else a zip PyTorch archive (torch.save or TorchScript),
                 else a legacy torch.save file. Pickles go through `safe_pickle`, never `pickle.load`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import torch

from ..configs import ClipConfig
from .errors import CheckpointError
from .layouts import detect_format
from .open_clip import open_clip_config_to_clip_config
from .safe_pickle import open_torch_file

Format = Literal["openai", "open_clip", "hf", "clipforge"]

CLIPFORGE_CONFIG_KEY = "clipforge_config"


@dataclass
class Checkpoint:
    """Tensors as named in the file, the layout they follow, and any config stored with them."""

    state_dict: dict[str, torch.Tensor]
    format: Format
    hf_config: Optional[dict[str, Any]]
    source: str
    # The ClipConfig stored with the weights: a "clipforge" file's metadata, or an open_clip hub
    # directory's open_clip_config.json. (An HF directory's config is `hf_config`.)
    clipforge_config: Optional[ClipConfig] = None


def _is_safetensors(path: Path) -> bool:
    # A safetensors file starts with a little-endian u64 header length, then a JSON object.
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < n <= path.stat().st_size - 8


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, metadata


def _check_tensors(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{source}: expected a non-empty dict of tensors, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"{source}: entries that are not named tensors: {bad[:10]}; expected a state dict or an "
            "open_clip training checkpoint ({'state_dict': ..., 'epoch': ...})"
        )
    return dict(obj)


def _read_torch(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """State dict of a torch file, and whether it came from a training-checkpoint wrapper."""
    source = str(path)
    tf = open_torch_file(path)
    if tf.is_torchscript:
        return _check_tensors(tf.materialize(tf.script_state_dict()), source), False  # layout: by keys
    obj = tf.obj
    wrapped = False
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        # open_clip training checkpoint: {"epoch", "name", "state_dict", "optimizer", ...}.
        # Only the state dict's tensors are read; the optimizer state stays on disk.
        obj, wrapped = obj["state_dict"], True
    return _check_tensors(tf.materialize(obj), source), wrapped


def _read_weights_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], bool]:
    if _is_safetensors(path):
        tensors, metadata = _read_safetensors(path)
        return tensors, metadata, False
    if path.suffix == ".safetensors":
        raise CheckpointError(f"{path}: named .safetensors but its header is not a safetensors header")
    tensors, wrapped = _read_torch(path)
    return tensors, {}, wrapped


def _read_sharded(index_path: Path) -> dict[str, torch.Tensor]:
    index = json.loads(index_path.read_text())
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_path}: no 'weight_map' in the shard index")
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if shard_path.parent != index_path.parent:
            raise CheckpointError(f"{index_path}: shard {shard!r} lies outside the checkpoint directory")
        tensors, _, _ = _read_weights_file(shard_path)
        out.update(tensors)
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise CheckpointError(f"{index_path}: tensors listed in the index but absent from the shards: {missing[:10]}")
    return out


_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _read_directory(path: Path) -> Checkpoint:
    source = str(path)
    if (path / "config.json").is_file():
        hf_config = json.loads((path / "config.json").read_text())
        for name in _HF_WEIGHTS:
            weights = path / name
            if weights.is_file():
                if name.endswith(".index.json"):
                    tensors = _read_sharded(weights)
                else:
                    tensors, _, _ = _read_weights_file(weights)
                return Checkpoint(tensors, "hf", hf_config, source)
        raise CheckpointError(f"{source}: has config.json but none of {list(_HF_WEIGHTS)}")
    for name in _OPEN_CLIP_WEIGHTS:
        weights = path / name
        if weights.is_file():
            tensors, _, _ = _read_weights_file(weights)
            cfg = None
            if (path / "open_clip_config.json").is_file():
                # open_clip's hub layout: {"model_cfg": {...}, "preprocess_cfg": {...}}
                model_cfg = json.loads((path / "open_clip_config.json").read_text()).get("model_cfg")
                if isinstance(model_cfg, dict):
                    cfg = open_clip_config_to_clip_config(model_cfg)
            return Checkpoint(tensors, "open_clip", None, source, cfg)
    raise CheckpointError(
        f"{source}: a directory without a transformers config.json + weights or open_clip weights "
        f"(looked for {list(_HF_WEIGHTS) + list(_OPEN_CLIP_WEIGHTS)})"
    )


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint file or directory without executing anything stored in it.

    Keys are returned as stored (wrapper prefixes such as `module.` included); `to_canonical`
    maps them onto the canonical layout. Raises `CheckpointError` for anything unsupported.
    """
    path = Path(path)
    if path.is_dir():
        return _read_directory(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file or directory")
    tensors, metadata, wrapped = _read_weights_file(path)
    if CLIPFORGE_CONFIG_KEY in metadata:
        try:
            cfg = ClipConfig.from_dict(json.loads(metadata[CLIPFORGE_CONFIG_KEY]))
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: unreadable '{CLIPFORGE_CONFIG_KEY}' metadata: {exc}") from exc
        return Checkpoint(tensors, "clipforge", None, str(path), cfg)
    fmt = detect_format(tensors)
    if wrapped and fmt == "openai":
        fmt = "open_clip"  # a training-checkpoint wrapper is open_clip's, whatever the keys
    return Checkpoint(tensors, fmt, None, str(path))
