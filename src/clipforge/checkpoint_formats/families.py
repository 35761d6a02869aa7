"""What this package knows about each model family, in one table: `FAMILY_LAYOUTS`.

A `FamilyLayout` gathers, for one family (OpenAI's CLIP, SigLIP, ...), everything file formats
need: its canonical state-dict layout (the key list and shapes of a config), the key maps from
and onto the other formats' layouts, how to recognise the family in a file (config.json's
`model_type`, an open_clip model config, the keys themselves), and how its config and tokenizer
are written into a transformers directory. The rest of `checkpoint_formats` dispatches on it, so
a new family is a new module with its maps plus one entry here (docs/families.md).

Like the whole package, this knows no models: state dicts, configs and files only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch

from ..configs import (
    ChineseClipConfig,
    ClipConfig,
    EvaClipConfig,
    MobileClipConfig,
    ModelRecord,
    SiglipConfig,
    TokenizerConfig,
    XlmRobertaClipConfig,
)
from . import chinese_clip, eva, mobileclip, siglip, xlm_roberta
from .errors import CheckpointError
from .hf import canonical_to_hf, clip_config_to_hf_config, hf_config_to_clip_config, hf_to_canonical
from .infer_config import Shape
from .infer_config import check_config as clip_check_config
from .infer_config import check_config_limits as clip_check_config_limits
from .infer_config import describe as clip_describe
from .infer_config import expected_shapes as clip_expected_shapes
from .infer_config import infer_config as clip_infer_config
from .open_clip import (
    canonical_to_open_clip,
    open_clip_config_to_clip_config,
    open_clip_to_canonical,
    strip_wrapper_prefix,
)
from .openai import canonical_to_openai, openai_to_canonical

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FamilyLayout:
    """One family's file-format knowledge (see the module docstring).

    readers / writers: format name -> key map onto / from the canonical layout (exact, no arithmetic
        beyond reshapes, concatenation and transposes; an unknown key is an error naming it).
    detect_format: the format a state dict's keys (as stored: wrapper prefixes such as `module.`
        included) show for this family, or None when they are not this family's.
    """

    family: str
    config_type: type
    canonical_layout: str  # one line for messages and docs
    expected_shapes: Callable[[Any], dict[str, Shape]]
    check_config: Callable[[StateDict, Any], None]
    check_config_limits: Callable[[Any, str], None]
    describe: Callable[[Any], str]
    readers: Mapping[str, Callable[[StateDict], StateDict]]
    writers: Mapping[str, Callable[[StateDict], StateDict]]
    detect_format: Callable[[list[str]], Optional[str]]
    infer_config: Optional[Callable[..., Any]] = None  # (state_dict, **options) -> config
    # transformers directories: config.json's model_type values, and the config both ways.
    hf_model_types: tuple[str, ...] = ()
    hf_config_to_config: Optional[Callable[[dict[str, Any]], Any]] = None
    config_to_hf_config: Optional[Callable[[Any, str], dict[str, Any]]] = None
    # The tokenizer a transformers directory's files describe (None: the family's default), and
    # the files (tokenizer, preprocessor_config.json) that make a written directory complete.
    read_hf_tokenizer: Optional[Callable[[Path], Optional[TokenizerConfig]]] = None
    write_hf_files: Optional[Callable[[Path, ModelRecord], None]] = None
    # open_clip model configs (open_clip_config.json's "model_cfg"): is it this family's, and its config.
    is_open_clip_config: Callable[[dict[str, Any]], bool] = field(default=lambda cfg: False)
    open_clip_config_to_config: Optional[Callable[[dict[str, Any]], Any]] = None
    # ... and back: the model_cfg an open_clip hub directory written for this config holds (None: the
    # family's open_clip files, if it has a writer, are written as a single weights file only).
    config_to_open_clip_config: Optional[Callable[[Any], dict[str, Any]]] = None


def _clip_detect_format(keys: list[str]) -> Optional[str]:
    """OpenAI's and open_clip's default layouts are the same; "open_clip" only when something
    open_clip-specific shows (training-wrapper prefixes, `text.` nesting, `logit_bias`, the
    `attn_mask` buffer TorchScript exports of open_clip models keep)."""
    bare = [strip_wrapper_prefix(k) for k in keys]
    if any(k.startswith(("vision_model.", "text_model.")) for k in bare):
        return "hf"
    if bare != keys or {"logit_bias", "attn_mask"} & set(bare) or any(k.startswith("text.") for k in bare):
        return "open_clip"
    if any(k.startswith("visual.") for k in bare) or "token_embedding.weight" in bare:
        return "openai"
    return None


def _clip_is_open_clip_config(model_cfg: dict[str, Any]) -> bool:
    return True  # the fallback: CLIP's reader names whatever it cannot read


CLIP_LAYOUT = FamilyLayout(
    family="clip",
    config_type=ClipConfig,
    canonical_layout="OpenAI's clip.model.CLIP state dict",
    expected_shapes=lambda cfg: clip_expected_shapes(cfg),
    check_config=lambda sd, cfg: clip_check_config(sd, cfg),
    check_config_limits=lambda cfg, source="config": clip_check_config_limits(cfg, source),
    describe=lambda cfg: clip_describe(cfg),
    readers={
        "hf": hf_to_canonical,
        "open_clip": lambda sd: openai_to_canonical(open_clip_to_canonical(sd)),
        "openai": openai_to_canonical,
        "clipforge": openai_to_canonical,
    },
    writers={
        "hf": canonical_to_hf,
        "open_clip": canonical_to_open_clip,
        "openai": canonical_to_openai,
        "clipforge": canonical_to_openai,
    },
    detect_format=_clip_detect_format,
    infer_config=lambda sd, **options: clip_infer_config(sd, **options),
    # One tower's directories (diffusers' text_encoder/, CLIPVisionModel repos) are CLIP's too.
    hf_model_types=("clip", "clip_text_model", "clip_vision_model"),
    hf_config_to_config=hf_config_to_clip_config,
    config_to_hf_config=lambda cfg, dtype="float32": clip_config_to_hf_config(cfg, dtype=dtype),
    is_open_clip_config=_clip_is_open_clip_config,
    open_clip_config_to_config=open_clip_config_to_clip_config,
)

CHINESE_CLIP_LAYOUT = FamilyLayout(
    family="chinese_clip",
    config_type=ChineseClipConfig,
    canonical_layout="CLIP's ViT under visual., a BERT tower under text., text_projection, logit_scale",
    expected_shapes=chinese_clip.expected_shapes,
    check_config=chinese_clip.check_config,
    check_config_limits=lambda cfg, source="config": chinese_clip.check_limits(cfg, source),
    describe=chinese_clip.describe,
    readers={"hf": chinese_clip.hf_to_canonical_chinese_clip, "clipforge": dict},
    writers={"hf": chinese_clip.canonical_to_hf_chinese_clip, "clipforge": dict},
    detect_format=chinese_clip.detect_format,
    hf_model_types=("chinese_clip",),
    hf_config_to_config=chinese_clip.hf_config_to_config,
    config_to_hf_config=chinese_clip.config_to_hf_config,
    read_hf_tokenizer=chinese_clip.read_hf_tokenizer,
    write_hf_files=chinese_clip.write_hf_files,
)


XLM_ROBERTA_CLIP_LAYOUT = FamilyLayout(
    family="xlm_roberta_clip",
    config_type=XlmRobertaClipConfig,
    canonical_layout="CLIP's ViT under visual., an XLM-R tower under text., text_projection.{0,2}, logit_scale",
    expected_shapes=xlm_roberta.expected_shapes,
    check_config=xlm_roberta.check_config,
    check_config_limits=lambda cfg, source="config": xlm_roberta.check_limits(cfg, source),
    describe=xlm_roberta.describe,
    readers={"open_clip": xlm_roberta.open_clip_to_canonical, "clipforge": dict},
    writers={"clipforge": dict},  # reading open_clip's layout only: clipforge does not write open_clip files of other families
    detect_format=xlm_roberta.detect_format,
    infer_config=xlm_roberta.infer_config,
    read_hf_tokenizer=xlm_roberta.read_tokenizer,
    is_open_clip_config=xlm_roberta.is_open_clip_config,
    open_clip_config_to_config=xlm_roberta.open_clip_config_to_config,
)

# EVA02-CLIP (open_clip's EVA02-* models): eva.py.
EVA_CLIP_LAYOUT = FamilyLayout(
    family="eva_clip",
    config_type=EvaClipConfig,
    canonical_layout="CLIP's text tower (OpenAI's names) + timm's EVA names under visual.",
    expected_shapes=eva.expected_shapes,
    check_config=eva.check_config,
    check_config_limits=eva.check_config_limits,
    describe=eva.describe,
    readers={"open_clip": eva.open_clip_to_canonical, "clipforge": eva.identity},
    writers={"open_clip": eva.canonical_to_open_clip, "clipforge": eva.identity},
    detect_format=eva.detect_format,
    infer_config=eva.infer_eva_config,
    is_open_clip_config=eva.is_open_clip_config,
    open_clip_config_to_config=eva.open_clip_config_to_eva_config,
    config_to_open_clip_config=eva.eva_config_to_open_clip_config,
)

# MobileCLIP-B / MobileCLIP2-B (open_clip): mobileclip.py.
MOBILECLIP_LAYOUT = FamilyLayout(
    family="mobileclip",
    config_type=MobileClipConfig,
    canonical_layout="CLIP's text tower (OpenAI's names) + the conv-stem ViT under visual. (OpenAI's block names)",
    expected_shapes=mobileclip.expected_shapes,
    check_config=mobileclip.check_config,
    check_config_limits=mobileclip.check_config_limits,
    describe=mobileclip.describe,
    readers={"open_clip": mobileclip.open_clip_to_canonical, "clipforge": mobileclip.identity},
    writers={"open_clip": mobileclip.canonical_to_open_clip, "clipforge": mobileclip.identity},
    detect_format=mobileclip.detect_format,
    infer_config=mobileclip.infer_mobileclip_config,
    is_open_clip_config=mobileclip.is_open_clip_config,
    open_clip_config_to_config=mobileclip.open_clip_config_to_mobileclip_config,
    config_to_open_clip_config=mobileclip.mobileclip_config_to_open_clip_config,
)

SIGLIP_LAYOUT = FamilyLayout(
    family="siglip",
    config_type=SiglipConfig,
    canonical_layout="clipforge's SiglipModel state dict (checkpoint_formats/siglip.py)",
    expected_shapes=siglip.expected_shapes,
    check_config=siglip.check_config,
    check_config_limits=siglip.check_config_limits,
    describe=siglip.describe,
    readers={"hf": siglip.hf_to_canonical, "open_clip": siglip.open_clip_to_canonical, "clipforge": lambda sd: dict(sd)},
    writers={"hf": siglip.canonical_to_hf, "clipforge": lambda sd: dict(sd)},
    detect_format=siglip.detect_format,
    infer_config=None,  # head counts do not show in shapes: the file (or arch=) must state the config
    hf_model_types=("siglip", "siglip2"),
    hf_config_to_config=siglip.hf_config_to_config,
    config_to_hf_config=siglip.config_to_hf_config,
    read_hf_tokenizer=siglip.read_hf_tokenizer,
    write_hf_files=siglip.write_hf_files,
    is_open_clip_config=siglip.is_open_clip_config,
    open_clip_config_to_config=siglip.open_clip_config_to_config,
)

# family name -> its layouts. CLIP is last in detection order: it is the fallback for unknown keys.
FAMILY_LAYOUTS: dict[str, FamilyLayout] = {
    "clip": CLIP_LAYOUT,
    "chinese_clip": CHINESE_CLIP_LAYOUT,
    "xlm_roberta_clip": XLM_ROBERTA_CLIP_LAYOUT,
    "eva_clip": EVA_CLIP_LAYOUT,
    "mobileclip": MOBILECLIP_LAYOUT,
    "siglip": SIGLIP_LAYOUT,
}


def family_layout(family: str) -> FamilyLayout:
    try:
        return FAMILY_LAYOUTS[family]
    except (KeyError, TypeError):
        raise CheckpointError(f"unknown model family {str(family)[:40]!r}; known: {', '.join(FAMILY_LAYOUTS)}") from None


def layout_of(config: Any) -> FamilyLayout:
    """The layout of a config's family."""
    family = getattr(config, "family", None)
    layout = FAMILY_LAYOUTS.get(family) if isinstance(family, str) else None
    if layout is None or not isinstance(config, layout.config_type):
        raise CheckpointError(f"not a model config of a known family: {type(config).__name__}")
    return layout


def _detection_order() -> list[FamilyLayout]:
    return [layout for name, layout in FAMILY_LAYOUTS.items() if name != "clip"] + [CLIP_LAYOUT]


# ---- dispatch: what the rest of the package (and loading) calls ------------------------------------


def expected_shapes(cfg: Any) -> dict[str, Shape]:
    """Every canonical key of `cfg`'s architecture with its shape, in state_dict order (any family)."""
    return layout_of(cfg).expected_shapes(cfg)


def check_config(state_dict: StateDict, cfg: Any) -> None:
    """Raise CheckpointError unless the canonical `state_dict` has exactly `cfg`'s keys and shapes."""
    layout_of(cfg).check_config(state_dict, cfg)


def check_config_limits(cfg: Any, source: str = "config") -> None:
    """Raise CheckpointError unless every size in `cfg` is within sane limits (any family)."""
    layout_of(cfg).check_config_limits(cfg, source)


def describe(cfg: Any) -> str:
    """A one-line name for the architecture, for messages."""
    return layout_of(cfg).describe(cfg)


def infer_config(state_dict: StateDict, activation: Optional[str] = None, family: str = "clip") -> Any:
    """A config read off the shapes of a canonical state dict of `family` (CLIP: OpenAI's rule, with
    `activation`, QuickGELU by default; see `infer_config.infer_config`)."""
    layout = family_layout(family)
    if layout.infer_config is None:
        raise CheckpointError(f"a {family} config cannot be read off tensor shapes: the file must state it")
    return layout.infer_config(state_dict, **({} if activation is None else {"activation": activation}))


def detect_family(keys: list[str]) -> tuple[str, str]:
    """(family, format) that a state dict's keys (as stored) show."""
    for layout in _detection_order():
        fmt = layout.detect_format(keys)
        if fmt is not None:
            return layout.family, fmt
    raise CheckpointError(
        f"unrecognized state-dict layout (none of the families {', '.join(FAMILY_LAYOUTS)}); first keys: {keys[:8]}"
    )


def hf_family(config_json: dict[str, Any]) -> str:
    """The family of a transformers config.json, by its model_type (CLIP when it names none)."""
    model_type = config_json.get("model_type", "clip")
    for layout in FAMILY_LAYOUTS.values():
        if model_type in layout.hf_model_types:
            return layout.family
    known = [t for layout in FAMILY_LAYOUTS.values() for t in layout.hf_model_types]
    raise CheckpointError(f"config.json is for model_type {str(model_type)[:40]!r}; clipforge reads {known}")


def hf_config_to_config(config_json: dict[str, Any]) -> Any:
    """The architecture config of a transformers config.json, whichever family it is."""
    layout = family_layout(hf_family(config_json))
    assert layout.hf_config_to_config is not None
    return layout.hf_config_to_config(config_json)


def open_clip_family(model_cfg: dict[str, Any]) -> str:
    """The family of an open_clip model config (open_clip_config.json's "model_cfg")."""
    for layout in _detection_order():
        if layout.is_open_clip_config(model_cfg):
            return layout.family
    return "clip"
