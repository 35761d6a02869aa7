"""`TrainConfig`: every knob of a training run, in four frozen sections, loadable from TOML or JSON.

    [model]   what is trained: an architecture from scratch, or `init` (a loaded model) to fine-tune
    [data]    where pairs come from and how they are sampled; [data.augment] how images are varied
    [optim]   batch, schedule, optimizer, precision, loss
    [run]     seed, outputs, checkpoints, evaluation cadence, logging, device

One typed object is passed around instead of an argparse namespace: the loop reads the fields it
needs, a run writes `to_dict()` beside its checkpoints (`out_dir/config.json`, the resolved config),
and `clipforge train CONFIG.toml --set optim.lr=1e-4` is `load_config(path, overrides)`. In
overrides a field name alone is enough when only one section has it (`--set lr=1e-4`). Unknown keys
are errors with a suggestion, never ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

from clipforge.errors import ClipforgeError

Precision = Literal["fp32", "bf16", "fp16"]
LossKind = Literal["clip", "siglip"]
Freeze = Literal["image", "text"]

__all__ = [
    "TrainConfig", "ModelSection", "DataSection", "AugmentSection", "OptimSection", "RunSection",
    "ConfigError", "load_config", "apply_overrides", "parse_override", "nest_fields", "resolve_key",
]


class ConfigError(ClipforgeError, ValueError):
    """A training config that cannot be used: an unknown key, a value out of range, a contradiction."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class ModelSection:
    """Exactly one of `architecture` (train from scratch) or `init` (fine-tune a loaded model)."""

    architecture: Union[str, dict, None] = None  # named architecture ("ViT-B-32") or a ClipConfig dict
    init: Optional[str] = None  # anything clipforge.load takes: path, named arch (+ init_weights), hub id
    init_weights: Optional[str] = None  # weights tag when `init` is a named architecture ("openai")
    init_arch: Optional[str] = None  # arch of an `init` file that does not say
    freeze: Optional[Freeze] = None  # LiT: "image" locks the image tower, "text" the text tower
    wise_ft_alpha: Optional[float] = None  # WiSE-FT: final = (1 - a) * init + a * fine-tuned

    def __post_init__(self) -> None:
        _check((self.architecture is None) != (self.init is None),
               "set exactly one of model.architecture (train from scratch) or model.init (fine-tune a loaded model)")
        _check(self.freeze in (None, "image", "text"), f"model.freeze must be 'image', 'text' or unset, got {self.freeze!r}")
        if self.wise_ft_alpha is not None:
            _check(self.init is not None, "model.wise_ft_alpha needs model.init: WiSE-FT mixes the initial and the fine-tuned weights")
            _check(0.0 <= self.wise_ft_alpha <= 1.0, f"model.wise_ft_alpha must be in [0, 1], got {self.wise_ft_alpha}")


@dataclass(frozen=True)
class AugmentSection:
    """Training-time image augmentation (train/augment.py). Defaults are open_clip's training transform;
    the style augmentations are off unless set."""

    image_size: Optional[int] = None  # default: the model's; must equal it for a ViT
    crop_scale: tuple[float, float] = (0.9, 1.0)  # RandomResizedCrop area fraction
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop aspect ratio range
    hflip: bool = False  # off by default: captions say "left" and "right"
    stroke_p: float = 0.0  # chance of thickening or thinning dark lines (3x3 min/max filter)
    background_p: float = 0.0  # chance of replacing the near-white backdrop by a random colour or gradient
    color_jitter: float = 0.0  # brightness/contrast/saturation factors drawn from [1 - j, 1 + j]
    hue_jitter: float = 0.0  # hue turned by up to +-this fraction of the colour wheel
    grayscale_p: float = 0.0  # chance of converting to greyscale
    outline_p: float = 0.0  # chance of turning the drawing into black line art (its edges)
    silhouette_p: float = 0.0  # chance of filling the drawing with one random colour (a flat silhouette)

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        _check(0.0 < lo <= hi <= 1.0, f"data.augment.crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")


@dataclass(frozen=True)
class DataSection:
    # CSV/TSV/JSONL file of pairs, or WebDataset shards: "shards/{00000..00031}.tar", a directory of
    # .tar files, a glob, or several of those joined with "::" (clipforge.sources).
    train: Optional[str] = None
    format: Literal["auto", "csv", "jsonl", "webdataset"] = "auto"
    image_root: Optional[str] = None  # folder for relative image paths (default: the table's folder)
    csv_separator: Optional[str] = None  # default: tab for .tsv, comma otherwise
    caption_column: Optional[str] = None  # default: caption|text; a JSONL list of captions draws one per epoch
    balance_by: Optional[str] = None  # a column (e.g. "label"): draw each epoch with weights count(value) ** -power
    balance_power: float = 1.0  # 1: every value equally often; 0.5: square-root balancing
    num_samples: Optional[int] = None  # WebDataset samples per epoch (default: count the shards)
    resampled: bool = False  # WebDataset: draw shards with replacement (open_clip's --dataset-resampled)
    shuffle_buffer: int = 1000  # WebDataset: seeded sample shuffle buffer per stream (0 = off)
    workers: int = 2  # DataLoader worker processes per rank (0 = load in the training process)
    max_logged_bad_samples: int = 20  # bad samples are always counted; only the first N are logged
    val: Optional[str] = None  # split table for clipforge.evaluation.evaluate
    classes: Optional[str] = None  # classes JSON for zero-shot evaluation
    augment: AugmentSection = field(default_factory=AugmentSection)

    def __post_init__(self) -> None:
        _check(self.train is not None, "data.train is required (a CSV/JSONL file or WebDataset shards)")
        _check(self.format in ("auto", "csv", "jsonl", "webdataset"),
               f"data.format must be auto, csv, jsonl or webdataset, got {self.format!r}")
        _check(self.balance_power >= 0, f"data.balance_power must be >= 0, got {self.balance_power}")
        _check(self.workers >= 0, f"data.workers must be >= 0, got {self.workers}")


@dataclass(frozen=True)
class OptimSection:
    batch_size: int = 64  # per process and per micro-batch; global batch = batch_size * accum_steps * world
    accum_steps: int = 1  # micro-batches per optimizer step, with contrastive semantics (open_clip's accum_freq)
    epochs: int = 1
    max_steps: Optional[int] = None  # stop after this many optimizer steps (overrides epochs)
    lr: float = 5e-4
    min_lr: float = 0.0
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip_norm: Optional[float] = None
    precision: Precision = "fp32"  # bf16/fp16: autocast with fp32 master weights (GradScaler for fp16)
    grad_checkpointing: bool = False
    # "clip": symmetric InfoNCE; "siglip": sigmoid loss with a learned bias; None: the model's own
    # (`model.loss_kind`: SigLIP's sigmoid for SigLIP / SigLIP 2, CLIP's softmax for every other family)
    loss: Optional[LossKind] = None
    local_loss: bool = True  # distributed: each rank's rows against all columns (same gradients, less memory)
    siglip_init_logit_scale: float = math.log(10.0)  # SigLIP paper: t' = log 10 (from-scratch runs only)
    siglip_init_logit_bias: float = -10.0

    def __post_init__(self) -> None:
        for name in ("batch_size", "accum_steps", "epochs"):
            _check(getattr(self, name) >= 1, f"optim.{name} must be >= 1, got {getattr(self, name)}")
        _check(self.max_steps is None or self.max_steps >= 1, f"optim.max_steps must be >= 1, got {self.max_steps}")
        _check(self.precision in ("fp32", "bf16", "fp16"), f"optim.precision must be fp32, bf16 or fp16, got {self.precision!r}")
        _check(self.loss in (None, "clip", "siglip"), f"optim.loss must be 'clip' or 'siglip' (or unset: the model's), got {self.loss!r}")
        _check(self.lr_schedule in ("cosine", "constant"), f"optim.lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")


@dataclass(frozen=True)
class RunSection:
    seed: int = 0
    out_dir: str = "runs/clipforge"
    save_every_steps: int = 0  # 0: checkpoint at the end of each epoch only
    keep_checkpoints: int = 2  # keep the newest N checkpoints
    resume: Optional[str] = "auto"  # "auto": latest checkpoint in out_dir, None: start fresh, or a path
    eval_every_steps: int = 0  # 0: evaluate only at the end (when data.val is set)
    eval_batch_size: int = 64
    log_every_steps: int = 1
    progress: bool = True  # tqdm bar on rank 0
    tensorboard: bool = False  # also write TensorBoard events (only if tensorboard is installed)
    plot: bool = True  # write out_dir/curves.png at the end (only if matplotlib is installed)
    device: Optional[str] = None  # default: cuda:LOCAL_RANK when available, else cpu

    def __post_init__(self) -> None:
        for name in ("keep_checkpoints", "log_every_steps"):
            _check(getattr(self, name) >= 1, f"run.{name} must be >= 1, got {getattr(self, name)}")


_SECTIONS: dict[str, type] = {"model": ModelSection, "data": DataSection, "optim": OptimSection, "run": RunSection}
_NESTED: dict[tuple[str, str], type] = {("data", "augment"): AugmentSection}
_TUPLES = {"crop_scale", "crop_ratio"}  # TOML/JSON arrays -> tuples (frozen, hashable)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSection
    data: DataSection
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)

    def replace(self, **sections: Any) -> "TrainConfig":
        """A copy with some fields changed: `config.replace(optim={"lr": 1e-4}, run={"out_dir": "b"})`."""
        changed = {}
        for name, changes in sections.items():
            _check(name in _SECTIONS, f"no section {name!r} (sections: {', '.join(_SECTIONS)})")
            changed[name] = dataclasses.replace(getattr(self, name), **changes)
        return dataclasses.replace(self, **changed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        _unknown(d, list(_SECTIONS), "section", "")
        _check("model" in d and "data" in d, "a training config needs a [model] and a [data] section")
        return cls(**{name: _section(section_type, dict(d[name]), name) for name, section_type in _SECTIONS.items() if name in d})


def _unknown(d: dict[str, Any], names: Sequence[str], what: str, where: str) -> None:
    unknown = [k for k in d if k not in names]
    if not unknown:
        return
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, names, n=1)
        owner = [f"{s}.{k}" for s, t in _all_sections() if k in {f.name for f in dataclasses.fields(t)}]
        hint = f" (did you mean {close[0]!r}?)" if close else (f" (it belongs in {owner[0]})" if owner else "")
        hints.append(f"{where}{k}{hint}")
    raise ConfigError(f"unknown {what}(s) in the training config: {', '.join(hints)}")


def _all_sections() -> list[tuple[str, type]]:
    return list(_SECTIONS.items()) + [(f"{a}.{b}", t) for (a, b), t in _NESTED.items()]


def _section(section_type: type, values: dict[str, Any], name: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"[{name}] must be a table of fields, got {type(values).__name__}")
    names = [f.name for f in dataclasses.fields(section_type)]
    _unknown(values, names, "field", f"{name}.")
    for key in list(values):
        nested = _NESTED.get((name, key))
        if nested is not None and isinstance(values[key], dict):
            values[key] = _section(nested, dict(values[key]), f"{name}.{key}")
        elif key in _TUPLES and values[key] is not None:
            values[key] = tuple(float(v) for v in values[key])
    try:
        return section_type(**values)
    except TypeError as e:
        raise ConfigError(f"[{name}]: {e}") from None


def resolve_key(key: str) -> str:
    """The dotted path of a config key: a dotted key is a path already; a bare name is the one field
    of that name in any section (`lr` -> `optim.lr`); an ambiguous or unknown bare name is an error."""
    if "." in key:
        return key
    paths = [f"{section}.{f.name}" for section, t in _all_sections() for f in dataclasses.fields(t)
             if f.name == key and (section, f.name) not in _NESTED]
    if len(paths) == 1:
        return paths[0]
    if paths:
        raise ConfigError(f"{key!r} is ambiguous: use one of {', '.join(paths)}")
    names = sorted({f.name for section, t in _all_sections() for f in dataclasses.fields(t) if (section, f.name) not in _NESTED})
    close = difflib.get_close_matches(key, names, n=1)
    raise ConfigError(f"{key!r} is not a training config field" + (f" (did you mean {close[0]!r}?)" if close else ""))


def nest_fields(flat: dict[str, Any]) -> dict[str, Any]:
    """{"lr": 1e-4, "data.train": "x.csv", "hflip": True} -> {"optim": {"lr": 1e-4}, "data": {...}}
    (keys resolved with `resolve_key`): build a config from plain keyword arguments."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        _set_path(nested, resolve_key(key), value)
    return nested


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        if not isinstance(data.get(part), dict):
            data[part] = {}
        data = data[part]
    data[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' -> (key, value). The value is read as TOML ('3', '1e-4', 'true', '"x"', '[0.8, 1.0]');
    anything TOML does not accept is taken as a plain string (so `--set run.out_dir=runs/a` works)."""
    tomllib = _toml()
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if raw.lower() in ("none", "null"):
        return key, None
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply 'key=value' overrides: dotted keys are paths (`model.architecture.vision.width=64`), bare
    names go to the one section that has them (`lr=1e-4` is `optim.lr`)."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for text in overrides:
        key, value = parse_override(text)
        _set_path(data, resolve_key(key), value)
    return data


def load_config(path: Union[str, Path, None] = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a TrainConfig from a TOML (`.toml`) or JSON file, then apply `key=value` overrides.

    Relative paths in the file (data.train, data.val, data.classes, data.image_root, model.init,
    run.out_dir) stay as written, i.e. relative to the working directory, as with any command-line tool.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the config ({e.strerror or e})") from None
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else _toml().loads(text)
        except ValueError as e:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
            raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {e}") from None
    return TrainConfig.from_dict(apply_overrides(data, overrides))


def _toml() -> Any:
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib
