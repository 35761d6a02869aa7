"""Model code: plain nn.Modules built from configs; no files, no hub."""

from clipforge.models.clip_model import ClipModel, ClipOutput, TextOutput
from clipforge.models.modified_resnet import ModifiedResNet
from clipforge.models.vision_transformer import VisionTransformer

__all__ = ["ClipModel", "ClipOutput", "TextOutput", "VisionTransformer", "ModifiedResNet"]
