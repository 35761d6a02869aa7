"""Frozen dataclass configs: everything that decides a CLIP model's shape and numerics.

A config is plain data. `ClipConfig` describes one model (towers + joint space + numerics);
`PreprocessConfig` describes how pixels are prepared for it. Both travel with the weights
(see `model_zoo.py`) so that a mismatch, e.g. QuickGELU weights run with GELU, is caught
instead of silently costing accuracy.

More than one family: every CLIP family (OpenAI's CLIP, SigLIP, ...) has its own architecture
config class here, which says which family it is (`family`, a class attribute) and follows the
`ArchitectureConfig` protocol below. `ARCHITECTURE_CONFIGS` maps family names to those classes;
`architecture_to_dict` / `architecture_from_dict` round-trip any of them (the record stores the
family next to the fields). Adding a family: docs/families.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import hashlib
from typing import Any, ClassVar, Literal, Optional, Protocol, Union, runtime_checkable

from clipforge.errors import InvalidInputError

# "gelu_tanh" is GELU's tanh approximation (transformers' "gelu_pytorch_tanh", big_vision's nn.gelu).
Activation = Literal["quick_gelu", "gelu", "gelu_tanh"]

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


class _FamilyConfig:
    """What every family's architecture config shares (a mixin of the frozen dataclasses below, which
    all have `vision` and `text` sub-configs): the image size, `replace`, `to_dict`, OpenAI's
    preprocessing and BPE as defaults, and the family check of `from_dict`."""

    family: ClassVar[str]

    @property
    def image_size(self) -> int:
        return self.vision.image_size  # type: ignore[attr-defined]

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def default_preprocess(self) -> "PreprocessConfig":
        """OpenAI's preprocessing at this image size: what a file that states nothing is assumed to need."""
        return PreprocessConfig(image_size=self.image_size)

    def default_tokenizer(self) -> "TokenizerConfig":
        """OpenAI's BPE at this context length, padding with 0."""
        return TokenizerConfig(context_length=self.text.context_length)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def _own_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        """A copy of `d` without its "family", which must be this class's (absent: older records)."""
        d = dict(d)
        family = d.pop("family", cls.family)
        if family != cls.family:
            raise InvalidInputError(f"a {family!r} architecture is not a {cls.__name__}")
        return d


def _check_activation(activation: str, allowed: tuple[str, ...] = ("quick_gelu", "gelu")) -> None:
    if activation not in allowed:
        raise InvalidInputError(f"activation must be one of {allowed}, got {activation!r}")


@dataclass(frozen=True)
class ClipConfig(_FamilyConfig):
    """OpenAI's CLIP: a ViT or ModifiedResNet image tower, a causal text tower pooled at the end
    token, both projected into one space; softmax over the texts at a learned temperature."""

    family: ClassVar[str] = "clip"

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
        _check_activation(self.activation)

    def to_dict(self) -> dict[str, Any]:
        # No "family" key here: CLIP's dict is what model fingerprints (embed, index) have always stored.
        # `architecture_to_dict` adds it for records.
        d = dataclasses.asdict(self)
        d["vision"]["kind"] = "resnet" if isinstance(self.vision, ResNetConfig) else "vit"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClipConfig":
        d = cls._own_fields(d)
        vision = dict(d.pop("vision"))
        kind = vision.pop("kind", "resnet" if "patch_size" not in vision else "vit")
        if kind == "resnet":
            vision["layers"] = tuple(vision["layers"])
            vision_cfg: Union[VisionTransformerConfig, ResNetConfig] = ResNetConfig(**vision)
        else:
            vision_cfg = VisionTransformerConfig(**vision)
        return cls(vision=vision_cfg, text=TextConfig(**d.pop("text")), **d)


# ---- EVA-CLIP (open_clip's EVA02 models) ---------------------------------------------------------


@dataclass(frozen=True)
class EvaVisionConfig:
    """EVA-02's ViT (Fang et al. 2023), the image tower of open_clip's EVA02-* models (timm's
    `eva02_*_clip_*`): class token + learned absolute positions, 2D rotary position embeddings on the
    patch tokens of q and k, separate q/k/v projections (k without bias), a LayerNorm on the attention
    output before its projection, a SwiGLU MLP with a LayerNorm inside (sub-LN), LayerNorm eps 1e-6,
    a final LayerNorm, class-token pooling and a linear head (with bias) into the joint space."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_width: int = 2048  # each of SwiGLU's two input branches: int(width * 8 / 3) for EVA02
    rope_ref_grid: int = 16  # timm's ref_feat_shape: rope positions are scaled onto this grid
    rope_temperature: float = 10000.0
    layer_norm_eps: float = 1e-6

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class EvaClipConfig(_FamilyConfig):
    """open_clip's EVA02-CLIP (Sun et al. 2023): an EVA-02 image tower and open_clip's causal text
    tower (GELU, pooled at the end token), softmax over the texts at a learned temperature."""

    family: ClassVar[str] = "eva_clip"

    embed_dim: int = 512
    vision: EvaVisionConfig = field(default_factory=EvaVisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    activation: Activation = "gelu"  # the text tower's
    layer_norm_eps: float = 1e-5  # the text tower's
    init_logit_scale: float = 2.6592600929051215
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        _check_activation(self.activation)


    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvaClipConfig":
        d = cls._own_fields(d)
        return cls(vision=EvaVisionConfig(**d.pop("vision")), text=TextConfig(**d.pop("text")), **d)


# ---- MobileCLIP (open_clip's MobileCLIP-B / MobileCLIP2-B) ----------------------------------------


@dataclass(frozen=True)
class MobileClipVisionConfig:
    """MobileCLIP-B's image tower (Vasu et al. 2024, "MobileCLIP"; timm's `vit_base_mci_224`): a ViT
    whose patches come from a convolutional stem (4x4/4 conv + BatchNorm + GELU, 2x2/2 conv +
    BatchNorm + GELU, 2x2/2 conv: 16 pixels per token), learned positions on the patch tokens only
    (the class token is prepended after them), pre-norm GELU blocks with LayerNorm eps 1e-6, a final
    LayerNorm, class-token pooling and a linear head (with bias) into the joint space."""

    image_size: int = 224
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_width: int = 3072
    stem_width: int = 192  # channels of the stem's first two convs (width // 4)
    layer_norm_eps: float = 1e-6
    batch_norm_eps: float = 1e-5

    patch_size: ClassVar[int] = 16  # the stem's strides: 4 * 2 * 2

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class FastVitMciConfig:
    """FastViT-MCi (timm's `fastvit_mci0` .. `fastvit_mci4`), MobileCLIP-S*'s image tower: per stage its
    depth, width, MLP ratio, token mixer ("repmixer" or "attention"), whether it downsamples (a
    7x7/2 large-kernel conv) with squeeze-excite, and whether a conditional positional encoding
    precedes its blocks. See models/fastvit_mci.py."""

    image_size: int = 256
    layers: tuple[int, ...] = (2, 6, 10, 2)
    embed_dims: tuple[int, ...] = (64, 128, 256, 512)
    mlp_ratios: tuple[float, ...] = (3.0, 3.0, 3.0, 3.0)
    token_mixers: tuple[str, ...] = ("repmixer", "repmixer", "repmixer", "attention")
    downsamples: tuple[bool, ...] = (False, True, True, True)
    se_downsamples: tuple[bool, ...] = (False, False, True, True)
    pos_embs: tuple[bool, ...] = (False, False, False, True)
    attention_norm: Literal["batchnorm", "layernorm"] = "batchnorm"
    stem_scale_branch: bool = True
    lkc_use_act: bool = True
    repmixer_kernel_size: int = 3
    down_patch_size: int = 7
    down_stride: int = 2
    cls_ratio: float = 2.0

    @property
    def num_features(self) -> int:
        return int(self.embed_dims[-1] * self.cls_ratio)


_FASTVIT_TUPLES = ("layers", "embed_dims", "mlp_ratios", "token_mixers", "downsamples", "se_downsamples", "pos_embs")


@dataclass(frozen=True)
class MobileClipConfig(_FamilyConfig):
    """open_clip's MobileCLIP-B / MobileCLIP2-B: the conv-stem ViT above and open_clip's text tower,
    softmax over the texts at a learned temperature. `text_causal=False` is open_clip's
    `no_causal_mask` (the MobileCLIP S-variants' text towers): every token attends to every other,
    padding included, pooled at the end token."""

    family: ClassVar[str] = "mobileclip"

    embed_dim: int = 512
    # MobileCLIP-B's conv-stem ViT, or the S-variants' FastViT-MCi.
    vision: Union[MobileClipVisionConfig, FastVitMciConfig] = field(default_factory=MobileClipVisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    activation: Activation = "gelu"  # the text tower's
    layer_norm_eps: float = 1e-5  # the text tower's
    text_causal: bool = True
    init_logit_scale: float = 2.6592600929051215
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        _check_activation(self.activation)

    def default_preprocess(self) -> "PreprocessConfig":
        """MobileCLIP feeds pixels in [0, 1]: mean 0, std 1 (open_clip's pretrained cfg), bilinear."""
        return PreprocessConfig(image_size=self.image_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                                interpolation="bilinear")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["vision"]["kind"] = "fastvit_mci" if isinstance(self.vision, FastVitMciConfig) else "vit_mci"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MobileClipConfig":
        d = cls._own_fields(d)
        vision = dict(d.pop("vision"))
        kind = vision.pop("kind", "vit_mci")
        if kind == "fastvit_mci":
            vision.update({k: tuple(vision[k]) for k in _FASTVIT_TUPLES if k in vision})
            vision_cfg: Union[MobileClipVisionConfig, FastVitMciConfig] = FastVitMciConfig(**vision)
        elif kind == "vit_mci":
            vision_cfg = MobileClipVisionConfig(**vision)
        else:
            raise InvalidInputError(f"unknown MobileCLIP image tower kind {str(kind)[:40]!r}")
        return cls(vision=vision_cfg, text=TextConfig(**d.pop("text")), **d)


@dataclass(frozen=True)
class BertTextConfig:
    """A BERT-style text encoder (Devlin et al. 2019): post-LayerNorm blocks, bidirectional attention
    masked at padding, learned word + position + token-type embeddings. Chinese-CLIP's RoBERTa-wwm
    (BERT's layout) and XLM-RoBERTa (open_clip's multilingual tower) are both this."""

    vocab_size: int = 21128
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_width: int = 3072
    max_positions: int = 512  # rows of the position table
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    activation: Activation = "gelu"  # BERT's GELU is the exact (erf) one
    pad_token_id: int = 0
    context_length: int = 52  # what the tokenizer pads to (Chinese-CLIP trains at 52)
    # "absolute": position i is row i (BERT). "roberta": RoBERTa/XLM-R's ids, counting real tokens
    # from pad_token_id + 1, padding at pad_token_id (transformers' create_position_ids_from_input_ids).
    positions: Literal["absolute", "roberta"] = "absolute"
    # "first": the first token's last hidden state (Chinese-CLIP: [CLS], no BERT pooler).
    # "mean": the mean over non-padding tokens (open_clip's MeanPooler).
    pooling: Literal["first", "mean"] = "first"


@dataclass(frozen=True)
class ChineseClipConfig(_FamilyConfig):
    """Chinese-CLIP (Yang et al. 2022; transformers' ChineseCLIPModel): CLIP's ViT image tower, a
    Chinese RoBERTa-wwm text tower pooled at [CLS], both projected (no bias) into one space;
    softmax over texts at a learned temperature, as CLIP."""

    family: ClassVar[str] = "chinese_clip"

    embed_dim: int = 512
    vision: VisionTransformerConfig = field(default_factory=lambda: VisionTransformerConfig(patch_size=16))
    text: BertTextConfig = field(default_factory=BertTextConfig)
    vision_activation: Activation = "quick_gelu"  # OpenAI's ViT weights, which Chinese-CLIP starts from
    vision_layer_norm_eps: float = 1e-5
    max_logit_scale: float = 100.0  # exp(logit_scale) is clamped at it in training, as CLIP's

    def default_preprocess(self) -> "PreprocessConfig":
        # The released weights resize straight to a square (preprocessor_config.json: no crop).
        return PreprocessConfig(image_size=self.image_size, mode="hf", resize_mode="squash")

    def default_tokenizer(self) -> "TokenizerConfig":
        # The vocabulary (vocab.txt) must come with the weights: `model` stays None here.
        return TokenizerConfig(kind="wordpiece", context_length=self.text.context_length,
                               pad_token_id=self.text.pad_token_id, clean="lower", prompt_templates="chinese")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ChineseClipConfig":
        d = cls._own_fields(d)
        return cls(vision=VisionTransformerConfig(**d.pop("vision")), text=BertTextConfig(**d.pop("text")), **d)


@dataclass(frozen=True)
class XlmRobertaClipConfig(_FamilyConfig):
    """open_clip's multilingual CLIP (`xlm-roberta-base-ViT-B-32`, HFTextEncoder): CLIP's ViT image
    tower, an XLM-RoBERTa text tower mean-pooled over real tokens, then open_clip's "mlp" projection
    (Linear, exact GELU, Linear; no biases); softmax over texts at a learned temperature."""

    family: ClassVar[str] = "xlm_roberta_clip"

    embed_dim: int = 512
    vision: VisionTransformerConfig = field(default_factory=VisionTransformerConfig)
    text: BertTextConfig = field(default_factory=lambda: BertTextConfig(
        vocab_size=250002, max_positions=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
        context_length=77, positions="roberta", pooling="mean"))
    vision_activation: Activation = "gelu"  # open_clip's ViT-B-32 without QuickGELU
    vision_layer_norm_eps: float = 1e-5
    max_logit_scale: float = 100.0  # exp(logit_scale) is clamped at it in training, as CLIP's

    @property
    def projection_hidden(self) -> int:
        return (self.text.width + self.embed_dim) // 2  # open_clip's "mlp" proj width


    def default_tokenizer(self) -> "TokenizerConfig":
        # XLM-R's sentencepiece.bpe.model must come with the weights: `model` stays None here.
        return TokenizerConfig(kind="xlm_roberta", context_length=self.text.context_length, pad_token_id=1,
                               bos_token_id=0, eos_token_id=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "XlmRobertaClipConfig":
        d = cls._own_fields(d)
        return cls(vision=VisionTransformerConfig(**d.pop("vision")), text=BertTextConfig(**d.pop("text")), **d)


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
    # "shortest": resize the shortest side to image_size, then center-crop a square (CLIP).
    # "squash": resize to image_size x image_size, ignoring the aspect ratio, no crop (SigLIP:
    # transformers' SiglipImageProcessor, open_clip's resize_mode "squash"). Either `mode` applies
    # its own library's resize (torch tensors for "hf", PIL for "openai").
    resize_mode: Literal["shortest", "squash"] = "shortest"


TokenizerKind = Literal["clip_bpe", "sentencepiece", "wordpiece", "xlm_roberta"]
TOKENIZER_KINDS: tuple[str, ...] = ("clip_bpe", "sentencepiece", "wordpiece", "xlm_roberta")
TextClean = Literal["none", "lower", "canonicalize"]


@dataclass(frozen=True)
class TokenizerConfig:
    """How text becomes the model's token ids.

    kind "clip_bpe": OpenAI's byte-level BPE (clipforge's own, bundled vocabulary), ftfy + whitespace
    cleaning, lower case. kind "sentencepiece": a SentencePiece model (`model`, its file's bytes,
    which travel with the weights) run by the sentencepiece library after `clean`; `bos_token_id`
    before the text and `eos_token_id` after it (kept when a long text is truncated), then padding
    with `pad_token_id` to `context_length` (always: SigLIP pools at the last position, so the
    padding is part of what it reads). kind "wordpiece": BERT's WordPiece over `model` = vocab.txt's
    bytes (Chinese-CLIP), run by the tokenizers library; `clean` "lower" lower-cases and strips
    accents (do_lower_case), "none" keeps case; [CLS] ... [SEP], padded with [PAD]. kind "xlm_roberta":
    XLM-R's SentencePiece model (`model` = sentencepiece.bpe.model) with fairseq's ids; <s> ... </s>,
    padded with <pad> (1). Both pad to `context_length`; their models mask padding out.
    """

    kind: TokenizerKind = "clip_bpe"
    context_length: int = 77
    # What follows the end token: 0 (OpenAI, open_clip, LAION's transformers repos) or the end token
    # 49407 (OpenAI's transformers repos). Pooling reads the first end token, so CLIP's embeddings do
    # not depend on it; per-token hidden states (Stable Diffusion conditioning) do.
    pad_token_id: int = 0
    # --- kinds that run a tokenizer model file (sentencepiece) ---
    bos_token_id: Optional[int] = None  # put before the text (none for SigLIP and SigLIP 2)
    eos_token_id: Optional[int] = None  # put after the text, also when it is truncated
    # Text clean-up before tokenizing: "canonicalize" is big_vision's (lower case, ASCII punctuation
    # removed, whitespace runs collapsed, stripped; transformers' SiglipTokenizer); "lower" only lower-cases.
    clean: TextClean = "none"
    model_sha256: Optional[str] = None  # sha256 of `model`: what a record names when the bytes are elsewhere
    # The tokenizer model file itself (SentencePiece's serialized proto). Not part of `to_dict()`:
    # each format stores the bytes in its own way (docs/families.md) and `model_sha256` ties them to the record.
    model: Optional[bytes] = field(default=None, repr=False, compare=False)
    # The name of the prompt-template set (tasks.templates.TEMPLATE_SETS) zero-shot uses when none is
    # given: the language the text tower was trained in ("openai": OpenAI's English; "chinese").
    prompt_templates: str = "openai"

    def __post_init__(self) -> None:
        if self.kind not in TOKENIZER_KINDS:
            raise InvalidInputError(f"tokenizer kind must be one of {TOKENIZER_KINDS}, got {self.kind!r}")
        if self.clean not in ("none", "lower", "canonicalize"):
            raise InvalidInputError(f"tokenizer clean must be 'none', 'lower' or 'canonicalize', got {self.clean!r}")
        if self.model is not None:
            digest = hashlib.sha256(self.model).hexdigest()
            if self.model_sha256 is None:
                object.__setattr__(self, "model_sha256", digest)
            elif self.model_sha256 != digest:
                raise InvalidInputError(
                    f"the tokenizer model's bytes have sha256 {digest[:12]}..., the record names {self.model_sha256[:12]}..."
                )

    def replace(self, **changes: Any) -> "TokenizerConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field but the model bytes (`model_sha256` names them)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}

    @classmethod
    def from_dict(cls, d: dict[str, Any], model: Optional[bytes] = None) -> "TokenizerConfig":
        d = dict(d)
        d.pop("model", None)
        return cls(**d, model=model)


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

    architecture: "ArchitectureConfig"  # ClipConfig, SiglipConfig, ...: the family is its class
    preprocess: PreprocessConfig
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    provenance: Provenance = field(default_factory=Provenance)

    @classmethod
    def default(cls, architecture: "ArchitectureConfig") -> "ModelRecord":
        """The documented default numerics for an architecture that states nothing else: its family's
        (for CLIP: OpenAI's preprocessing at its image size, its context length, padding with 0)."""
        return cls(architecture, architecture.default_preprocess(), architecture.default_tokenizer())

    @property
    def family(self) -> str:
        return self.architecture.family

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the architecture with its "family", the tokenizer without its model bytes."""
        return {
            "architecture": architecture_to_dict(self.architecture),
            "preprocess": dataclasses.asdict(self.preprocess),
            "tokenizer": self.tokenizer.to_dict(),
            "provenance": dataclasses.asdict(self.provenance),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], tokenizer_model: Optional[bytes] = None) -> "ModelRecord":
        """The record of `to_dict()`; the architecture's class is chosen by its "family" (CLIP when
        absent: records written before families). `tokenizer_model`: the tokenizer file's bytes,
        stored apart from the record (checked against the record's `model_sha256`)."""
        preprocess = dict(d["preprocess"])
        for key in ("mean", "std"):
            preprocess[key] = tuple(float(v) for v in preprocess[key])
        return cls(
            architecture=architecture_from_dict(d["architecture"]),
            preprocess=PreprocessConfig(**preprocess),
            tokenizer=TokenizerConfig.from_dict(d.get("tokenizer", {}), model=tokenizer_model),
            provenance=Provenance(**d.get("provenance", {})),
        )

    def replace(self, **changes: Any) -> "ModelRecord":
        return dataclasses.replace(self, **changes)


# ---- SigLIP / SigLIP 2 ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SiglipVisionConfig:
    """SigLIP's image tower: a ViT without class token or pre-norm, a final LayerNorm, then a
    multihead attention-pool (MAP) head with one learned probe token."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_width: int = 3072  # explicit: so400m's 4304 is no round ratio of its 1152 width

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class SiglipTextConfig:
    """SigLIP's text tower: bidirectional (no causal mask), final LayerNorm, pooled at the LAST
    position (padding included: the tokenizer always pads to context_length), then a linear head."""

    context_length: int = 64
    vocab_size: int = 32000
    width: int = 768
    heads: int = 12
    layers: int = 12
    mlp_width: int = 3072


@dataclass(frozen=True)
class SiglipConfig(_FamilyConfig):
    """SigLIP (Zhai et al. 2023) and SigLIP 2 (Tschannen et al. 2025): sigmoid logits
    exp(logit_scale) * cos + logit_bias. The image embedding is the attention pool's output (no
    projection), so `embed_dim` equals the vision width and the text head's output width.

    `variant` only says which tokenizer/release family the weights come from ("siglip": T5-style
    SentencePiece, "siglip2": Gemma's); the architecture is the same (SigLIP 2's NaFlex patch
    embedding is a Linear over flattened patches, held here as the equivalent convolution).
    """

    family: ClassVar[str] = "siglip"

    embed_dim: int = 768
    vision: SiglipVisionConfig = field(default_factory=SiglipVisionConfig)
    text: SiglipTextConfig = field(default_factory=SiglipTextConfig)
    # transformers' "gelu_pytorch_tanh"; open_clip's SigLIP (timm towers) uses exact "gelu".
    activation: Activation = "gelu_tanh"
    layer_norm_eps: float = 1e-6
    variant: Literal["siglip", "siglip2"] = "siglip"

    def __post_init__(self) -> None:
        _check_activation(self.activation, ("quick_gelu", "gelu", "gelu_tanh"))
        if self.embed_dim != self.vision.width:
            raise InvalidInputError(f"SigLIP's embed_dim ({self.embed_dim}) must equal the vision width ({self.vision.width})")
        if self.variant not in ("siglip", "siglip2"):
            raise InvalidInputError(f"variant must be 'siglip' or 'siglip2', got {self.variant!r}")

    def default_preprocess(self) -> "PreprocessConfig":
        """SigLIP's: squash to a square (no crop), bicubic, mean = std = 0.5 (pixels to [-1, 1])."""
        return PreprocessConfig(image_size=self.image_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                interpolation="bicubic", mode="hf", resize_mode="squash")

    def default_tokenizer(self) -> "TokenizerConfig":
        """SigLIP's SentencePiece tokenizer (its model file must come with the weights): padded to the
        context length. SigLIP: T5's vocabulary, eos = pad = 1, big_vision's clean-up; SigLIP 2: Gemma's,
        pad 0, lower case, no bos or eos added (transformers' Siglip2Tokenizer's defaults)."""
        if self.variant == "siglip2":
            return TokenizerConfig(kind="sentencepiece", context_length=self.text.context_length, pad_token_id=0,
                                   clean="lower")
        return TokenizerConfig(kind="sentencepiece", context_length=self.text.context_length, pad_token_id=1,
                               eos_token_id=1, clean="canonicalize")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SiglipConfig":
        d = cls._own_fields(d)
        return cls(vision=SiglipVisionConfig(**d.pop("vision")), text=SiglipTextConfig(**d.pop("text")), **d)


# ---- families -------------------------------------------------------------------------------------


@runtime_checkable
class ArchitectureConfig(Protocol):
    """What every family's architecture config offers (ClipConfig, SiglipConfig, ...).

    Frozen dataclass, plain data; `family` is a class attribute naming its entry in
    ARCHITECTURE_CONFIGS. The rest of the library reads only these members (tasks: `embed_dim`,
    `image_size`, `text.context_length`); everything else is the family's own business.
    """

    family: ClassVar[str]
    embed_dim: int

    @property
    def image_size(self) -> int: ...

    def to_dict(self) -> dict[str, Any]: ...

    def replace(self, **changes: Any) -> Any: ...

    def default_preprocess(self) -> PreprocessConfig: ...

    def default_tokenizer(self) -> TokenizerConfig: ...


# family name -> its architecture config class. A new family adds one line here (docs/families.md).
ARCHITECTURE_CONFIGS: dict[str, type] = {
    "clip": ClipConfig,
    "chinese_clip": ChineseClipConfig,
    "xlm_roberta_clip": XlmRobertaClipConfig,
    "eva_clip": EvaClipConfig,
    "mobileclip": MobileClipConfig,
    "siglip": SiglipConfig,
}


def architecture_config_class(family: str) -> type:
    """The config class of a family name; an unknown family is an InvalidInputError listing the known ones."""
    try:
        return ARCHITECTURE_CONFIGS[family]
    except (KeyError, TypeError):
        raise InvalidInputError(
            f"unknown model family {str(family)[:40]!r}; known: {', '.join(ARCHITECTURE_CONFIGS)}"
        ) from None


def architecture_to_dict(config: ArchitectureConfig) -> dict[str, Any]:
    """The config's `to_dict()` with its "family" (what records store)."""
    return {**config.to_dict(), "family": config.family}


def architecture_from_dict(d: dict[str, Any]) -> ArchitectureConfig:
    """Any family's config from `architecture_to_dict` output; no "family" means CLIP (older records)."""
    if not isinstance(d, dict):
        raise InvalidInputError(f"an architecture must be a dict, got {type(d).__name__}")
    return architecture_config_class(d.get("family", "clip")).from_dict(d)
