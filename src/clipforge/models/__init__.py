"""Model code: plain nn.Modules built from configs; no files, no hub.

One model class per family; `MODEL_CLASSES` maps each family's architecture config class to it
(docs/families.md): `build_model(config, towers)` is how the rest of the library gets a model
for any config.
"""

from typing import Any

from clipforge.configs import ChineseClipConfig, ClipConfig, EvaClipConfig, MobileClipConfig, SiglipConfig, XlmRobertaClipConfig
from clipforge.errors import InvalidInputError
from clipforge.models.bert_clip import ChineseClipModel, XlmRobertaClipModel
from clipforge.models.clip_model import ClipModel
from clipforge.models.family import ClipOutput
from clipforge.models.family import ImageOutput, TowerNotLoadedError, Towers, image_tokens
from clipforge.models.modified_resnet import ModifiedResNet
from clipforge.models.siglip import SiglipModel, SiglipOutput
from clipforge.models.text_transformer import CausalTextTransformer, TextOutput
from clipforge.models.tower_clip import EvaClipModel, MobileClipModel, TowerClipModel
from clipforge.models.vision_transformer import VisionTransformer

# architecture config class -> model class. A new family adds one line here (docs/families.md).
MODEL_CLASSES: dict[type, type] = {
    ClipConfig: ClipModel,
    ChineseClipConfig: ChineseClipModel,
    XlmRobertaClipConfig: XlmRobertaClipModel,
    EvaClipConfig: EvaClipModel,
    MobileClipConfig: MobileClipModel,
    SiglipConfig: SiglipModel,
}


def model_class(config: Any) -> type:
    """The model class of an architecture config (any family)."""
    try:
        return MODEL_CLASSES[type(config)]
    except KeyError:
        raise InvalidInputError(f"no model class for {type(config).__name__}; known: "
                                f"{', '.join(c.__name__ for c in MODEL_CLASSES)}") from None


def build_model(config: Any, towers: Towers = "both") -> Any:
    """A randomly initialised model of `config`'s family (towers: "both", "image" or "text")."""
    return model_class(config)(config, towers=towers)


__all__ = [
    "MODEL_CLASSES",
    "ChineseClipModel",
    "ClipModel",
    "XlmRobertaClipModel",
    "ClipOutput",
    "EvaClipModel",
    "MobileClipModel",
    "TowerClipModel",
    "CausalTextTransformer",
    "ImageOutput",
    "TextOutput",
    "TowerNotLoadedError",
    "Towers",
    "VisionTransformer",
    "ModifiedResNet",
    "SiglipModel",
    "SiglipOutput",
    "build_model",
    "image_tokens",
    "model_class",
]
