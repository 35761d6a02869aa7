"""Convert a checkpoint between formats, checking the result numerically before anything is written,
and, where the target's own library is installed, checking the written file with that library.

A check that compares clipforge with clipforge only catches asymmetric key-mapping bugs; reading the
written file with transformers / open_clip / OpenAI's clip catches what their readers disagree with.
Those libraries are optional: without them the second check is reported as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import json
from typing import Any, Optional, Union

import torch

from clipforge.checkpoint_formats import from_canonical, read_checkpoint, to_canonical
from clipforge.errors import ClipforgeRuntimeError
from clipforge.loading import SaveFormat, build_model, load, save
from clipforge.models import ClipModel


@dataclass(frozen=True)
class ConversionReport:
    source: str
    destination: str
    format: str
    max_abs_diff: float  # largest |difference| over image features, text features and logits
    feature_scale: float  # largest |value| of the source's outputs, to read the difference against
    library_check: str = "not checked by another library"  # what the target's own library said of the written file


def compare_models(a: ClipModel, b: ClipModel, seed: int = 0) -> tuple[float, float]:
    """Max abs difference of image/text features and logits on fixed random inputs, and the output scale."""
    pixels, tokens = _probe_inputs(a, seed)
    diff, scale = 0.0, 0.0
    with torch.no_grad():
        for fn in (lambda m: m.encode_image(pixels.to(m.dtype)), lambda m: m.encode_text(tokens), lambda m: m(pixels, tokens)[0]):
            x, y = fn(a).float(), fn(b).float()
            diff = max(diff, (x - y).abs().max().item())
            scale = max(scale, x.abs().max().item())
    return diff, scale


def convert(
    source: Union[str, Path], destination: Union[str, Path], to: SaveFormat, *, arch: Optional[str] = None,
    rtol: float = 1e-5,
) -> ConversionReport:
    """Load `source`, convert to `to`, verify the converted weights give the same numbers, then write."""
    model, _, _ = load(source, arch=arch)
    canonical = {k: v.detach() for k, v in model.state_dict().items()}
    if to != "clipforge":
        # Go through the target layout and back in memory: this is exactly what a reader of the file will see.
        family = model.config.family
        canonical = to_canonical(from_canonical(canonical, to, family=family), to, family=family)
    converted = build_model(model.config, canonical, source=f"{source} as {to}").eval()
    converted.record = model.record  # the numerics travel with the weights
    diff, scale = compare_models(model, converted)
    if diff > rtol * max(scale, 1.0):
        raise ClipforgeRuntimeError(f"conversion of {source} to {to} changes outputs: max abs difference {diff:.3g} (scale {scale:.3g}); nothing written")
    save(converted, destination, format=to)
    # Read back what was written: it must hold exactly the tensors we checked.
    written_checkpoint = read_checkpoint(Path(destination))
    written = to_canonical(written_checkpoint.state_dict, written_checkpoint.format, family=written_checkpoint.family)
    for key, tensor in canonical.items():
        if key not in written or not torch.equal(written[key], tensor):
            raise ClipforgeRuntimeError(f"{destination}: tensor {key!r} differs after writing")
    library_check = check_with_target_library(model, Path(destination), to, rtol)
    return ConversionReport(str(source), str(destination), to, diff, scale, library_check)


def _probe_inputs(model: ClipModel, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    pixels = torch.randn(2, 3, size, size, generator=gen)
    return pixels, model.example_tokens(2, generator=gen)  # ids as the model's tokenizer gives them


def check_with_target_library(model: ClipModel, destination: Path, to: str, rtol: float = 1e-5) -> str:
    """Load the written file with the target format's own library and compare its image and text
    features with `model`'s. Returns what happened ("transformers: max abs difference 2e-06", or
    why it was skipped); raises ClipforgeRuntimeError when the library reads different numbers."""
    pixels, tokens = _probe_inputs(model)
    try:
        if to == "hf":
            import transformers

            # AutoModel: the class config.json's model_type names (CLIPModel, SiglipModel, ...).
            reference = transformers.AutoModel.from_pretrained(destination).eval()
            name = f"transformers {transformers.__version__}"

            # Models whose text tower masks padding (BERT-style: Chinese-CLIP) say which mask transformers
            # must be given; CLIP and SigLIP read every position as transformers does without one.
            mask = getattr(model, "text_attention_mask", None)
            text_inputs = {"input_ids": tokens, **({} if mask is None else {"attention_mask": mask(tokens)})}

            def features(m: Any) -> tuple[torch.Tensor, torch.Tensor]:
                image, text = m.get_image_features(pixel_values=pixels), m.get_text_features(**text_inputs)
                unwrap = lambda x: x if torch.is_tensor(x) else x.pooler_output  # noqa: E731 (transformers 5 returns outputs)
                return unwrap(image), unwrap(text)
        elif to == "open_clip" and destination.is_dir():
            import open_clip

            config = json.loads((destination / "open_clip_config.json").read_text())["model_cfg"]
            # CustomTextCLIP (the text tower under `text.`) for the families open_clip builds that way.
            cls = open_clip.model.CustomTextCLIP if config.get("custom_text") else open_clip.model.CLIP
            reference = cls(**{k: v for k, v in config.items() if k != "custom_text"}).eval()
            open_clip.load_checkpoint(reference, str(destination / "open_clip_model.safetensors"))
            name = f"open_clip {open_clip.__version__}"

            def features(m: Any) -> tuple[torch.Tensor, torch.Tensor]:
                return m.encode_image(pixels), m.encode_text(tokens)
        elif to == "openai":
            import clip as openai_clip

            # clip.load builds the model with clip.model.build_model, which rounds the weights through
            # fp16 (convert_weights) before `.float()`: that would hide the file's fp32 numbers behind
            # ~1e-3 of rounding. The same builder, then the file's tensors copied in at full precision.
            state = torch.load(destination, map_location="cpu", weights_only=True)
            state = state.state_dict() if hasattr(state, "state_dict") else state
            reference = openai_clip.model.build_model(dict(state)).float().eval()
            reference.load_state_dict({k: v for k, v in state.items()
                                       if k not in ("input_resolution", "context_length", "vocab_size")}, strict=True)
            name = "OpenAI's clip (its build_model, fp32 weights)"

            def features(m: Any) -> tuple[torch.Tensor, torch.Tensor]:
                return m.encode_image(pixels), m.encode_text(tokens)
        else:
            return "not checked by another library (none reads this format)" if to == "clipforge" else \
                "not checked by open_clip (it reads a single weights file only with its architecture name)"
    except ImportError as e:
        return f"not checked by another library ({e.name or e} is not installed)"
    with torch.no_grad():
        ours = (model.encode_image(pixels).float(), model.encode_text(tokens).float())
        theirs = tuple(t.float() for t in features(reference))
    diff = max((a - b).abs().max().item() for a, b in zip(ours, theirs))
    scale = max(a.abs().max().item() for a in ours)
    if diff > rtol * max(scale, 1.0):
        raise ClipforgeRuntimeError(f"{destination}: {name} reads different numbers from the written file "
                                    f"(max abs difference {diff:.3g}, scale {scale:.3g})")
    return f"{name} reads the same numbers from it (max abs difference {diff:.3g})"
