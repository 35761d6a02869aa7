"""`TrainConfig`: every knob of a training run in one frozen dataclass, loadable from TOML or JSON.

One typed object is passed around instead of an argparse namespace: the loop reads the fields it
needs, a checkpoint stores `to_dict()`, and `clipforge train CONFIG.toml --set key=value` is just
`load_config(path, overrides)`. Unknown keys are errors (with a suggestion), never ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

Precision = Literal["fp32", "bf16", "fp16"]
LossKind = Literal["clip", "siglip"]
Freeze = Literal["image", "text"]


@dataclass(frozen=True)
class TrainConfig:
    # ---- model: exactly one of `model` (train from scratch) or `init` (fine-tune) ----------------
    model: Union[str, dict, None] = None  # named architecture ("ViT-B-32") or a ClipConfig dict
    init: Optional[str] = None  # anything clipforge.load takes: path, named arch (+ init_weights), hub id
    init_weights: Optional[str] = None  # weights tag when `init` is a named architecture ("openai")
    init_arch: Optional[str] = None  # arch of an `init` file that does not say

    # ---- data ------------------------------------------------------------------------------------
    # CSV/TSV/JSONL file of pairs, or WebDataset shards: "shards/{00000..00031}.tar", a directory of
    # .tar files, a glob, or several of those joined with "::".
    train_data: Optional[str] = None
    data_format: Literal["auto", "csv", "jsonl", "webdataset"] = "auto"
    image_root: Optional[str] = None  # folder for relative image paths (default: the CSV/JSONL's folder)
    csv_separator: Optional[str] = None  # default: tab for .tsv, comma otherwise
    train_num_samples: Optional[int] = None  # WebDataset samples per epoch (default: count the shards)
    dataset_resampled: bool = False  # WebDataset: draw shards with replacement (open_clip's --dataset-resampled)
    shuffle_buffer: int = 1000  # WebDataset: seeded sample shuffle buffer per stream (0 = off)
    workers: int = 2  # DataLoader worker processes per rank (0 = load in the training process)
    caption_column: Optional[str] = None  # default: caption|text; a JSONL list of captions draws one per epoch
    balance_by: Optional[str] = None  # a column (e.g. "label"): draw each epoch with weights count(value) ** -power
    balance_power: float = 1.0  # 1: every value equally often; 0.5: square-root balancing
    max_logged_bad_samples: int = 20  # bad samples are always counted; only the first N are logged

    # ---- augmentation (open_clip's training defaults) ------------------------------------------
    image_size: Optional[int] = None  # default: the model's; must equal it for a ViT
    crop_scale: tuple[float, float] = (0.9, 1.0)  # RandomResizedCrop area fraction
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop aspect ratio range
    hflip: bool = False  # off by default: captions say "left" and "right"
    # Style augmentation, off by default (see train/augment.py): for small from-scratch runs on drawings.
    stroke_p: float = 0.0  # chance of thickening or thinning dark lines (3x3 min/max filter)
    background_p: float = 0.0  # chance of replacing the near-white backdrop by a random colour or gradient
    color_jitter: float = 0.0  # brightness/contrast/saturation factors drawn from [1 - j, 1 + j]
    hue_jitter: float = 0.0  # hue turned by up to +-this fraction of the colour wheel
    grayscale_p: float = 0.0  # chance of converting to greyscale
    outline_p: float = 0.0  # chance of turning the drawing into black line art (its edges)
    silhouette_p: float = 0.0  # chance of filling the drawing with one random colour (a flat silhouette)

    # ---- optimisation ----------------------------------------------------------------------------
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
    seed: int = 0

    # ---- loss ------------------------------------------------------------------------------------
    loss: LossKind = "clip"  # "clip": symmetric InfoNCE; "siglip": sigmoid loss with a learned bias
    local_loss: bool = True  # distributed: each rank's rows against all columns (same gradients, less memory)
    siglip_init_logit_scale: float = math.log(10.0)  # SigLIP paper: t' = log 10 (from-scratch runs only)
    siglip_init_logit_bias: float = -10.0

    # ---- fine-tuning -----------------------------------------------------------------------------
    freeze: Optional[Freeze] = None  # LiT: "image" locks the image tower, "text" the text tower
    wise_ft_alpha: Optional[float] = None  # WiSE-FT: final = (1 - a) * init + a * fine-tuned

    # ---- evaluation ------------------------------------------------------------------------------
    val_data: Optional[str] = None  # split JSONL for clipforge.evaluation.evaluate
    classes: Optional[str] = None  # classes JSON for zero-shot evaluation
    eval_every_steps: int = 0  # 0: evaluate only at the end (when val_data is set)
    eval_batch_size: int = 64

    # ---- output ----------------------------------------------------------------------------------
    out_dir: str = "runs/clipforge"
    save_every_steps: int = 0  # 0: checkpoint at the end of each epoch only
    keep_checkpoints: int = 2  # keep the newest N checkpoints
    resume: Optional[str] = "auto"  # "auto": latest checkpoint in out_dir, None: start fresh, or a path
    log_every_steps: int = 1
    progress: bool = True  # tqdm bar on rank 0
    tensorboard: bool = False  # also write TensorBoard events (only if tensorboard is installed)
    plot: bool = True  # write out_dir/curves.png at the end (only if matplotlib is installed)
    device: Optional[str] = None  # default: cuda:LOCAL_RANK when available, else cpu

    def __post_init__(self) -> None:
        if (self.model is None) == (self.init is None):
            raise ValueError("set exactly one of `model` (train from scratch) or `init` (fine-tune a loaded model)")
        if self.train_data is None:
            raise ValueError("`train_data` is required (a CSV/JSONL file or WebDataset shards)")
        for name in ("batch_size", "accum_steps", "epochs", "keep_checkpoints", "log_every_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.loss not in ("clip", "siglip"):
            raise ValueError(f"loss must be 'clip' or 'siglip', got {self.loss!r}")
        if self.freeze not in (None, "image", "text"):
            raise ValueError(f"freeze must be 'image', 'text' or unset, got {self.freeze!r}")
        if self.wise_ft_alpha is not None:
            if self.init is None:
                raise ValueError("wise_ft_alpha needs `init`: WiSE-FT mixes the initial and the fine-tuned weights")
            if not 0.0 <= self.wise_ft_alpha <= 1.0:
                raise ValueError(f"wise_ft_alpha must be in [0, 1], got {self.wise_ft_alpha}")
        if self.data_format not in ("auto", "csv", "jsonl", "webdataset"):
            raise ValueError(f"data_format must be auto, csv, jsonl or webdataset, got {self.data_format!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        if self.balance_power < 0:
            raise ValueError(f"balance_power must be >= 0, got {self.balance_power}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in d if k not in names]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, names, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(hints)}")
        d = dict(d)
        for key in ("crop_scale", "crop_ratio"):  # TOML/JSON arrays -> tuples (frozen, hashable)
            if key in d and d[key] is not None:
                d[key] = tuple(float(v) for v in d[key])
        return cls(**d)


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' -> (key, value). The value is read as TOML ('3', '1e-4', 'true', '"x"', '[0.8, 1.0]');
    anything TOML does not accept is taken as a plain string (so `--set out_dir=runs/a` works)."""
    tomllib = _toml()
    if "=" not in text:
        raise ValueError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if raw.lower() in ("none", "null"):
        return key, None
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply 'key=value' overrides; dotted keys reach into dict values (`model.vision.width=64`)."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        target = data
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[parts[-1]] = value
    return data


def load_config(path: Union[str, Path, None] = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a TrainConfig from a TOML (`.toml`) or JSON file, then apply `key=value` overrides.

    Relative paths in the file (train_data, val_data, classes, image_root, init, out_dir) stay as
    written, i.e. relative to the working directory, as with any command-line tool.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = _toml().loads(text)
    return TrainConfig.from_dict(apply_overrides(data, overrides))


def _toml() -> Any:
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib
