"""Prompt templates for zero-shot classification (data only).

Each template is a `str.format` string with one `{}` for the label, as in OpenAI's notebooks.

- `OPENAI_IMAGENET_TEMPLATES`: the 80 templates of OpenAI's "Prompt_Engineering_for_ImageNet"
  notebook (github.com/openai/CLIP, notebooks/), in the notebook's order.
- `SIMPLE_TEMPLATES`: the 7-template subset the same notebook found by sequential forward
  selection ("a subset of 7 templates"), which gets most of the benefit at 1/11 of the text cost.

`tests/test_zero_shot.py` checks both lists against open_clip's copies (`zero_shot_metadata`).
"""

from __future__ import annotations

__all__ = ["CHINESE_TEMPLATES", "OPENAI_IMAGENET_TEMPLATES", "SIMPLE_TEMPLATES", "TEMPLATE_SETS"]

OPENAI_IMAGENET_TEMPLATES: tuple[str, ...] = (
    'a bad photo of a {}.',
    'a photo of many {}.',
    'a sculpture of a {}.',
    'a photo of the hard to see {}.',
    'a low resolution photo of the {}.',
    'a rendering of a {}.',
    'graffiti of a {}.',
    'a bad photo of the {}.',
    'a cropped photo of the {}.',
    'a tattoo of a {}.',
    'the embroidered {}.',
    'a photo of a hard to see {}.',
    'a bright photo of a {}.',
    'a photo of a clean {}.',
    'a photo of a dirty {}.',
    'a dark photo of the {}.',
    'a drawing of a {}.',
    'a photo of my {}.',
    'the plastic {}.',
    'a photo of the cool {}.',
    'a close-up photo of a {}.',
    'a black and white photo of the {}.',
    'a painting of the {}.',
    'a painting of a {}.',
    'a pixelated photo of the {}.',
    'a sculpture of the {}.',
    'a bright photo of the {}.',
    'a cropped photo of a {}.',
    'a plastic {}.',
    'a photo of the dirty {}.',
    'a jpeg corrupted photo of a {}.',
    'a blurry photo of the {}.',
    'a photo of the {}.',
    'a good photo of the {}.',
    'a rendering of the {}.',
    'a {} in a video game.',
    'a photo of one {}.',
    'a doodle of a {}.',
    'a close-up photo of the {}.',
    'a photo of a {}.',
    'the origami {}.',
    'the {} in a video game.',
    'a sketch of a {}.',
    'a doodle of the {}.',
    'a origami {}.',
    'a low resolution photo of a {}.',
    'the toy {}.',
    'a rendition of the {}.',
    'a photo of the clean {}.',
    'a photo of a large {}.',
    'a rendition of a {}.',
    'a photo of a nice {}.',
    'a photo of a weird {}.',
    'a blurry photo of a {}.',
    'a cartoon {}.',
    'art of a {}.',
    'a sketch of the {}.',
    'a embroidered {}.',
    'a pixelated photo of a {}.',
    'itap of the {}.',
    'a jpeg corrupted photo of the {}.',
    'a good photo of a {}.',
    'a plushie {}.',
    'a photo of the nice {}.',
    'a photo of the small {}.',
    'a photo of the weird {}.',
    'the cartoon {}.',
    'art of the {}.',
    'a drawing of the {}.',
    'a photo of the large {}.',
    'a black and white photo of a {}.',
    'the plushie {}.',
    'a dark photo of a {}.',
    'itap of a {}.',
    'graffiti of the {}.',
    'a toy {}.',
    'itap of my {}.',
    'a photo of a cool {}.',
    'a photo of a small {}.',
    'a tattoo of the {}.',
)

SIMPLE_TEMPLATES: tuple[str, ...] = (
    'itap of a {}.',
    'a bad photo of the {}.',
    'a origami {}.',
    'a photo of the large {}.',
    'a {} in a video game.',
    'art of the {}.',
    'a photo of the small {}.',
)

# For models whose text tower was trained on Chinese (Chinese-CLIP): a short set in the manner of
# Chinese-CLIP's own ImageNet templates (github.com/OFA-Sys/Chinese-CLIP, cn_clip/eval), which
# translate OpenAI's. A model's record names its default set (TokenizerConfig.prompt_templates).
CHINESE_TEMPLATES: tuple[str, ...] = (
    '{}的照片。',
    '一张{}的照片。',
    '一张清晰的{}的照片。',
    '一张模糊的{}的照片。',
    '{}的特写照片。',
    '一幅{}的画。',
    '{}的黑白照片。',
)

# Names the CLI (`--templates`) and `build_classifier(templates="...")` accept. "none": the label as is.
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "openai": OPENAI_IMAGENET_TEMPLATES,
    "simple": SIMPLE_TEMPLATES,
    "none": ("{}",),
    "chinese": CHINESE_TEMPLATES,
}
