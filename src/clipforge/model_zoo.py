"""Named architectures and named weights: data only.

`ARCHITECTURES` maps open_clip's model names ("ViT-B-32", "ViT-B-32-quickgelu", "RN50x4", ...) to a
`ClipConfig`. `WEIGHTS` maps (base architecture, tag) to a `WeightsRecord` that carries everything
numerical that belongs to a set of weights (activation, LayerNorm eps, mean/std, interpolation,
image size, special-token ids) together with where the file lives (Hugging Face hub repo, OpenAI URL
+ sha256) and its licence. Keeping those numbers next to the weights, rather than inferring them
from a model name, is what lets the loader refuse QuickGELU weights run with GELU.

Values are transcribed from open_clip's `model_configs/*.json` and `pretrained.py` and from
OpenAI's `clip/clip.py`; `tests/test_model_zoo.py` checks every entry against those sources.

Other families: released transformers-format repos by name in `NAMED_MODELS` (SigLIP, Chinese-CLIP);
open_clip-format weights of other families by (architecture, tag), as CLIP's LAION weights, in
`FAMILY_ARCHITECTURES` and `FAMILY_WEIGHTS` (open_clip's multilingual XLM-R CLIP). CLIP's own
tables hold `ClipConfig`s only (the QuickGELU twins, open_clip's `create_model` and the planner rely
on that); `get_architecture`, `get_weights`, `list_models` and `lookup_hf_hub_id` read both.

This module imports neither torch nor huggingface_hub: it is plain data plus lookups.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from typing import Any, Literal, Optional

from clipforge.configs import (
    OPENAI_MEAN,
    OPENAI_STD,
    Activation,
    BertTextConfig,
    ChineseClipConfig,
    ClipConfig,
    EvaClipConfig,
    EvaVisionConfig,
    FastVitMciConfig,
    MobileClipConfig,
    MobileClipVisionConfig,
    PreprocessConfig,
    ResNetConfig,
    SiglipConfig,
    SiglipTextConfig,
    SiglipVisionConfig,
    TextConfig,
    VisionTransformerConfig,
    XlmRobertaClipConfig,
)
from clipforge.errors import ClipforgeError, InvalidInputError

__all__ = [
    "ARCHITECTURES",
    "FAMILY_ARCHITECTURES",
    "FAMILY_WEIGHTS",
    "WEIGHTS",
    "HF_HUB_IDS",
    "NAMED_MODELS",
    "NamedModel",
    "OPENAI_MODEL_NAMES",
    "FileFormat",
    "WeightsRecord",
    "UnknownModelError",
    "get_architecture",
    "get_weights",
    "list_architectures",
    "list_models",
    "lookup_hf_hub_id",
    "weights_table_markdown",
]

FileFormat = Literal["openai", "open_clip", "hf"]

QUICKGELU_SUFFIX = "-quickgelu"
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


class UnknownModelError(ClipforgeError, KeyError):
    """An unknown architecture name or weights tag. The message lists what is known."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument (quotes, escaped newlines); show the message as written.
        return str(self.args[0]) if self.args else ""


# ---- architectures ---------------------------------------------------------------------------------


def _vit(
    embed_dim: int,
    image_size: int,
    patch_size: int,
    width: int,
    layers: int,
    text_width: int,
    text_heads: int,
    text_layers: int = 12,
    head_width: int = 64,
    mlp_ratio: float = 4.0,
) -> ClipConfig:
    vision = VisionTransformerConfig(
        image_size=image_size,
        patch_size=patch_size,
        width=width,
        layers=layers,
        heads=width // head_width,  # open_clip's rule; head_width is 64 except for H/g/bigG
        mlp_ratio=mlp_ratio,
    )
    text = TextConfig(width=text_width, heads=text_heads, layers=text_layers)
    return ClipConfig(embed_dim=embed_dim, vision=vision, text=text, activation="gelu")


def _resnet(
    embed_dim: int,
    image_size: int,
    layers: tuple[int, int, int, int],
    width: int,
    text_width: int,
    text_heads: int,
) -> ClipConfig:
    # OpenAI's attention pool: heads = width * 32 // 64 (output width / 64).
    vision = ResNetConfig(image_size=image_size, layers=layers, width=width, heads=width * 32 // 64)
    text = TextConfig(width=text_width, heads=text_heads, layers=12)
    return ClipConfig(embed_dim=embed_dim, vision=vision, text=text, activation="gelu")


# The plain name is open_clip's config of that name (GELU); each gets a "-quickgelu" twin below.
_BASE_ARCHITECTURES: dict[str, ClipConfig] = {
    "RN50": _resnet(1024, 224, (3, 4, 6, 3), 64, text_width=512, text_heads=8),
    "RN101": _resnet(512, 224, (3, 4, 23, 3), 64, text_width=512, text_heads=8),
    "RN50x4": _resnet(640, 288, (4, 6, 10, 6), 80, text_width=640, text_heads=10),
    "RN50x16": _resnet(768, 384, (6, 8, 18, 8), 96, text_width=768, text_heads=12),
    "RN50x64": _resnet(1024, 448, (3, 15, 36, 10), 128, text_width=1024, text_heads=16),
    "ViT-B-32": _vit(512, 224, 32, 768, 12, text_width=512, text_heads=8),
    "ViT-B-16": _vit(512, 224, 16, 768, 12, text_width=512, text_heads=8),
    "ViT-L-14": _vit(768, 224, 14, 1024, 24, text_width=768, text_heads=12),
    "ViT-L-14-336": _vit(768, 336, 14, 1024, 24, text_width=768, text_heads=12),
    "ViT-H-14": _vit(1024, 224, 14, 1280, 32, text_width=1024, text_heads=16, text_layers=24, head_width=80),
    "ViT-g-14": _vit(
        1024, 224, 14, 1408, 40, text_width=1024, text_heads=16, text_layers=24, head_width=88, mlp_ratio=4.3637
    ),
    "ViT-bigG-14": _vit(
        1280, 224, 14, 1664, 48, text_width=1280, text_heads=20, text_layers=32, head_width=104, mlp_ratio=4.9231
    ),
}


def _with_quickgelu_twins(base: dict[str, ClipConfig]) -> dict[str, ClipConfig]:
    out: dict[str, ClipConfig] = {}
    for name, cfg in base.items():
        out[name] = cfg
        out[name + QUICKGELU_SUFFIX] = cfg.replace(activation="quick_gelu")
    return out


ARCHITECTURES: dict[str, ClipConfig] = _with_quickgelu_twins(_BASE_ARCHITECTURES)

# EVA02-CLIP and MobileCLIP (open_clip's names; GELU only, so no -quickgelu twins). The towers are
# timm's eva02_*_clip_* and vit_base_mci_224 (checkpoint_formats/eva.py, mobileclip.py name them);
# tests/test_eva_clip.py and test_mobileclip.py check each entry against open_clip's model config.
_EVA_MOBILECLIP_ARCHITECTURES: dict[str, object] = {
    "EVA02-B-16": EvaClipConfig(
        embed_dim=512, vision=EvaVisionConfig(image_size=224, patch_size=16, width=768, layers=12, heads=12, mlp_width=2048),
        text=TextConfig(width=512, heads=8, layers=12)),
    "EVA02-L-14": EvaClipConfig(
        embed_dim=768, vision=EvaVisionConfig(image_size=224, patch_size=14, width=1024, layers=24, heads=16, mlp_width=2730),
        text=TextConfig(width=768, heads=12, layers=12)),
    "EVA02-L-14-336": EvaClipConfig(
        embed_dim=768, vision=EvaVisionConfig(image_size=336, patch_size=14, width=1024, layers=24, heads=16, mlp_width=2730),
        text=TextConfig(width=768, heads=12, layers=12)),
    "MobileCLIP-B": MobileClipConfig(embed_dim=512, vision=MobileClipVisionConfig(), text=TextConfig(width=512, heads=8, layers=12)),
    "MobileCLIP2-B": MobileClipConfig(embed_dim=512, vision=MobileClipVisionConfig(), text=TextConfig(width=512, heads=8, layers=12)),
}
# MobileCLIP's S models: FastViT-MCi towers (timm's fastvit_mci0..4) and bidirectional text towers.
_MCI012 = dict(image_size=256, mlp_ratios=(3.0,) * 4, token_mixers=("repmixer",) * 3 + ("attention",),
               downsamples=(False, True, True, True), se_downsamples=(False, False, True, True),
               pos_embs=(False, False, False, True))
_MCI34 = dict(image_size=256, mlp_ratios=(4.0,) * 5, token_mixers=("repmixer",) * 3 + ("attention",) * 2,
              downsamples=(False, True, True, True, True), se_downsamples=(False,) * 5,
              pos_embs=(False, False, False, True, True), attention_norm="layernorm", stem_scale_branch=False)
_MCI = {
    "mci0": FastVitMciConfig(**_MCI012, layers=(2, 6, 10, 2), embed_dims=(64, 128, 256, 512)),  # type: ignore[arg-type]
    "mci1": FastVitMciConfig(**_MCI012, layers=(4, 12, 20, 4), embed_dims=(64, 128, 256, 512)),  # type: ignore[arg-type]
    "mci2": FastVitMciConfig(**_MCI012, layers=(4, 12, 24, 4), embed_dims=(80, 160, 320, 640)),  # type: ignore[arg-type]
    "mci3": FastVitMciConfig(**_MCI34, layers=(2, 12, 24, 4, 2), embed_dims=(96, 192, 384, 768, 1536)),  # type: ignore[arg-type]
    "mci4": FastVitMciConfig(**_MCI34, layers=(2, 12, 24, 4, 4), embed_dims=(128, 256, 512, 1024, 2048)),  # type: ignore[arg-type]
}
for _name, _mci, _embed, _text in [("MobileCLIP-S1", "mci1", 512, (512, 8)), ("MobileCLIP-S2", "mci2", 512, (512, 8)),
                                   ("MobileCLIP2-S0", "mci0", 512, (512, 8)), ("MobileCLIP2-S2", "mci2", 512, (512, 8)),
                                   ("MobileCLIP2-S3", "mci3", 768, (768, 12)), ("MobileCLIP2-S4", "mci4", 768, (768, 12))]:
    _EVA_MOBILECLIP_ARCHITECTURES[_name] = MobileClipConfig(
        embed_dim=_embed, vision=_MCI[_mci], text=TextConfig(width=_text[0], heads=_text[1], layers=12), text_causal=False)
ARCHITECTURES.update(_EVA_MOBILECLIP_ARCHITECTURES)  # type: ignore[arg-type]

# OpenAI's `clip.available_models()` names -> ours (an explicit table, not string munging).
OPENAI_MODEL_NAMES: dict[str, str] = {
    "RN50": "RN50",
    "RN101": "RN101",
    "RN50x4": "RN50x4",
    "RN50x16": "RN50x16",
    "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
}


def _base_name(arch: str) -> str:
    return arch[: -len(QUICKGELU_SUFFIX)] if arch.endswith(QUICKGELU_SUFFIX) else arch


def _unknown(kind: str, name: str, known: list[str]) -> UnknownModelError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"did you mean: {', '.join(close)}?" if close else f"known: {', '.join(known)}"
    return UnknownModelError(f"unknown {kind} {name!r}; {hint}")


# ---- other families ---------------------------------------------------------------------------------

_XLMR_BASE = XlmRobertaClipConfig().text
_XLMR_LARGE = dataclasses.replace(_XLMR_BASE, width=1024, layers=24, heads=16, mlp_width=4096)

FAMILY_ARCHITECTURES: dict[str, Any] = {
    # open_clip's model_configs/xlm-roberta-*.json (GELU ViTs, mean pooler, "mlp" projection).
    "xlm-roberta-base-ViT-B-32": XlmRobertaClipConfig(
        embed_dim=512, vision=VisionTransformerConfig(patch_size=32, width=768, layers=12, heads=12), text=_XLMR_BASE),
    "xlm-roberta-large-ViT-H-14": XlmRobertaClipConfig(
        embed_dim=1024, vision=VisionTransformerConfig(patch_size=14, width=1280, layers=32, heads=16),
        text=_XLMR_LARGE),
}


def get_architecture(name: str) -> Any:
    """The config of an architecture name: a `ClipConfig` for CLIP's (open_clip's naming, or OpenAI's
    "ViT-B/32" names), another family's config for FAMILY_ARCHITECTURES names."""
    name = OPENAI_MODEL_NAMES.get(name, name)
    try:
        return ARCHITECTURES[name] if name in ARCHITECTURES else FAMILY_ARCHITECTURES[name]
    except KeyError:
        raise _unknown("architecture", name, [*ARCHITECTURES, *FAMILY_ARCHITECTURES]) from None


def is_architecture(name: str) -> bool:
    """True for every named architecture, any family, either spelling."""
    return name in ARCHITECTURES or name in OPENAI_MODEL_NAMES or name in FAMILY_ARCHITECTURES


def architecture_name(config: Any) -> Optional[str]:
    """The name of the named architecture equal to `config`, or None (a custom shape)."""
    return next((name for name, known in {**ARCHITECTURES, **FAMILY_ARCHITECTURES}.items() if known == config), None)


def list_architectures() -> list[str]:
    """All architecture names, each plain (GELU) name followed by its -quickgelu twin."""
    return list(ARCHITECTURES)


# ---- weights ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsRecord:
    """One named set of weights: where the file is and the numerics it was trained with.

    `activation`, `layer_norm_eps` and the token ids repeat what `arch` implies on purpose: the
    loader compares them with the architecture and with what the file itself declares.
    `sha256` is the digest of the file at `url` (OpenAI publishes it in the URL path); hub files are
    verified by huggingface_hub against the hub's own LFS digest.
    """

    arch: str  # exact ARCHITECTURES name, "-quickgelu" included when the weights need QuickGELU
    tag: str
    file_format: FileFormat  # format of the hub file (hf_filename); the URL file is `url_file_format`
    preprocess: PreprocessConfig
    activation: Activation
    hf_hub_id: Optional[str] = None
    hf_filename: Optional[str] = None
    # Tried in order after hf_filename (open_clip prefers safetensors, falls back to the pickle).
    hf_fallback_filenames: tuple[str, ...] = ()
    url: Optional[str] = None
    sha256: Optional[str] = None
    url_file_format: FileFormat = "openai"
    layer_norm_eps: float = 1e-5
    sot_token_id: int = 49406
    eot_token_id: int = 49407
    pad_token_id: int = 0
    license: str = ""
    source: str = ""  # paper / model card
    notes: str = ""  # what else a user should know: preprocessing, the tokenizer files the repo must hold
    # (hub repo, file name) of a tokenizer file kept in another repo than the weights: open_clip's
    # multilingual repos name their tokenizer by hub name (hf_tokenizer_name) instead of holding it.
    tokenizer_file: Optional[tuple[str, str]] = None

    def __post_init__(self) -> None:
        # Fail at definition time if the record contradicts its own architecture name.
        arch_cfg = get_architecture(self.arch)
        if isinstance(arch_cfg, ClipConfig) and arch_cfg.activation != self.activation:
            raise InvalidInputError(
                f"{self.arch}/{self.tag}: activation {self.activation!r} differs from the arch's "
                f"{arch_cfg.activation!r}"
            )
        if arch_cfg.image_size != self.preprocess.image_size:
            raise InvalidInputError(f"{self.arch}/{self.tag}: preprocess image size differs from the architecture's")
        if self.hf_hub_id is None and self.url is None:
            raise InvalidInputError(f"{self.arch}/{self.tag}: a record needs a hub repo or a URL")

    @property
    def base_arch(self) -> str:
        """The architecture name without "-quickgelu" (the first half of the WEIGHTS key)."""
        return _base_name(self.arch)

    @property
    def hf_filenames(self) -> tuple[str, ...]:
        """Hub file names to try, preferred first."""
        return ((self.hf_filename,) if self.hf_filename else ()) + self.hf_fallback_filenames

    @property
    def url_filename(self) -> Optional[str]:
        return self.url.rsplit("/", 1)[-1] if self.url else None

    def file_format_for(self, path: "str | os.PathLike[str]") -> FileFormat:
        """The format of a resolved file: the URL's file is OpenAI's archive, hub files are `file_format`."""
        return self.url_file_format if os.path.basename(path) == self.url_filename else self.file_format

    def model_config(self) -> Any:
        """The architecture's config with this record's numerics and special tokens applied (CLIP's;
        other families' configs state their numerics themselves and come back as they are)."""
        cfg = get_architecture(self.arch)
        if not isinstance(cfg, ClipConfig):
            return cfg
        text = dataclasses.replace(
            cfg.text, sot_token_id=self.sot_token_id, eot_token_id=self.eot_token_id, pad_token_id=self.pad_token_id
        )
        return cfg.replace(activation=self.activation, layer_norm_eps=self.layer_norm_eps, text=text)


_OPENAI_URL = "https://openaipublic.azureedge.net/clip/models/{sha256}/{filename}"
_OPENAI_SOURCE = "https://arxiv.org/abs/2103.00020 (Radford et al. 2021); https://github.com/openai/CLIP"
_LAION_SOURCE = "https://arxiv.org/abs/2212.07143 (Cherti et al. 2022); https://github.com/mlfoundations/open_clip"
# open_clip's hub files: safetensors first, pickle fallback (what open_clip's downloader does).
_OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _preprocess(arch: str, mean: tuple[float, float, float], std: tuple[float, float, float]) -> PreprocessConfig:
    return PreprocessConfig(image_size=get_architecture(arch).image_size, mean=mean, std=std, interpolation="bicubic")


def _openai(arch: str, timm_name: str, filename: str, sha256: str) -> WeightsRecord:
    # OpenAI trained every model with QuickGELU; open_clip mirrors the weights under timm/<name>.openai.
    return WeightsRecord(
        arch=arch + QUICKGELU_SUFFIX,
        tag="openai",
        file_format="open_clip",
        preprocess=_preprocess(arch, OPENAI_MEAN, OPENAI_STD),
        activation="quick_gelu",
        hf_hub_id=f"timm/{timm_name}.openai",
        hf_filename=_OPEN_CLIP_FILES[0],
        hf_fallback_filenames=_OPEN_CLIP_FILES[1:],
        url=_OPENAI_URL.format(sha256=sha256, filename=filename),
        sha256=sha256,
        license="MIT",
        source=_OPENAI_SOURCE,
    )


def _laion(
    arch: str,
    tag: str,
    hf_hub_id: str,
    *,
    quick_gelu: bool = False,
    mean: tuple[float, float, float] = OPENAI_MEAN,
    std: tuple[float, float, float] = OPENAI_STD,
    source: str = _LAION_SOURCE,
) -> WeightsRecord:
    return WeightsRecord(
        arch=arch + QUICKGELU_SUFFIX if quick_gelu else arch,
        tag=tag,
        file_format="open_clip",
        preprocess=_preprocess(arch, mean, std),
        activation="quick_gelu" if quick_gelu else "gelu",
        hf_hub_id=hf_hub_id,
        hf_filename=_OPEN_CLIP_FILES[0],
        hf_fallback_filenames=_OPEN_CLIP_FILES[1:],
        license="MIT",
        source=source,
    )


_LAION400M_SOURCE = "https://arxiv.org/abs/2111.02114 (LAION-400M); https://github.com/mlfoundations/open_clip"

# OpenAI: (arch, open_clip's timm hub name, file name, sha256 = the URL's path component in clip/clip.py).
_OPENAI_FILES = [
    ("RN50", "resnet50_clip", "RN50.pt", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"),
    ("RN101", "resnet101_clip", "RN101.pt", "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599"),
    ("RN50x4", "resnet50x4_clip", "RN50x4.pt", "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd"),
    ("RN50x16", "resnet50x16_clip", "RN50x16.pt", "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa"),
    ("RN50x64", "resnet50x64_clip", "RN50x64.pt", "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c"),
    ("ViT-B-32", "vit_base_patch32_clip_224", "ViT-B-32.pt",
     "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"),
    ("ViT-B-16", "vit_base_patch16_clip_224", "ViT-B-16.pt",
     "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"),
    ("ViT-L-14", "vit_large_patch14_clip_224", "ViT-L-14.pt",
     "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"),
    ("ViT-L-14-336", "vit_large_patch14_clip_336", "ViT-L-14-336px.pt",
     "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02"),
]  # fmt: skip

_RECORDS: list[WeightsRecord] = [_openai(arch, timm, name, sha) for arch, timm, name, sha in _OPENAI_FILES] + [
    # LAION (open_clip). LAION-400M ViT-B-32 was trained with QuickGELU; the LAION-2B runs with GELU.
    _laion(
        "ViT-B-32",
        "laion400m_e31",
        "timm/vit_base_patch32_clip_224.laion400m_e31",
        quick_gelu=True,
        source=_LAION400M_SOURCE,
    ),
    _laion(
        "ViT-B-32",
        "laion400m_e32",
        "timm/vit_base_patch32_clip_224.laion400m_e32",
        quick_gelu=True,
        source=_LAION400M_SOURCE,
    ),
    _laion("ViT-B-32", "laion2b_e16", "timm/vit_base_patch32_clip_224.laion2b_e16"),
    _laion("ViT-B-32", "laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
    _laion("ViT-B-16", "laion400m_e32", "timm/vit_base_patch16_clip_224.laion400m_e32", source=_LAION400M_SOURCE),
    _laion("ViT-B-16", "laion2b_s34b_b88k", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"),
    # ViT-L-14 laion2b_s32b_b82k was trained with mean = std = 0.5 (open_clip records INCEPTION_MEAN/STD).
    _laion(
        "ViT-L-14",
        "laion2b_s32b_b82k",
        "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
    ),
    _laion("ViT-H-14", "laion2b_s32b_b79k", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
    _laion("ViT-g-14", "laion2b_s12b_b42k", "laion/CLIP-ViT-g-14-laion2B-s12B-b42K"),
    _laion("ViT-g-14", "laion2b_s34b_b88k", "laion/CLIP-ViT-g-14-laion2B-s34B-b88K"),
    _laion("ViT-bigG-14", "laion2b_s39b_b160k", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"),
]

_EVA_SOURCE = "https://arxiv.org/abs/2303.15389 (Sun et al. 2023, EVA-CLIP); https://github.com/baaivision/EVA"
_MOBILECLIP_SOURCE = "https://arxiv.org/abs/2311.17049 (Vasu et al. 2024, MobileCLIP); https://github.com/apple/ml-mobileclip"
_MOBILECLIP2_SOURCE = "MobileCLIP2 (Faghri et al. 2025); https://github.com/apple/ml-mobileclip"
# Apple's MobileCLIP weights carry Apple's own model licence, not the code's MIT-style one: read the
# hub repo's model card before use (not verifiable offline when this entry was written).
_APPLE_LICENSE = "Apple model licence (see the hub model card; not MIT)"


def _open_clip_family(arch: str, tag: str, hf_hub_id: str, mean: tuple[float, float, float],
                      std: tuple[float, float, float], interpolation: str, license: str, source: str) -> WeightsRecord:
    """Weights of a non-CLIP family in open_clip's hub layout (GELU; open_clip's pretrained.py numerics)."""
    return WeightsRecord(
        arch=arch, tag=tag, file_format="open_clip",
        preprocess=PreprocessConfig(image_size=get_architecture(arch).image_size, mean=mean, std=std,
                                    interpolation=interpolation),  # type: ignore[arg-type]
        activation="gelu", hf_hub_id=hf_hub_id, hf_filename=_OPEN_CLIP_FILES[0],
        hf_fallback_filenames=_OPEN_CLIP_FILES[1:], license=license, source=source,
    )


_ZERO, _ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # MobileCLIP reads pixels in [0, 1]
_RECORDS += [
    _open_clip_family("EVA02-B-16", "merged2b_s8b_b131k", "timm/eva02_base_patch16_clip_224.merged2b_s8b_b131k",
                      OPENAI_MEAN, OPENAI_STD, "bicubic", "MIT", _EVA_SOURCE),
    _open_clip_family("EVA02-L-14", "merged2b_s4b_b131k", "timm/eva02_large_patch14_clip_224.merged2b_s4b_b131k",
                      OPENAI_MEAN, OPENAI_STD, "bicubic", "MIT", _EVA_SOURCE),
    _open_clip_family("EVA02-L-14-336", "merged2b_s6b_b61k", "timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k",
                      OPENAI_MEAN, OPENAI_STD, "bicubic", "MIT", _EVA_SOURCE),
    _open_clip_family("MobileCLIP-B", "datacompdr", "apple/MobileCLIP-B-OpenCLIP", _ZERO, _ONE, "bilinear",
                      _APPLE_LICENSE, _MOBILECLIP_SOURCE),
    _open_clip_family("MobileCLIP-B", "datacompdr_lt", "apple/MobileCLIP-B-LT-OpenCLIP", _ZERO, _ONE, "bilinear",
                      _APPLE_LICENSE, _MOBILECLIP_SOURCE),
    _open_clip_family("MobileCLIP2-B", "dfndr2b", "timm/MobileCLIP2-B-OpenCLIP", _ZERO, _ONE, "bilinear",
                      _APPLE_LICENSE, _MOBILECLIP2_SOURCE),
    _open_clip_family("MobileCLIP-S1", "datacompdr", "apple/MobileCLIP-S1-OpenCLIP", _ZERO, _ONE, "bilinear",
                      _APPLE_LICENSE, _MOBILECLIP_SOURCE),
    _open_clip_family("MobileCLIP-S2", "datacompdr", "apple/MobileCLIP-S2-OpenCLIP", _ZERO, _ONE, "bilinear",
                      _APPLE_LICENSE, _MOBILECLIP_SOURCE),
    _open_clip_family("MobileCLIP2-S0", "dfndr2b", "timm/MobileCLIP2-S0-OpenCLIP", _ZERO, _ONE, "bilinear",
                      _APPLE_LICENSE, _MOBILECLIP2_SOURCE),
    _open_clip_family("MobileCLIP2-S2", "dfndr2b", "timm/MobileCLIP2-S2-OpenCLIP", _ZERO, _ONE, "bilinear",
                      _APPLE_LICENSE, _MOBILECLIP2_SOURCE),
    # MobileCLIP2-S3/S4 were trained with OpenAI's mean/std (open_clip's _mc2cfg).
    _open_clip_family("MobileCLIP2-S3", "dfndr2b", "timm/MobileCLIP2-S3-OpenCLIP", OPENAI_MEAN, OPENAI_STD, "bilinear",
                      _APPLE_LICENSE, _MOBILECLIP2_SOURCE),
    _open_clip_family("MobileCLIP2-S4", "dfndr2b", "timm/MobileCLIP2-S4-OpenCLIP", OPENAI_MEAN, OPENAI_STD, "bilinear",
                      _APPLE_LICENSE, _MOBILECLIP2_SOURCE),
]

WEIGHTS: dict[tuple[str, str], WeightsRecord] = {(r.base_arch, r.tag): r for r in _RECORDS}

_XLMR_NOTES = ("open_clip hub repo; OpenAI's preprocessing; XLM-R SentencePiece tokenizer (cased, 77 tokens): "
               "sentencepiece.bpe.model next to the weights, else from the FacebookAI/xlm-roberta-* repo "
               "open_clip names")


def _xlm_roberta(arch: str, tag: str, hub_id: str, tokenizer_repo: str) -> WeightsRecord:
    return WeightsRecord(
        arch=arch, tag=tag, file_format="open_clip", activation="gelu",
        preprocess=PreprocessConfig(image_size=FAMILY_ARCHITECTURES[arch].image_size),
        hf_hub_id=hub_id, hf_filename=_OPEN_CLIP_FILES[0], hf_fallback_filenames=_OPEN_CLIP_FILES[1:],
        sot_token_id=0, eot_token_id=2, pad_token_id=1, license="MIT", source=_LAION_SOURCE, notes=_XLMR_NOTES,
        tokenizer_file=(tokenizer_repo, "sentencepiece.bpe.model"),
    )


# Other families' named weights: (architecture, tag) -> record, as WEIGHTS.
FAMILY_WEIGHTS: dict[tuple[str, str], WeightsRecord] = {(r.arch, r.tag): r for r in [
    _xlm_roberta("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k", "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k",
                 "FacebookAI/xlm-roberta-base"),
    _xlm_roberta("xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k",
                 "laion/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k", "FacebookAI/xlm-roberta-large"),
]}

# transformers-format repos (config.json + model.safetensors / pytorch_model.bin) -> (base arch, tag).
# Lets `load("openai/clip-vit-large-patch14")` know the model and its numerics before reading files.
HF_HUB_IDS: dict[str, tuple[str, str]] = {
    "openai/clip-vit-base-patch32": ("ViT-B-32", "openai"),
    "openai/clip-vit-base-patch16": ("ViT-B-16", "openai"),
    "openai/clip-vit-large-patch14": ("ViT-L-14", "openai"),
    "openai/clip-vit-large-patch14-336": ("ViT-L-14-336", "openai"),
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K": ("ViT-B-32", "laion2b_s34b_b79k"),
    "laion/CLIP-ViT-L-14-laion2B-s32B-b82K": ("ViT-L-14", "laion2b_s32b_b82k"),
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K": ("ViT-H-14", "laion2b_s32b_b79k"),
    "laion/CLIP-ViT-g-14-laion2B-s12B-b42K": ("ViT-g-14", "laion2b_s12b_b42k"),
    "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k": ("ViT-bigG-14", "laion2b_s39b_b160k"),
}

# The transformers tokenizers of OpenAI's repos pad with <|endoftext|>; LAION's pad with "!" (id 0).
_HF_PAD_TOKEN_ID = {"openai": 49407}


def _clean_tag(tag: str) -> str:
    # open_clip's normalisation: "LAION2B-s34B-b79K" == "laion2b_s34b_b79k".
    return tag.lower().replace("-", "_")


def get_weights(arch: str, tag: str) -> WeightsRecord:
    """The record for `tag` of `arch`; "ViT-B-32" and "ViT-B-32-quickgelu" find the same records.

    The returned record's `arch` names the activation the weights need, whichever spelling was asked.
    """
    base = _base_name(OPENAI_MODEL_NAMES.get(arch, arch))
    if base not in ARCHITECTURES and base not in FAMILY_ARCHITECTURES:
        raise _unknown("architecture", arch, [*ARCHITECTURES, *FAMILY_ARCHITECTURES])
    record = WEIGHTS.get((base, _clean_tag(tag))) or FAMILY_WEIGHTS.get((base, _clean_tag(tag)))
    if record is None:
        tags = [t for (a, t) in [*WEIGHTS, *FAMILY_WEIGHTS] if a == base]
        known = f"known tags for {base}: {', '.join(tags)}" if tags else f"no named weights are known for {base}"
        raise UnknownModelError(f"unknown weights tag {tag!r} for {arch!r}; {known}")
    return record


def list_models() -> list[tuple[str, str]]:
    """(architecture, tag) pairs of every named CLIP weights, architecture spelled as the weights need
    it; then those of other families' open_clip-style weights (FAMILY_WEIGHTS); then (name, hub id) of
    every released model of another family (NAMED_MODELS)."""
    return ([(r.arch, r.tag) for r in [*WEIGHTS.values(), *FAMILY_WEIGHTS.values()]]
            + [(m.name, m.hf_hub_id) for m in NAMED_MODELS.values()])


def describe_tags(arch: str) -> str:
    """"one of 'openai', 'laion2b_s34b_b79k'" (the weights tags known for `arch`), or that none are."""
    base = _base_name(OPENAI_MODEL_NAMES.get(arch, arch))
    tags = [t for (a, t) in [*WEIGHTS, *FAMILY_WEIGHTS] if a == base]
    return "one of " + ", ".join(repr(t) for t in tags) if tags else f"(no named weights are known for {base})"


BUNDLED_MODEL_NAME = "clipforge-mini"


def suggest_names(name: str) -> str:
    """"did you mean: X, Y?" among every name `clipforge.load` knows (the bundled model, architectures
    in both spellings, hub ids); or where to see them all."""
    known = [BUNDLED_MODEL_NAME, *ARCHITECTURES, *OPENAI_MODEL_NAMES, *HF_HUB_IDS, *NAMED_MODELS, *FAMILY_ARCHITECTURES,
             *(r.hf_hub_id for r in [*WEIGHTS.values(), *FAMILY_WEIGHTS.values()] if r.hf_hub_id)]
    close = difflib.get_close_matches(name, list(dict.fromkeys(known)), n=3, cutoff=0.6)
    if not close and "/" in name:  # a hub id: compare within the same organisation
        org = name.split("/")[0].lower()
        close = difflib.get_close_matches(name, [k for k in known if k.lower().startswith(org + "/")], n=3, cutoff=0.0)
    return f"did you mean {' or '.join(close)}?" if close else "`clipforge models` lists the names clipforge knows"


def lookup_hf_hub_id(hub_id: str) -> Optional[WeightsRecord]:
    """What a hub id is, before touching any file; None when unknown.

    A transformers-format repo (HF_HUB_IDS) gets its weights record re-pointed at that repo with
    file_format "hf" and transformers' preprocessing mode. A repo that holds an open_clip file
    (e.g. "timm/vit_base_patch32_clip_224.openai") returns its record unchanged.
    """
    key = HF_HUB_IDS.get(hub_id)
    if key is not None:
        record = WEIGHTS[key]
        return dataclasses.replace(
            record,
            hf_hub_id=hub_id,
            hf_filename="model.safetensors",
            hf_fallback_filenames=("pytorch_model.bin",),
            file_format="hf",
            url=None,
            sha256=None,
            preprocess=dataclasses.replace(record.preprocess, mode="hf"),
            pad_token_id=_HF_PAD_TOKEN_ID.get(hub_id.split("/")[0], record.pad_token_id),
        )
    for record in [*WEIGHTS.values(), *FAMILY_WEIGHTS.values()]:
        if record.hf_hub_id == hub_id:
            return record
    return None


# ---- other families: released models by name -------------------------------------------------------


@dataclass(frozen=True)
class NamedModel:
    """A released model of another family (SigLIP, ...), by name: a transformers hub repo whose own
    files (config.json, weights, tokenizer model, preprocessor_config.json) state every number; the
    entry says what those files must hold (`architecture`'s image tower is checked against the repo's
    config when it loads) and documents the rest. `clipforge.load(name)` resolves it through the
    hub cache like any hub id."""

    name: str
    hf_hub_id: str
    architecture: Any  # the family's config (SiglipConfig, ...), as the repo's config.json states it
    preprocess: PreprocessConfig
    tokenizer: str  # what the repo's tokenizer files are (the bytes come from the repo, not from here)
    license: str
    source: str

    @property
    def family(self) -> str:
        return self.architecture.family


_SIGLIP_SOURCE = "https://arxiv.org/abs/2303.15343 (Zhai et al. 2023); https://github.com/google-research/big_vision"
_SIGLIP2_SOURCE = "https://arxiv.org/abs/2502.14786 (Tschannen et al. 2025); https://github.com/google-research/big_vision"
_SIGLIP_TOKENIZER = "SentencePiece (T5 vocabulary, 32,000; spiece.model), canonicalized (lower case, no punctuation), eos 1, padded to 64 with 1"
_GEMMA_TOKENIZER = "SentencePiece (Gemma vocabulary, 256,000; tokenizer.model), lower case, padded to 64 with 0"
# (width, layers, heads, mlp width) of SigLIP's towers; so400m's shapes are the "shape-optimized" ones.
_SIGLIP_SIZES = {"base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096), "so400m": (1152, 27, 16, 4304)}


def _siglip(name: str, size: str, patch: int, image: int, *, variant: str = "siglip", vocab: int = 32000) -> NamedModel:
    width, layers, heads, mlp = _SIGLIP_SIZES[size]
    config = SiglipConfig(
        embed_dim=width,
        vision=SiglipVisionConfig(image_size=image, patch_size=patch, width=width, layers=layers, heads=heads, mlp_width=mlp),
        text=SiglipTextConfig(context_length=64, vocab_size=vocab, width=width, heads=heads, layers=layers, mlp_width=mlp),
        variant=variant,  # type: ignore[arg-type]
    )
    return NamedModel(
        name=name, hf_hub_id=f"google/{name}", architecture=config, preprocess=config.default_preprocess(),
        tokenizer=_GEMMA_TOKENIZER if variant == "siglip2" else _SIGLIP_TOKENIZER,
        license="Apache-2.0", source=_SIGLIP2_SOURCE if variant == "siglip2" else _SIGLIP_SOURCE,
    )


_CHINESE_CLIP_SOURCE = "https://arxiv.org/abs/2211.01335 (Yang et al. 2022); https://github.com/OFA-Sys/Chinese-CLIP"
_CHINESE_CLIP_TOKENIZER = ("WordPiece (vocab.txt, 21,128: Chinese characters + English wordpieces), lower case, "
                           "[CLS] ... [SEP] padded to 52 with [PAD] (masked); Chinese prompt templates")
# Chinese-CLIP's text towers (OFA-Sys's config.json files): RoBERTa-wwm-ext base / large.
_RBT_BASE = BertTextConfig(vocab_size=21128, width=768, layers=12, heads=12, mlp_width=3072)
_RBT_LARGE = BertTextConfig(vocab_size=21128, width=1024, layers=24, heads=16, mlp_width=4096)


def _chinese_clip(name: str, embed_dim: int, vision: VisionTransformerConfig, text: BertTextConfig) -> NamedModel:
    """OFA-Sys's transformers repos: OpenAI-initialised ViTs (QuickGELU) + Chinese RoBERTa-wwm; images
    resized to a square without a crop (their preprocessor_config.json)."""
    config = ChineseClipConfig(embed_dim=embed_dim, vision=vision, text=text)
    return NamedModel(
        name=name, hf_hub_id=f"OFA-Sys/{name}", architecture=config, preprocess=config.default_preprocess(),
        tokenizer=_CHINESE_CLIP_TOKENIZER, license="MIT", source=_CHINESE_CLIP_SOURCE,
    )


_NAMED: list[NamedModel] = [
    _siglip("siglip-base-patch16-224", "base", 16, 224),
    _siglip("siglip-base-patch16-256", "base", 16, 256),
    _siglip("siglip-base-patch16-384", "base", 16, 384),
    _siglip("siglip-base-patch16-512", "base", 16, 512),
    _siglip("siglip-large-patch16-256", "large", 16, 256),
    _siglip("siglip-large-patch16-384", "large", 16, 384),
    _siglip("siglip-so400m-patch14-224", "so400m", 14, 224),
    _siglip("siglip-so400m-patch14-384", "so400m", 14, 384),
    _siglip("siglip2-base-patch16-224", "base", 16, 224, variant="siglip2", vocab=256000),
    _siglip("siglip2-base-patch16-256", "base", 16, 256, variant="siglip2", vocab=256000),
    _siglip("siglip2-base-patch16-384", "base", 16, 384, variant="siglip2", vocab=256000),
    _siglip("siglip2-large-patch16-256", "large", 16, 256, variant="siglip2", vocab=256000),
    _siglip("siglip2-large-patch16-384", "large", 16, 384, variant="siglip2", vocab=256000),
    _siglip("siglip2-so400m-patch14-224", "so400m", 14, 224, variant="siglip2", vocab=256000),
    _siglip("siglip2-so400m-patch14-384", "so400m", 14, 384, variant="siglip2", vocab=256000),
]
_NAMED += [
    _chinese_clip("chinese-clip-vit-base-patch16", 512, VisionTransformerConfig(patch_size=16, width=768, layers=12, heads=12),
                  _RBT_BASE),
    _chinese_clip("chinese-clip-vit-large-patch14", 768,
                  VisionTransformerConfig(patch_size=14, width=1024, layers=24, heads=16), _RBT_BASE),
    _chinese_clip("chinese-clip-vit-large-patch14-336px", 768,
                  VisionTransformerConfig(image_size=336, patch_size=14, width=1024, layers=24, heads=16), _RBT_BASE),
    _chinese_clip("chinese-clip-vit-huge-patch14", 1024,
                  VisionTransformerConfig(patch_size=14, width=1280, layers=32, heads=16), _RBT_LARGE),
]
# name -> entry; other families' engineers add their released models here.
NAMED_MODELS: dict[str, NamedModel] = {m.name: m for m in _NAMED}


# ---- documentation ---------------------------------------------------------------------------------


def _fmt_triple(values: tuple[float, float, float]) -> str:
    if tuple(values) == OPENAI_MEAN:
        return "OpenAI mean"
    if tuple(values) == OPENAI_STD:
        return "OpenAI std"
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _variant(model: NamedModel) -> str:
    variant = getattr(model.architecture, "variant", None)
    return f" ({variant})" if variant else ""


def weights_table_markdown() -> str:
    """The named-weights table of docs/weights.md, generated from WEIGHTS so the docs cannot drift."""
    header = (
        "| arch | tag | activation | image | mean / std | Hugging Face hub | OpenAI URL sha256 | licence |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in WEIGHTS.values():
        p = r.preprocess
        hub = f"`{r.hf_hub_id}`" if r.hf_hub_id else "-"
        sha = f"`{r.sha256[:12]}…`" if r.sha256 else "-"
        rows.append(
            f"| `{r.arch}` | `{r.tag}` | {r.activation} | {p.image_size} {p.interpolation} "
            f"| {_fmt_triple(p.mean)} / {_fmt_triple(p.std)} | {hub} | {sha} | {r.license} |"
        )
    hf_header = "\n\n| transformers-format hub id | arch | tag |\n|---|---|---|\n"
    hf_rows = [f"| `{hub_id}` | `{WEIGHTS[key].arch}` | `{key[1]}` |" for hub_id, key in HF_HUB_IDS.items()]
    family_header = "\n\n| other families: arch | tag | family | image | Hugging Face hub | licence | notes |\n|---|---|---|---|---|---|---|\n"
    family_rows = [
        f"| `{r.arch}` | `{r.tag}` | {FAMILY_ARCHITECTURES[r.arch].family} | {r.preprocess.image_size} "
        f"{r.preprocess.resize_mode} | `{r.hf_hub_id}` | {r.license} | {r.notes} |"
        for r in FAMILY_WEIGHTS.values()
    ]
    named_header = "\n\n| name | family | hub id | image | tokenizer | licence |\n|---|---|---|---|---|---|\n"
    named_rows = [f"| `{m.name}` | {m.family}{_variant(m)} | `{m.hf_hub_id}` | {m.preprocess.image_size} "
                  f"{m.preprocess.resize_mode} | {m.tokenizer} | {m.license} |" for m in NAMED_MODELS.values()]
    return (header + "\n".join(rows) + hf_header + "\n".join(hf_rows) + family_header + "\n".join(family_rows)
            + named_header + "\n".join(named_rows) + "\n")
