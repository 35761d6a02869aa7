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
import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Union

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
    to_canonical,
    write_checkpoint,
)
from clipforge.configs import (
    ClipConfig,
    ModelRecord,
    PreprocessConfig,
    Provenance,
    TextConfig,
    TokenizerConfig,
)
from clipforge.errors import (
    AssumptionWarning,
    ClipforgeError,
    InvalidInputError,
    MissingFileError,
)
from clipforge.image import Preprocess
from clipforge.models import CausalTextTransformer, Towers, model_class
from clipforge.text import tokenizer_from_config

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
    preprocess: Optional[PreprocessConfig] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    offline: Optional[bool] = None,
    allow_nonfinite: bool = False,
    tower: Towers = "both",
) -> tuple[Any, Preprocess, Any]:
    """Load a CLIP model with its preprocessing and tokenizer. Returns `(model, preprocess, tokenizer)`.

    Any family clipforge knows (OpenAI's CLIP, SigLIP, ...; docs/families.md): the model class
    follows from the file's config, and has the same public API whatever the family.

    With no arguments: the small bundled default model (clipforge-mini), offline.

    All three come from one `ModelRecord` (architecture, preprocessing, tokenizer, provenance),
    which the model keeps as `model.record`: read from the file where its format stores it, from
    the named weights' entry in the zoo, and otherwise the documented defaults (OpenAI's
    activation and preprocessing) with an `AssumptionWarning` naming what was assumed and the
    argument that pins it. The model is in eval mode, fp32 unless `dtype` is given, on CPU unless
    `device` is given. `arch` names an architecture (or gives a ClipConfig, for custom shapes) for
    files that do not say; a file that says otherwise is an error. `preprocess_mode` overrides the
    record's ("hf" for transformers-format weights, "openai" otherwise); `preprocess` replaces the
    record's preprocessing altogether (for a file that does not state it).

    A file is never trusted: anything wrong with it (see docs/security.md) raises `CheckpointError`
    naming the file and the reason. Weights holding NaN or Inf raise `NonFiniteWeightsError` unless
    `allow_nonfinite=True` (for inspecting a diverged training run, say).

    tower: "image" or "text" loads one tower only: the other tower's tensors are never read from
    the file (their shapes are still checked against the config) and its parameters never created,
    so memory holds that tower alone. Such a model refuses the other tower's methods by name.
    """
    if tower not in ("both", "image", "text"):
        raise InvalidInputError(f"tower must be 'both', 'image' or 'text', got {tower!r}")
    if name_or_path is None or name_or_path == BUNDLED_MODEL_NAME:
        if weights is not None or arch is not None:
            raise InvalidInputError("weights/arch given without a model name: pass a named architecture or a path")
        name_or_path = bundled_model_path()
    name = str(name_or_path)
    # A dangling symlink or a symlink loop is a local path too: read_checkpoint names what is wrong.
    if local_path_exists(Path(name).expanduser()):
        model, record = _load_path(Path(name).expanduser(), arch, allow_nonfinite, preprocess=preprocess, tower=tower)
    elif weights is not None or _is_architecture(name):
        name = model_zoo.OPENAI_MODEL_NAMES.get(name, name)  # OpenAI's "ViT-B/32" spelling
        if arch is not None and arch != name:
            raise InvalidInputError(f"got both a named architecture {name!r} and arch={arch!r}; pass one")
        model, record = _load_named(name, weights, cache_dir=cache_dir, offline=offline,
                                    allow_nonfinite=allow_nonfinite, tower=tower)
    elif name in model_zoo.NAMED_MODELS:  # a released model of another family (SigLIP, ...): its hub repo
        model, record = _load_named_model(model_zoo.NAMED_MODELS[name], arch, offline=offline,
                                          allow_nonfinite=allow_nonfinite, tower=tower)
    elif "/" in name and not name.startswith((".", "/")):
        model, record = _load_hub_id(name, arch, offline=offline, allow_nonfinite=allow_nonfinite, tower=tower)
    else:
        raise MissingFileError(f"{name!r} is not a file or folder, a named architecture or a hub id (org/name); "
                               + model_zoo.suggest_names(name))
    if preprocess is not None:
        record = record.replace(preprocess=preprocess)
    if preprocess_mode is not None:
        record = record.replace(preprocess=dataclasses.replace(record.preprocess, mode=preprocess_mode))
    model = model.to(device=device, dtype=dtype).eval()
    model.record = record
    return model, Preprocess(record.preprocess), tokenizer_for(record)


def tokenizer_for(record: ModelRecord) -> Any:
    """The tokenizer a record describes (its kind's constructor: `clipforge.text.TOKENIZER_BUILDERS`)."""
    return tokenizer_from_config(record.tokenizer)


def bundled_model_path() -> Path:
    """The default model shipped inside the package (see recipes/clipforge-mini.toml and docs/training.md)."""
    path = Path(__file__).parent / "bundled" / "clipforge-mini.safetensors"
    if not path.is_file():
        raise MissingFileError(f"the bundled default model is missing from this installation ({path})")
    return path


def save(model: Any, path: Union[str, Path], format: SaveFormat = "clipforge") -> Path:
    """Write `model` with its record (`model.record`) as a clipforge safetensors file, an OpenAI state
    dict, an open_clip file or hub directory, or a transformers directory (see
    `checkpoint_formats.write_checkpoint` for where each format keeps the record).

    A transformers directory is complete: config.json and the weights, the tokenizer files and
    preprocessor_config.json, so `CLIPModel` and `CLIPProcessor.from_pretrained(path)` both open it.
    """
    if getattr(model, "towers", "both") != "both":
        raise InvalidInputError(f"this model holds its {model.towers} tower only: a checkpoint needs both; "
                                "load it with tower='both' to save it")
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    record = model.record.replace(architecture=model.config)
    return write_checkpoint(state_dict, record, Path(path), format)


def build_model(
    config: Any, canonical_state_dict: dict[str, torch.Tensor], source: str, towers: Towers = "both"
) -> Any:
    """Instantiate `config` (any family: `models.MODEL_CLASSES`) and load the canonical state dict
    strictly (every key, every shape).

    The model takes over the state dict's tensors (fp32, contiguous) instead of copying them into
    freshly initialised parameters: it is built on the meta device, so loading holds one copy of
    the weights in memory, not two, and skips a random initialisation that would be overwritten.
    With `towers` "image" or "text" the state dict is still checked whole, then only that tower's
    tensors are kept (the other tower's may be unread "meta" tensors: they are dropped).
    """
    check_config(canonical_state_dict, config)
    with torch.device("meta"):
        model = model_class(config)(config, towers=towers)
    wanted = model.state_dict().keys()
    unread = [k for k, v in canonical_state_dict.items() if v.device.type == "meta" and k in wanted]
    if unread:
        raise InvalidInputError(f"{source}: tensors of the {towers} tower were not read: {unread[:5]}")
    state = {k: (v.float() if v.is_floating_point() else v).contiguous()
             for k, v in canonical_state_dict.items() if towers == "both" or k in wanted}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise InvalidInputError(f"{source}: checkpoint keys do not match the model: missing {missing}, unexpected {unexpected}")
    return model


def build_text_encoder(
    text: TextConfig, embed_dim: Optional[int], activation: str, canonical_state_dict: dict[str, torch.Tensor],
    source: str, dtype: Optional[torch.dtype] = None,
) -> CausalTextTransformer:
    """A text-only CLIP encoder (Stable Diffusion's) from canonical text tensors, strictly: every key,
    every shape. Built on the meta device and handed the tensors (one copy in memory)."""
    with torch.device("meta"):
        model = CausalTextTransformer(text, embed_dim, activation, 1e-5)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in canonical_state_dict.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))[:10]
        extra = sorted(set(got) - set(expected))[:10]
        shapes = [k for k in expected if k in got and expected[k] != got[k]][:5]
        raise CheckpointError(f"{source}: text encoder tensors do not match {text}: missing {missing}, "
                              f"unexpected {extra}, shapes differ for {shapes}")
    check_weights(canonical_state_dict, source)
    target = dtype or torch.float32
    state = {k: v.to(target).contiguous() for k, v in canonical_state_dict.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


# ---- the three ways in -----------------------------------------------------------------------------


def _is_architecture(name: str) -> bool:
    return name in model_zoo.ARCHITECTURES or name in model_zoo.OPENAI_MODEL_NAMES


RANDOM_WEIGHTS = "none"  # weights="none": a randomly initialised model, asked for on purpose


def _load_named(
    name: str, tag: Optional[str], *, cache_dir: Optional[Union[str, Path]], offline: Optional[bool],
    allow_nonfinite: bool = False, tower: Towers = "both",
) -> tuple[Any, ModelRecord]:
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
        record = ModelRecord.default(config)
        return model_class(config)(config, towers=tower), record.replace(provenance=Provenance("random", architecture_name=name))
    weights = model_zoo.get_weights(name, tag)
    # The tag decides the activation (open_clip's convention: "ViT-B-32" + "openai" is the QuickGELU twin);
    # explicitly asking for the other activation is a mismatch, not something to override silently.
    if name.endswith("-quickgelu") and weights.activation != "quick_gelu":
        raise ConfigMismatchError(
            f"weights {tag!r} for {_base_name(name)} were trained with {weights.activation}, not QuickGELU; "
            f"use arch {weights.arch!r}"
        )
    config = model_zoo.get_architecture(weights.arch)
    path = hub_cache.resolve_weights_file(weights, cache_dir=cache_dir, offline=offline)
    checkpoint = read_checkpoint(path, tower=tower)
    model = _model_from_checkpoint(checkpoint, config, source=f"{weights.arch} ({tag}) from {path}",
                                   allow_nonfinite=allow_nonfinite, tower=tower)
    return model, _zoo_record(weights, config, checkpoint.format, str(path))


def _zoo_record(weights: "model_zoo.WeightsRecord", config: ClipConfig, source_format: str, source: str) -> ModelRecord:
    return ModelRecord(
        architecture=config,
        preprocess=weights.preprocess,
        tokenizer=TokenizerConfig(context_length=config.text.context_length, pad_token_id=weights.pad_token_id),
        provenance=Provenance(source_format, source, weights.sha256, weights.tag, weights.arch),
    )


def _load_hub_id(
    hub_id: str, arch: Union[str, ClipConfig, None], *, offline: Optional[bool], allow_nonfinite: bool = False,
    tower: Towers = "both",
) -> tuple[Any, ModelRecord]:
    from clipforge import hub_cache

    weights = model_zoo.lookup_hf_hub_id(hub_id)
    try:
        directory = hub_cache.resolve_hf_repo_dir(hub_id, offline=offline)
    except hub_cache.WeightsNotFoundError as e:
        if weights is not None:
            raise
        # Not a repo clipforge knows and not in the cache: maybe a typo of one it knows.
        raise hub_cache.WeightsNotFoundError(
            f"no such model known: {hub_id!r} is not a hub id clipforge knows and it is not in the Hugging Face "
            f"cache; {model_zoo.suggest_names(hub_id)}\n{e}"
        ) from None
    if weights is None:
        return _load_path(directory, arch, allow_nonfinite, source=hub_id, tower=tower)
    checkpoint = read_checkpoint(directory, tower=tower)
    config = model_zoo.get_architecture(arch) if isinstance(arch, str) else arch
    model = _model_from_checkpoint(checkpoint, config, source=f"{hub_id} ({directory})", allow_nonfinite=allow_nonfinite,
                                   tower=tower)
    record = _zoo_record(weights, model.config, checkpoint.format, hub_id)
    # What the repo's own files say wins over the zoo's entry (they are what transformers reads).
    if checkpoint.preprocess is not None:
        record = record.replace(preprocess=checkpoint.preprocess)
    if checkpoint.pad_token_id is not None:
        record = record.replace(tokenizer=dataclasses.replace(record.tokenizer, pad_token_id=checkpoint.pad_token_id))
    return model, record


def _load_named_model(
    entry: "model_zoo.NamedModel", arch: Union[str, ClipConfig, None], *, offline: Optional[bool],
    allow_nonfinite: bool = False, tower: Towers = "both",
) -> tuple[Any, ModelRecord]:
    """A NAMED_MODELS entry: its hub repo's own files, which must hold the entry's family and image tower."""
    model, record = _load_hub_id(entry.hf_hub_id, arch, offline=offline, allow_nonfinite=allow_nonfinite, tower=tower)
    want = entry.architecture
    if model.config.family != want.family or model.config.vision != want.vision:
        raise ConfigMismatchError(
            f"{entry.name}: the files of {entry.hf_hub_id} hold a {model.config.family} model with image tower "
            f"{model.config.vision}, not the {want.family} {want.vision} this name stands for"
        )
    return model, record


def _load_path(
    path: Path, arch: Union[str, ClipConfig, None], allow_nonfinite: bool = False, source: Optional[str] = None,
    preprocess: Optional[PreprocessConfig] = None, tower: Towers = "both",
) -> tuple[Any, ModelRecord]:
    checkpoint = read_checkpoint(path, tower=tower)
    requested = model_zoo.get_architecture(arch) if isinstance(arch, str) else arch
    # Every file is read and checked before the model is built.
    model = _model_from_checkpoint(checkpoint, requested, source=str(path), allow_nonfinite=allow_nonfinite, tower=tower)
    return model, _file_record(checkpoint, model.config, requested is not None, source or str(path), preprocess)


def _file_record(
    checkpoint: Checkpoint, config: Any, arch_given: bool, source: str,
    preprocess_override: Optional[PreprocessConfig] = None,
) -> ModelRecord:
    """The record of a file: stored whole (clipforge), in pieces (transformers, open_clip), or the
    documented defaults of its family, with a warning for each thing assumed rather than read."""
    if checkpoint.record is not None:
        record = checkpoint.record.replace(architecture=config)
        return record.replace(preprocess=preprocess_override) if preprocess_override else record
    assumed, pins = [], []
    is_clip = isinstance(config, ClipConfig)
    declared = arch_given or declared_config(checkpoint) is not None
    # OpenAI's own release archives (TorchScript) are OpenAI's numerics by definition.
    if is_clip and not (checkpoint.torchscript or declared):
        base = _base_name(model_zoo.architecture_name(config) or "<architecture>")
        assumed.append(f"the {'QuickGELU' if config.activation == 'quick_gelu' else 'GELU'} activation")
        pins.append(f"arch={base!r} (GELU) or arch={base + '-quickgelu'!r} (QuickGELU)")
    elif not is_clip and not declared:
        assumed.append(f"the {config.family} defaults for what tensor shapes do not show (activations, heads)")
        pins.append("arch=<a config of the right family>")
    preprocess = preprocess_override or checkpoint.preprocess
    if preprocess is None:
        default = config.default_preprocess()
        if not checkpoint.torchscript:
            assumed.append("OpenAI's image mean/std and bicubic resizing" if is_clip
                           else f"{config.family}'s usual preprocessing ({default.resize_mode} resize, mean {default.mean})")
            pins.append("preprocess=PreprocessConfig(mean=..., std=..., interpolation=...)")
        preprocess = dataclasses.replace(default, mode="hf" if checkpoint.format == "hf" else "openai")
    if assumed:
        warnings.warn(
            f"{source}: the file does not say which numerics its model needs; assuming {' and '.join(assumed)}"
            f"{', as OpenAI' + chr(39) + 's own weights use' if is_clip else ''}. Pin them with {' and '.join(pins)}; "
            "clipforge.save keeps them with the weights.",
            AssumptionWarning, stacklevel=4,
        )
    if is_clip:
        tokenizer = TokenizerConfig(context_length=config.text.context_length,
                                    pad_token_id=checkpoint.pad_token_id if checkpoint.pad_token_id is not None else 0)
    else:
        # Padded to the text tower's own length: SigLIP reads the last position, so the padding must
        # reach exactly where training put it.
        tokenizer = (checkpoint.tokenizer or config.default_tokenizer()).replace(context_length=config.text.context_length)
    provenance = Provenance(checkpoint.format, source, architecture_name=model_zoo.architecture_name(config))
    return ModelRecord(config, preprocess, tokenizer, provenance)


def _model_from_checkpoint(
    checkpoint: Checkpoint, requested: Optional[Any], source: str, allow_nonfinite: bool = False,
    tower: Towers = "both",
) -> Any:
    try:
        if requested is not None and requested.family != checkpoint.family:
            raise ConfigMismatchError(f"{source}: the file holds a {checkpoint.family} model, the requested "
                                      f"architecture is {requested.family}")
        canonical = to_canonical(checkpoint.state_dict, checkpoint.format, family=checkpoint.family)
        # The config a file states about itself (clipforge metadata, open_clip_config.json or a
        # transformers config.json), refused if not sane; it is checked against the tensors
        # (layer counts first, then every shape) before any model is built.
        declared = declared_config(checkpoint)
        if requested is not None and declared is not None:
            _check_same_numerics(requested, declared, source)
        config = requested or declared or infer_config(canonical, family=checkpoint.family)
        check_config(canonical, config)
        check_weights(canonical, source, allow_nonfinite=allow_nonfinite)
    except CheckpointError as exc:
        if checkpoint.source in str(exc) or source in str(exc):
            raise
        raise type(exc)(f"{source}: {exc}") from None
    return build_model(config, canonical, source, towers=tower)


def _check_same_numerics(requested: Any, declared: Any, source: str) -> None:
    if type(requested) is not type(declared):
        raise ConfigMismatchError(f"{source}: the file declares a {declared.family} model, the requested arch is "
                                  f"{requested.family}")
    if not isinstance(requested, ClipConfig):
        if requested != declared:
            raise ConfigMismatchError(f"{source}: the file declares {declared}, which differs from the requested {requested}")
        return
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



def _base_name(name: str) -> str:
    return name.removesuffix("-quickgelu")
