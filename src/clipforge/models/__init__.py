"""Model code: plain nn.Modules built from configs; no files, no hub."""

from clipforge.models.clip_model import ClipModel, ClipOutput
from clipforge.models.modified_resnet import ModifiedResNet
from clipforge.models.text_transformer import CausalTextTransformer, TextOutput
from clipforge.models.vision_transformer import VisionTransformer

__all__ = ["ClipModel", "ClipOutput", "CausalTextTransformer", "TextOutput", "VisionTransformer", "ModifiedResNet"]
