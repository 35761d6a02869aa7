"""`inspect_path(path)`: what a checkpoint file or folder is, from its headers alone.

Reads safetensors headers, torch pickles through the safe unpickler (tensor descriptions only:
no storage bytes, no code), and JSON configs; never a tensor's data. Says which CLIP(s) it holds
by name where the shapes match a known architecture, their parameter counts and dtypes, the record
stored with the weights, and what clipforge can do with it (with the command). `clipforge inspect`
prints it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from clipforge import model_zoo
from clipforge.checkpoint_formats import CheckpointError, infer_config, to_canonical
from clipforge.checkpoint_formats.layouts import detect_format
from clipforge.checkpoint_formats.limits import optional_file, parse_json, path_kind, read_json
from clipforge.checkpoint_formats.reading import CLIPFORGE_RECORD_KEY, _safetensors_header, _safetensors_kind
from clipforge.checkpoint_formats.stable_diffusion import detect_layout, text_config_of
from clipforge.errors import MissingFileError

__all__ = ["Inspection", "Component", "inspect_path", "text_tower_name"]

PathLike = Union[str, "os.PathLike[str]"]

_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


@dataclass
class Component:
    """One model (or tower) found in the file."""

    role: str  # "CLIP model", "text encoder clip_l", ...
    name: Optional[str]  # "CLIP ViT-L/14 text" / "ViT-B-32": where the shapes match a known architecture
    parameters: int
    dtype: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Inspection:
    path: str
    format: str  # "clipforge", "openai", "open_clip", "hf", "sd-single-file", "diffusers", "unknown"
    summary: str  # one line: what it is
    components: list[Component] = field(default_factory=list)
    record: Optional[dict[str, Any]] = None  # the model record stored with the weights, if any
    other_tensors: dict[str, int] = field(default_factory=dict)  # tensors that are no CLIP, by top-level prefix
    notes: list[str] = field(default_factory=list)
    usage: list[str] = field(default_factory=list)  # what to run with it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format_text(self) -> str:
        lines = [f"{self.path}", f"  format      {self.format}", f"  contents    {self.summary}"]
        for c in self.components:
            lines.append(f"  - {c.role}: {c.name or 'no named architecture matches'}, "
                         f"{c.parameters / 1e6:.1f}M parameters, {c.dtype}")
            for key, value in c.details.items():
                lines.append(f"      {key}: {value}")
        if self.record:
            pre, tok = self.record.get("preprocess", {}), self.record.get("tokenizer")
            text = (f"  record      preprocessing {pre.get('image_size', pre.get('size'))} px, mean {pre.get('mean')}, "
                    f"std {pre.get('std')}, {pre.get('interpolation', 'bicubic')}")
            if tok:
                text += f"; tokenizer {tok.get('kind')}, context {tok.get('context_length')}, pad id {tok.get('pad_token_id')}"
            lines.append(text)
        if self.other_tensors:
            other = ", ".join(f"{prefix} ({n:,} tensors)" for prefix, n in sorted(self.other_tensors.items()))
            lines.append(f"  not CLIP    {other} (not read)")
        lines += [f"  note        {note}" for note in self.notes]
        lines += [f"  use         {u}" for u in self.usage]
        return "\n".join(lines)


# ---- shapes only ----------------------------------------------------------------------------------


def _shapes(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, str]]:
    """{tensor name: (shape, dtype)} and the safetensors metadata, from the file's headers only."""
    if _safetensors_kind(path) == "safetensors":
        header = _safetensors_header(path)
        metadata = header.get("__metadata__", {}) or {}
        return {k: (tuple(v["shape"]), _SAFETENSORS_DTYPES.get(v["dtype"], v["dtype"].lower()))
                for k, v in header.items() if k != "__metadata__"}, metadata
    from clipforge.checkpoint_formats.safe_pickle import TensorRef, open_torch_file

    tf = open_torch_file(path)
    obj = tf.script_state_dict() if tf.is_torchscript else tf.obj
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds no dict of tensors")
    return {k: (tuple(v.size), str(v.storage.dtype).removeprefix("torch.")) for k, v in obj.items()
            if isinstance(k, str) and isinstance(v, TensorRef)}, {}


def _meta(shapes: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, (shape, _) in shapes.items()}


def _dtype_of(shapes: dict[str, tuple[tuple[int, ...], str]]) -> str:
    counts = Counter(dtype for _, dtype in shapes.values())
    return ", ".join(d for d, _ in counts.most_common())


def _count(shapes: dict[str, tuple[tuple[int, ...], str]]) -> int:
    total = 0
    for shape, _ in shapes.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


# Known CLIP text towers, by (width, layers): the names people know them by.
_TEXT_TOWERS = {(512, 12): "CLIP ViT-B text", (768, 12): "CLIP ViT-L/14 text", (1024, 24): "OpenCLIP ViT-H/14 text",
                (1280, 32): "OpenCLIP ViT-bigG/14 text"}


def text_tower_name(width: int, layers: int) -> Optional[str]:
    return _TEXT_TOWERS.get((width, layers))


def _clip_component(canonical: dict[str, torch.Tensor], shapes: dict, role: str) -> Component:
    config = infer_config(canonical)
    # The shapes do not tell the activation: a name matching either spelling is the architecture.
    name = (model_zoo.architecture_name(config)
            or model_zoo.architecture_name(config.replace(activation="gelu" if config.activation == "quick_gelu" else "quick_gelu")))
    visual = sum(v.numel() for k, v in canonical.items() if k.startswith("visual."))
    text = sum(v.numel() for k, v in canonical.items() if not k.startswith("visual."))
    details = {"towers": f"image {visual / 1e6:.1f}M ({type(config.vision).__name__.replace('Config', '')}, "
                         f"{config.image_size} px), text {text / 1e6:.1f}M (width {config.text.width}, "
                         f"{config.text.layers} layers)", "embedding": config.embed_dim}
    return Component(role, name.removesuffix("-quickgelu") if name else None, visual + text, _dtype_of(shapes), details)


# ---- the entry point --------------------------------------------------------------------------------


def inspect_path(path: PathLike) -> Inspection:
    """What `path` (a checkpoint file or folder) is; see the module docstring."""
    path = Path(os.fspath(path)).expanduser()
    if not path.exists() and not path.is_symlink():
        raise MissingFileError(f"{path}: no such file or folder")
    if path_kind(path) == "dir":  # names symlink loops, FIFOs
        return _inspect_dir(path)
    shapes, metadata = _shapes(path)
    return _inspect_tensors(path, shapes, metadata)


def _family_component(family: str, shapes: dict) -> Component:
    """A model of a family other than CLIP: parameters per tower (by key, `towers.key_tower`)."""
    from clipforge.checkpoint_formats import key_tower

    per = Counter()
    for key, (shape, _) in shapes.items():
        per[key_tower(key)] += _count({key: (shape, "")})
    details = {"towers": f"image {per['image'] / 1e6:.1f}M, text {per['text'] / 1e6:.1f}M"}
    return Component(f"{family} model", None, sum(per.values()), _dtype_of(shapes), details)


def _other_family(path: Path, keys: list[str], shapes: dict, metadata: dict[str, str]) -> Optional[Inspection]:
    """An Inspection for a model of another family (SigLIP, ...; docs/families.md), or None for CLIP."""
    from clipforge.checkpoint_formats import detect_family

    record = None
    if CLIPFORGE_RECORD_KEY in metadata:
        record = parse_json(metadata[CLIPFORGE_RECORD_KEY], f"{path} ({CLIPFORGE_RECORD_KEY})")
        family = (record.get("architecture") or {}).get("family", "clip") if isinstance(record, dict) else "clip"
        file_format = "clipforge"
    else:
        try:
            family, file_format = detect_family(keys)
        except CheckpointError:
            return None
    if family == "clip":
        return None
    component = _family_component(family, shapes)
    return Inspection(str(path), file_format, f"a {family} model, {file_format} layout", [component], record=record,
                      notes=["docs/families.md: what this family differs in and how it is tested"],
                      usage=_family_usage(path, family))


def _inspect_tensors(path: Path, shapes: dict, metadata: dict[str, str], fmt: Optional[str] = None) -> Inspection:
    keys = list(shapes)
    other = _other_family(path, keys, shapes, metadata)
    if other is not None:
        return other
    if CLIPFORGE_RECORD_KEY in metadata:
        record = parse_json(metadata[CLIPFORGE_RECORD_KEY], f"{path} ({CLIPFORGE_RECORD_KEY})")
        component = _clip_component(to_canonical(_meta(shapes), "clipforge"), shapes, "CLIP model")
        arch = record.get("provenance", {}).get("architecture_name") if isinstance(record, dict) else None
        component.name = arch or component.name
        return Inspection(str(path), "clipforge", f"a CLIP model ({component.name or 'custom shape'}) with its record",
                          [component], record=record, usage=_clip_usage(path))
    layout = detect_layout(path, keys)
    if layout is not None:
        return _inspect_sd(path, layout, shapes)
    try:
        file_format = fmt or detect_format(_meta(shapes))
        canonical = to_canonical(_meta(shapes), file_format)
        component = _clip_component(canonical, shapes, "CLIP model")
    except CheckpointError:
        prefixes = Counter(k.split(".")[0] for k in keys)
        return Inspection(str(path), "unknown", "no CLIP model or CLIP text encoder in it", other_tensors=dict(prefixes),
                          notes=[f"{len(keys):,} tensors, {_count(shapes) / 1e6:.1f}M parameters, {_dtype_of(shapes)}"])
    notes = []
    if not metadata.get(CLIPFORGE_RECORD_KEY):
        notes.append("the file states no activation or preprocessing: clipforge assumes OpenAI's and says so when loading "
                     "(pin with arch=...)")
    return Inspection(str(path), file_format, f"a CLIP model ({component.name or 'custom shape'}), {file_format} layout",
                      [component], notes=notes, usage=_clip_usage(path, component.name))


def _inspect_sd(path: Path, layout: Any, shapes: dict) -> Inspection:
    components = []
    for slot in layout.slots:
        mine = {k: v for k, v in shapes.items() if k.startswith(slot.prefix)} if slot.prefix else dict(shapes)
        from clipforge.checkpoint_formats.stable_diffusion import _to_canonical

        canonical = _to_canonical(slot, _meta({k[len(slot.prefix):]: v for k, v in mine.items()}), str(path))
        text, projection = text_config_of(canonical, str(path))
        components.append(Component(
            f"text encoder {slot.name}", text_tower_name(text.width, text.layers), _count(mine), _dtype_of(mine),
            {"width": text.width, "layers": text.layers, "projection": projection or "none",
             "activation": slot.activation, "pads with": slot.pad_token_id},
        ))
    claimed = tuple(slot.prefix for slot in layout.slots if slot.prefix)
    other = Counter(_group(k) for k in shapes if not k.startswith(claimed)) if claimed else Counter()
    names = " + ".join(f"{c.name or c.role} {c.parameters / 1e6:.0f}M" for c in components)
    label = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "sdxl": "SDXL base", "sdxl-refiner": "SDXL refiner",
             "sd3": "Stable Diffusion 3", "flux": "a CLIP-L text encoder file (as Flux ships it)"}[layout.pipeline]
    dtypes = ", ".join(sorted({c.dtype for c in components}))
    return Inspection(str(path), "sd-single-file", f"{label}: {names}, {dtypes}", components, other_tensors=dict(other),
                      notes=list(layout.notes),
                      usage=[f"clipforge.load_prompt_encoder({str(path)!r})   # preset {layout.pipeline!r}: "
                             "what the pipeline feeds its UNet (docs/stable-diffusion.md)"])


def _group(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] in ("model", "conditioner", "text_encoders") else parts[0]


def _inspect_dir(path: Path) -> Inspection:
    if optional_file(path / "model_index.json"):
        layout = detect_layout(path)
        components = []
        for slot in layout.slots:
            config = read_json(path / slot.prefix / "config.json", "config.json")
            width, layers = config.get("hidden_size"), config.get("num_hidden_layers")
            weights = next((path / slot.prefix / n for n in ("model.safetensors", "pytorch_model.bin") if (path / slot.prefix / n).exists()), None)
            shapes = _shapes(weights)[0] if weights else {}
            components.append(Component(f"text encoder {slot.name} ({slot.prefix})", text_tower_name(width, layers),
                                        _count(shapes), _dtype_of(shapes),
                                        {"width": width, "layers": layers, "activation": slot.activation,
                                         "pads with": slot.pad_token_id}))
        return Inspection(str(path), "diffusers", f"a diffusers {layout.pipeline} pipeline folder", components,
                          notes=list(layout.notes),
                          usage=[f"clipforge.load_prompt_encoder({str(path)!r})   # preset {layout.pipeline!r}"])
    for weights, fmt in (("model.safetensors", "hf"), ("pytorch_model.bin", "hf"), ("open_clip_model.safetensors", "open_clip"),
                         ("open_clip_pytorch_model.bin", "open_clip")):
        if optional_file(path / weights):
            shapes, metadata = _shapes(path / weights)
            result = _inspect_tensors(path, shapes, metadata, fmt=fmt)
            result.format = "hf" if fmt == "hf" else "open_clip"
            # A folder's config states the architecture: no line about pinning it. The convert line stays
            # the family's (a SigLIP or Chinese-CLIP folder is not offered OpenAI's format).
            result.usage = [u for u in result.usage if not u.startswith("(pin the architecture")]
            if fmt == "open_clip" and optional_file(path / "open_clip_config.json"):
                config = read_json(path / "open_clip_config.json", "open_clip_config.json")
                stated = [k for k in ("model_cfg", "preprocess_cfg") if isinstance(config, dict) and k in config]
                result.notes = [f"open_clip_config.json states {' and '.join(stated) or 'nothing usable'}"]
                if isinstance(config, dict) and isinstance(config.get("preprocess_cfg"), dict):
                    result.record = {"preprocess": config["preprocess_cfg"]}
            if fmt == "hf" and optional_file(path / "config.json"):
                config = read_json(path / "config.json", "config.json")
                result.notes = [f"config.json: model_type {config.get('model_type')!r}"] + [
                    f"{n} present" for n in ("preprocessor_config.json", "tokenizer_config.json", "vocab.json",
                                             "spiece.model", "tokenizer.model", "vocab.txt",
                                             "sentencepiece.bpe.model") if (path / n).exists()]
            return result
    raise CheckpointError(f"{path}: a folder with no checkpoint clipforge reads (no model_index.json, "
                          "model.safetensors, pytorch_model.bin or open_clip_model.safetensors)")


def _family_usage(path: Path, family: str) -> list[str]:
    """As `_clip_usage`, converting only to the formats this family can be written in (its FamilyLayout's)."""
    from clipforge.checkpoint_formats import family_layout

    formats = sorted({"clipforge"} | set(family_layout(family).writers), key=lambda f: (f != "hf", f))
    convert = f"clipforge convert {path} OUT --to {formats[0]}" + (f"   # or {', '.join(formats[1:])}" if formats[1:] else "")
    return _clip_usage(path)[:2] + [convert]


def _clip_usage(path: Path, name: Optional[str] = None) -> list[str]:
    arch = f" --arch {name}" if name and not re.search(r"quickgelu", name) else ""
    return [f"clipforge classify IMAGES --labels \"a,b,c\" --model {path}", f"clipforge.load({str(path)!r})",
            f"clipforge convert {path} OUT --to hf   # or clipforge, open_clip, openai"] + (
        [f"(pin the architecture if loading warns: --model {path}{arch})"] if arch else [])
