"""Frozen dataclass configs: everything that decides a CLIP model's shape and numerics.

A config is plain data. `ClipConfig` describes one model (towers + joint space + numerics);
`PreprocessConfig` describes how pixels are prepared for it. Both travel with the weights
(see `model_zoo.py`) so that a mismatch, e.g. QuickGELU weights run with GELU, is caught
instead of silently costing accuracy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from clipforge.errors import InvalidInputError

Activation = Literal["quick_gelu", "gelu"]

# OpenAI's normalization constants, shared by OpenAI and LAION weights.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionTransformerConfig:
    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def mlp_width(self) -> int:
        # open_clip computes int(width * mlp_ratio): ViT-g-14 (4.3637) and bigG (4.9231) rely on it.
        return int(self.width * self.mlp_ratio)


@dataclass(frozen=True)
class ResNetConfig:
    """OpenAI's modified ResNet: 3-conv stem, anti-aliased strides, attention pooling."""

    image_size: int = 224
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    heads: int = 32  # attention-pool heads; OpenAI uses width * 32 // 64

    @property
    def output_width(self) -> int:
        return self.width * 32  # channels after the last stage (expansion 4, width*8*4)


@dataclass(frozen=True)
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    # Special tokens of the weights' tokenizer. Pooling happens at the first eot_token_id;
    # for CLIP's vocabulary that equals OpenAI's argmax (49407 is the largest id).
    sot_token_id: int = 49406
    eot_token_id: int = 49407
    pad_token_id: int = 0

    @property
    def mlp_width(self) -> int:
        return int(self.width * self.mlp_ratio)


@dataclass(frozen=True)
class ClipConfig:
    embed_dim: int = 512
    vision: Union[VisionTransformerConfig, ResNetConfig] = field(default_factory=VisionTransformerConfig)
    text: TextConfig = field(default_factory=TextConfig)
    activation: Activation = "quick_gelu"
    layer_norm_eps: float = 1e-5
    # Initial temperature: logit_scale = log(1 / 0.07), as in the paper.
    init_logit_scale: float = 2.6592600929051215
    # The references clamp exp(logit_scale) at 100 (in training, after each step).
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        if self.activation not in ("quick_gelu", "gelu"):
            raise InvalidInputError(f"activation must be 'quick_gelu' or 'gelu', got {self.activation!r}")

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    def replace(self, **changes: Any) -> "ClipConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["vision"]["kind"] = "resnet" if isinstance(self.vision, ResNetConfig) else "vit"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClipConfig":
        d = dict(d)
        vision = dict(d.pop("vision"))
        kind = vision.pop("kind", "resnet" if "patch_size" not in vision else "vit")
        if kind == "resnet":
            vision["layers"] = tuple(vision["layers"])
            vision_cfg: Union[VisionTransformerConfig, ResNetConfig] = ResNetConfig(**vision)
        else:
            vision_cfg = VisionTransformerConfig(**vision)
        return cls(vision=vision_cfg, text=TextConfig(**d.pop("text")), **d)


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the model's input tensor (OpenAI's pipeline by default)."""

    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    # "openai": torchvision Resize(shortest side) + CenterCrop(round) + RGB after resize, as clip/open_clip.
    # "hf": transformers' CLIPImageProcessor (RGB first, floor crop offsets).
    mode: Literal["openai", "hf"] = "openai"


@dataclass(frozen=True)
class TokenizerConfig:
    """How text becomes the model's token ids."""

    kind: Literal["clip_bpe"] = "clip_bpe"  # OpenAI's byte-level BPE with ftfy + whitespace cleaning, lower case
    context_length: int = 77
    # What follows the end token: 0 (OpenAI, open_clip, LAION's transformers repos) or the end token
    # 49407 (OpenAI's transformers repos). Pooling reads the first end token, so CLIP's embeddings do
    # not depend on it; per-token hidden states (Stable Diffusion conditioning) do.
    pad_token_id: int = 0


@dataclass(frozen=True)
class Provenance:
    """Where the weights came from: what a record says about its own origin (not needed to run)."""

    source_format: str = "unknown"  # "openai", "open_clip", "hf", "clipforge", "sd-single-file", ...
    source: Optional[str] = None  # the path or hub id read
    sha256: Optional[str] = None  # of the weights file, when known (published, or recorded when written)
    weights_tag: Optional[str] = None  # the named weights ("openai", "laion2b_s34b_b79k")
    architecture_name: Optional[str] = None  # the named architecture, when there is one


@dataclass(frozen=True)
class ModelRecord:
    """Everything numerical that travels with a model's weights: the architecture (activation,
    LayerNorm eps, shapes), the preprocessing, the tokenizer, and where the weights came from.

    `clipforge.load` builds the model, its Preprocess and its Tokenizer from one record; every
    format that has room stores it (docs/checkpoints.md), so a model comes back from disk exactly
    as it went in.
    """

    architecture: ClipConfig
    preprocess: PreprocessConfig
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    provenance: Provenance = field(default_factory=Provenance)

    @classmethod
    def default(cls, architecture: ClipConfig) -> "ModelRecord":
        """The documented default numerics for an architecture that states nothing else: OpenAI's
        preprocessing at its image size, its context length, padding with 0."""
        return cls(architecture, PreprocessConfig(image_size=architecture.image_size),
                   TokenizerConfig(context_length=architecture.text.context_length))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["architecture"] = self.architecture.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelRecord":
        preprocess = dict(d["preprocess"])
        for key in ("mean", "std"):
            preprocess[key] = tuple(float(v) for v in preprocess[key])
        return cls(
            architecture=ClipConfig.from_dict(d["architecture"]),
            preprocess=PreprocessConfig(**preprocess),
            tokenizer=TokenizerConfig(**d.get("tokenizer", {})),
            provenance=Provenance(**d.get("provenance", {})),
        )

    def replace(self, **changes: Any) -> "ModelRecord":
        return dataclasses.replace(self, **changes)
