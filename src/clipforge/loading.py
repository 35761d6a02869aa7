"""`load` and `save`: compose configs, checkpoint formats, the hub cache, models, tokenizer and preprocessing.

Resolution order for `load(name_or_path, weights=None, arch=None)`:
0. nothing, or "clipforge-mini" -> the bundled default model (in the package: no download);
1. an existing local path (file or directory) -> read it, whatever its format;
2. a named architecture (`"ViT-B-32"`, `"ViT-B-32-quickgelu"`, OpenAI's `"ViT-B/32"`) with its
   weights tag (`weights="openai"`); `weights="none"` asks for a randomly initialised model. A
   name without a tag is an error listing the tags: a random model must never answer by accident;
3. a Hugging Face hub id (`"openai/clip-vit-large-patch14"`) -> the hub cache (download if online).
A name that is none of these gets the close matches among the bundled model, the architectures
and the known hub ids.

What the config of a loaded file is, in order: the config stored in a clipforge file or a
transformers directory; else the named `arch`; else inferred from tensor shapes the way OpenAI's
loader does (QuickGELU, heads = width / 64). A named `arch` must agree with the tensors' shapes and
with the activation the file declares; any disagreement is an error, never a silent fallback.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal, Optional, Union

import torch

from clipforge import model_zoo
from clipforge.checkpoint_formats import (
    Checkpoint,
    CheckpointError,
    check_config,
    check_weights,
    declared_config,
    infer_config,
    local_path_exists,
    read_checkpoint,
    read_json,
    to_canonical,
    write_checkpoint,
)
from clipforge.configs import ClipConfig, PreprocessConfig
from clipforge.errors import ClipforgeError, InvalidInputError, MissingFileError
from clipforge.image import Preprocess
from clipforge.models import ClipModel
from clipforge.text import Tokenizer

SaveFormat = Literal["clipforge", "openai", "open_clip", "hf"]
BUNDLED_MODEL_NAME = model_zoo.BUNDLED_MODEL_NAME  # `load()` and `load("clipforge-mini")` both give the bundled model


class ConfigMismatchError(ClipforgeError, ValueError):
    """The weights declare numerics (activation, eps, shapes) that differ from the requested architecture."""


class WeightsRequiredError(InvalidInputError):
    """A named architecture without a weights tag: clipforge never hands out a random model silently."""


def load(
    name_or_path: Optional[Union[str, Path]] = None,
    weights: Optional[str] = None,
    *,
    arch: Union[str, ClipConfig, None] = None,
    device: Union[str, torch.device, None] = None,
    dtype: Optional[torch.dtype] = None,
    preprocess_mode: Optional[Literal["openai", "hf"]] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    offline: Optional[bool] = None,
    allow_nonfinite: bool = False,
) -> tuple[ClipModel, Preprocess, Tokenizer]:
    """Load a CLIP model with its preprocessing and tokenizer. Returns `(model, preprocess, tokenizer)`.

    With no arguments: the small bundled default model (clipforge-mini), offline.

    The model is in eval mode, fp32 unless `dtype` is given, on CPU unless `device` is given.
    `arch` names an architecture (or gives a ClipConfig, for custom shapes) for files that do not say.
    `preprocess_mode` defaults to "hf" (CLIPImageProcessor's numbers) for transformers-format
    weights and "openai" otherwise, so each set of weights is preprocessed as its own library does.

    A file is never trusted: anything wrong with it (see docs/security.md) raises `CheckpointError`
    naming the file and the reason. Weights holding NaN or Inf raise `NonFiniteWeightsError` unless
    `allow_nonfinite=True` (for inspecting a diverged training run, say).
    """
    if name_or_path is None or name_or_path == BUNDLED_MODEL_NAME:
        if weights is not None or arch is not None:
            raise InvalidInputError("weights/arch given without a model name: pass a named architecture or a path")
        name_or_path = bundled_model_path()
    name = str(name_or_path)
    preprocess_cfg: Optional[PreprocessConfig] = None
    # A dangling symlink or a symlink loop is a local path too: read_checkpoint names what is wrong.
    if local_path_exists(Path(name).expanduser()):
        model, preprocess_cfg, fmt = _load_path(Path(name).expanduser(), arch, allow_nonfinite)
    elif weights is not None or _is_architecture(name):
        name = model_zoo.OPENAI_MODEL_NAMES.get(name, name)  # OpenAI's "ViT-B/32" spelling
        if arch is not None and arch != name:
            raise InvalidInputError(f"got both a named architecture {name!r} and arch={arch!r}; pass one")
        model, preprocess_cfg, fmt = _load_named(
            name, weights, cache_dir=cache_dir, offline=offline, allow_nonfinite=allow_nonfinite
        )
    elif "/" in name and not name.startswith((".", "/")):
        model, preprocess_cfg, fmt = _load_hub_id(name, arch, offline=offline, allow_nonfinite=allow_nonfinite)
    else:
        raise MissingFileError(f"{name!r} is not a file or folder, a named architecture or a hub id (org/name); "
                               + model_zoo.suggest_names(name))

    model = model.to(device=device, dtype=dtype).eval()
    mode = preprocess_mode or ("hf" if fmt == "hf" else "openai")
    preprocess_cfg = preprocess_cfg or PreprocessConfig(image_size=model.config.image_size)
    preprocess = Preprocess(dataclasses.replace(preprocess_cfg, mode=mode))
    tokenizer = Tokenizer(context_length=model.config.text.context_length)
    return model, preprocess, tokenizer


def bundled_model_path() -> Path:
    """The default model shipped inside the package (see recipes/clipforge-mini.toml and docs/training.md)."""
    path = Path(__file__).parent / "bundled" / "clipforge-mini.safetensors"
    if not path.is_file():
        raise MissingFileError(f"the bundled default model is missing from this installation ({path})")
    return path


def save(
    model: ClipModel, path: Union[str, Path], format: SaveFormat = "clipforge", *,
    preprocess: Optional[Preprocess] = None,
) -> Path:
    """Write `model` as a clipforge safetensors file, an OpenAI state dict, an open_clip file or a transformers dir.

    A transformers directory is complete: config.json and the weights, the tokenizer files and
    preprocessor_config.json (from `preprocess`, else OpenAI's numbers at the model's image size), so
    `CLIPModel.from_pretrained(path)` and `CLIPProcessor.from_pretrained(path)` both open it.
    """
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    write_checkpoint(state_dict, model.config, path, format)
    if format == "hf":
        _write_hf_processor_files(path, model.config, preprocess.config if preprocess is not None else None)
    return path


def _write_hf_processor_files(directory: Path, config: ClipConfig, preprocess: Optional[PreprocessConfig]) -> None:
    from clipforge.atomic_files import atomic_write_text
    from clipforge.text.hf_files import hf_tokenizer_files

    preprocess = preprocess or PreprocessConfig(image_size=config.image_size)
    for name, text in hf_tokenizer_files(context_length=config.text.context_length).items():
        atomic_write_text(directory / name, text)
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


def build_model(config: ClipConfig, canonical_state_dict: dict[str, torch.Tensor], source: str) -> ClipModel:
    """Instantiate `config` and load the canonical state dict strictly (every key, every shape).

    The model takes over the state dict's tensors (fp32, contiguous) instead of copying them into
    freshly initialised parameters: it is built on the meta device, so loading holds one copy of
    the weights in memory, not two, and skips a random initialisation that would be overwritten.
    """
    check_config(canonical_state_dict, config)
    with torch.device("meta"):
        model = ClipModel(config)
    state = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in canonical_state_dict.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise InvalidInputError(f"{source}: checkpoint keys do not match the model: missing {missing}, unexpected {unexpected}")
    return model


# ---- the three ways in -----------------------------------------------------------------------------


def _is_architecture(name: str) -> bool:
    return name in model_zoo.ARCHITECTURES or name in model_zoo.OPENAI_MODEL_NAMES


RANDOM_WEIGHTS = "none"  # weights="none": a randomly initialised model, asked for on purpose


def _load_named(
    name: str, tag: Optional[str], *, cache_dir: Optional[Union[str, Path]], offline: Optional[bool],
    allow_nonfinite: bool = False,
) -> tuple[ClipModel, Optional[PreprocessConfig], str]:
    from clipforge import hub_cache

    if tag is None:
        model_zoo.get_architecture(name)  # an unknown name is reported as such first
        raise WeightsRequiredError(
            f"{name} is an architecture: choose its weights, {model_zoo.describe_tags(name)} "
            f"(--weights TAG on the command line, weights=TAG in Python), or '{RANDOM_WEIGHTS}' for a randomly "
            "initialised model"
        )
    if tag == RANDOM_WEIGHTS:
        config = model_zoo.get_architecture(name)
        return ClipModel(config), PreprocessConfig(image_size=config.image_size), "clipforge"
    record = model_zoo.get_weights(name, tag)
    # The tag decides the activation (open_clip's convention: "ViT-B-32" + "openai" is the QuickGELU twin);
    # explicitly asking for the other activation is a mismatch, not something to override silently.
    if name.endswith("-quickgelu") and record.activation != "quick_gelu":
        raise ConfigMismatchError(
            f"weights {tag!r} for {_base_name(name)} were trained with {record.activation}, not QuickGELU; "
            f"use arch {record.arch!r}"
        )
    config = model_zoo.get_architecture(record.arch)
    path = hub_cache.resolve_weights_file(record, cache_dir=cache_dir, offline=offline)
    checkpoint = read_checkpoint(path)
    model = _model_from_checkpoint(checkpoint, config, source=f"{record.arch} ({tag}) from {path}",
                                   allow_nonfinite=allow_nonfinite)
    return model, record.preprocess, checkpoint.format


def _load_hub_id(
    hub_id: str, arch: Union[str, ClipConfig, None], *, offline: Optional[bool], allow_nonfinite: bool = False
) -> tuple[ClipModel, Optional[PreprocessConfig], str]:
    from clipforge import hub_cache

    record = model_zoo.lookup_hf_hub_id(hub_id)
    try:
        directory = hub_cache.resolve_hf_repo_dir(hub_id, offline=offline)
    except hub_cache.WeightsNotFoundError as e:
        if record is not None:
            raise
        # Not a repo clipforge knows and not in the cache: maybe a typo of one it knows.
        raise hub_cache.WeightsNotFoundError(
            f"no such model known: {hub_id!r} is not a hub id clipforge knows and it is not in the Hugging Face "
            f"cache; {model_zoo.suggest_names(hub_id)}\n{e}"
        ) from None
    model, preprocess_cfg, fmt = _load_path(directory, arch, allow_nonfinite)
    if record is not None and preprocess_cfg is None:
        preprocess_cfg = record.preprocess
    return model, preprocess_cfg, fmt


def _load_path(
    path: Path, arch: Union[str, ClipConfig, None], allow_nonfinite: bool = False
) -> tuple[ClipModel, Optional[PreprocessConfig], str]:
    checkpoint = read_checkpoint(path)
    config = model_zoo.get_architecture(arch) if isinstance(arch, str) else arch
    # Every file is read and checked before the model is built.
    preprocess_cfg = hf_preprocess_config(path) if checkpoint.format == "hf" else None
    model = _model_from_checkpoint(checkpoint, config, source=str(path), allow_nonfinite=allow_nonfinite)
    return model, preprocess_cfg, checkpoint.format


def _model_from_checkpoint(
    checkpoint: Checkpoint, requested: Optional[ClipConfig], source: str, allow_nonfinite: bool = False
) -> ClipModel:
    try:
        canonical = to_canonical(checkpoint.state_dict, checkpoint.format)
        # The config a file states about itself (clipforge metadata, open_clip_config.json or a
        # transformers config.json), refused if not sane; it is checked against the tensors
        # (layer counts first, then every shape) before any model is built.
        declared = declared_config(checkpoint)
        if requested is not None and declared is not None:
            _check_same_numerics(requested, declared, source)
        config = requested or declared or infer_config(canonical)
        check_config(canonical, config)
        check_weights(canonical, source, allow_nonfinite=allow_nonfinite)
    except CheckpointError as exc:
        if checkpoint.source in str(exc) or source in str(exc):
            raise
        raise type(exc)(f"{source}: {exc}") from None
    return build_model(config, canonical, source)


def _check_same_numerics(requested: ClipConfig, declared: ClipConfig, source: str) -> None:
    for field in ("activation", "layer_norm_eps", "embed_dim"):
        want, got = getattr(requested, field), getattr(declared, field)
        if want != got:
            raise ConfigMismatchError(f"{source}: the file declares {field}={got!r} but the requested arch has {want!r}")
    for tower in ("vision", "text"):
        if getattr(requested, tower) != getattr(declared, tower):
            raise ConfigMismatchError(
                f"{source}: the file's {tower} config {getattr(declared, tower)} differs from the requested "
                f"{getattr(requested, tower)}"
            )


def hf_preprocess_config(directory: Path) -> Optional[PreprocessConfig]:
    """Image size and mean/std from transformers' image-processor config, when the directory has one.

    `CLIPImageProcessor.save_pretrained` writes preprocessor_config.json; transformers 5's
    `CLIPProcessor.save_pretrained` nests the same fields under "image_processor" in processor_config.json.
    """
    if not directory.is_dir():
        return None
    raw: Optional[dict] = None
    path = directory / "preprocessor_config.json"
    if local_path_exists(path):
        raw = read_json(path, "image-processor config")
    elif local_path_exists(path := directory / "processor_config.json"):
        raw = read_json(path, "processor config")
        raw = raw.get("image_processor") if isinstance(raw, dict) else None
    if not raw:
        return None
    try:
        crop = raw.get("crop_size", 224)
        size = crop.get("height", 224) if isinstance(crop, dict) else int(crop)
        cfg = PreprocessConfig(
            image_size=size,
            mean=tuple(float(x) for x in raw.get("image_mean", PreprocessConfig.mean)),
            std=tuple(float(x) for x in raw.get("image_std", PreprocessConfig.std)),
            interpolation="bilinear" if raw.get("resample") == 2 else "bicubic",
            mode="hf",
        )
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise CheckpointError(f"{path}: not a usable image-processor config ({type(exc).__name__}: {exc})") from None
    if (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 2**14 or len(cfg.mean) != 3
            or len(cfg.std) != 3 or not all(0 < s < 1e6 for s in cfg.std)
            or not all(abs(m) < 1e6 for m in cfg.mean)):
        raise CheckpointError(
            f"{path}: image size {str(size)[:20]}, mean {str(cfg.mean)[:60]} or std {str(cfg.std)[:60]} out of range; refused"
        )
    return cfg


def _base_name(name: str) -> str:
    return name.removesuffix("-quickgelu")
