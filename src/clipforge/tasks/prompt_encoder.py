"""`load_prompt_encoder(path)`: the CLIP text encoder(s) of a Stable Diffusion checkpoint, encoding
prompts exactly as that pipeline feeds its UNet.

    enc = clipforge.load_prompt_encoder("sd_xl_base_1.0.safetensors")
    out = enc(["a red rose, oil painting"], clip_skip=None)   # PromptEmbedding
    out.hidden_states   # [B, 77, 2048] for SDXL (768 for SD1, 1024 for SD2)
    out.pooled          # [B, 1280] for SDXL; None where the pipeline uses none
    enc.preset          # "sd1" | "sd2" | "sdxl" | "sdxl-refiner" | "sd3" | "flux"

What each pipeline uses (diffusers 0.42's `encode_prompt`, and SGM / the original repos):

| preset       | encoders (pad id)         | hidden states                                   | pooled                          |
|--------------|---------------------------|-------------------------------------------------|---------------------------------|
| sd1          | CLIP-L (49407)            | last layer + final LN, [B, 77, 768]             | none                            |
| sd2          | OpenCLIP-H (0)            | penultimate layer + final LN, [B, 77, 1024]     | none                            |
| sdxl         | CLIP-L (49407), bigG (0)  | both penultimate, no final LN, concatenated: 2048 | bigG: final LN at the end token x text_projection, 1280 |
| sdxl-refiner | bigG (0)                  | penultimate, no final LN, 1280                  | bigG projected, 1280            |
| sd3          | CLIP-L (49407), bigG (0)  | both penultimate, no final LN, concatenated: 2048 (the pipeline then pads to 4096 and appends T5's, which is not CLIP and not loaded) | both projected, concatenated: 2048 |
| flux         | CLIP-L (49407)            | none (T5 gives them)                            | CLIP-L pooler output (final LN at the end token), 768 |

`clip_skip` counts as AUTOMATIC1111 does (1 = no skip) or, with `clip_skip_convention="diffusers"`,
as diffusers does (0/None = no skip); long prompts are cut into 75-token windows as A1111 does
(`long_prompts="chunk"`); see `clipforge.tasks.diffusion_conditioning`. `encode_with_negative`
gives the unconditional half as the pipelines make it (SDXL base: zeros for no negative prompt,
as `force_zeros_for_empty_prompt`; the others encode "").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from clipforge.errors import InvalidInputError
from clipforge.models import CausalTextTransformer
from clipforge.tasks.diffusion_conditioning import (
    PRESETS,
    ClipSkipConvention,
    ConditioningPreset,
    LongPrompts,
    PromptEmbedding,
    encode_prompt,
)

__all__ = ["PromptEncoder", "load_prompt_encoder", "PIPELINE_SLOTS"]

PathLike = Union[str, "os.PathLike[str]"]

# Which conditioning preset each encoder of each pipeline is read with.
PIPELINE_SLOTS: dict[str, dict[str, str]] = {
    "sd1": {"clip_l": "sd1"},
    "sd2": {"clip_h": "sd2"},
    "sdxl": {"clip_l": "sdxl-1", "clip_g": "sdxl-2"},
    "sdxl-refiner": {"clip_g": "sdxl-2"},
    "sd3": {"clip_l": "sd3-1", "clip_g": "sd3-2"},
    "flux": {"clip_l": "flux"},
}


@dataclass
class PromptEncoder:
    """The text encoder(s) of one pipeline; call it with prompts (see the module docstring)."""

    preset: str
    encoders: dict[str, CausalTextTransformer]  # "clip_l" / "clip_h" / "clip_g", in the pipeline's order
    source: str = ""
    notes: list[str] = field(default_factory=list)  # e.g. "a T5-XXL text encoder is there too ..."
    pad_token_ids: dict[str, int] = field(default_factory=dict)  # per encoder, from the files when they say

    def presets(self) -> dict[str, ConditioningPreset]:
        out = {}
        for name in self.encoders:
            preset = PRESETS[PIPELINE_SLOTS[self.preset][name]]
            if name in self.pad_token_ids:  # a diffusers folder's tokenizer says how it pads
                preset = ConditioningPreset(self.pad_token_ids[name], preset.layer_from_end,
                                            preset.final_layer_norm, preset.projected_pooled)
            out[name] = preset
        return out

    def __call__(
        self, texts: Union[str, Sequence[str]], clip_skip: Optional[int] = None,
        clip_skip_convention: ClipSkipConvention = "a1111", long_prompts: LongPrompts = "truncate",
    ) -> PromptEmbedding:
        with torch.no_grad():
            parts = {name: encode_prompt(model, texts, preset, clip_skip, clip_skip_convention, long_prompts)
                     for (name, model), preset in zip(self.encoders.items(), self.presets().values())}
        first = next(iter(parts.values()))
        if self.preset == "flux":
            return PromptEmbedding(None, first.pooled, first.tokens)
        hidden = torch.cat([p.hidden_states for p in parts.values()], dim=-1)
        if self.preset in ("sd1", "sd2"):
            pooled = None
        elif self.preset == "sd3":
            pooled = torch.cat([p.pooled for p in parts.values()], dim=-1)
        else:  # sdxl / sdxl-refiner: bigG's projected pool
            pooled = parts["clip_g"].pooled
        return PromptEmbedding(hidden, pooled, first.tokens)

    def encode_with_negative(
        self, prompts: Union[str, Sequence[str]], negative_prompts: Union[str, Sequence[str], None] = None,
        **kwargs: object,
    ) -> tuple[PromptEmbedding, PromptEmbedding]:
        """(conditional, unconditional) embeddings for classifier-free guidance, as the pipeline makes them."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        cond = self(prompts, **kwargs)  # type: ignore[arg-type]
        if negative_prompts is None and self.preset == "sdxl":  # diffusers' force_zeros_for_empty_prompt
            zeros = lambda t: None if t is None else torch.zeros_like(t)  # noqa: E731
            return cond, PromptEmbedding(zeros(cond.hidden_states), zeros(cond.pooled), torch.zeros_like(cond.tokens))
        if negative_prompts is None:
            negative_prompts = [""] * len(prompts)
        negative_prompts = [negative_prompts] if isinstance(negative_prompts, str) else list(negative_prompts)
        if len(negative_prompts) != len(prompts):
            raise InvalidInputError(f"{len(prompts)} prompts but {len(negative_prompts)} negative prompts")
        uncond = self(negative_prompts, **kwargs)  # type: ignore[arg-type]
        if uncond.tokens.shape != cond.tokens.shape and uncond.hidden_states is not None:
            raise InvalidInputError("chunked prompts and negative prompts must have the same number of 75-token windows")
        return cond, uncond

    def describe(self) -> str:
        names = ", ".join(f"{name} ({sum(p.numel() for p in m.parameters()) / 1e6:.0f}M)" for name, m in self.encoders.items())
        return f"{self.preset}: {names}" + "".join(f"; {note}" for note in self.notes)


def load_prompt_encoder(
    path: PathLike, *, preset: Optional[str] = None, dtype: Optional[torch.dtype] = None,
    device: Union[str, torch.device, None] = None,
) -> PromptEncoder:
    """The CLIP text encoder(s) of a Stable Diffusion single-file checkpoint (.safetensors, or .ckpt
    read by the safe unpickler: no code in the file runs) or a diffusers folder. Only the text
    encoders' tensors are read. `preset` overrides the pipeline told from the file (e.g. "sd1" for a
    stand-alone CLIP-L file that would otherwise be read as Flux's). `dtype` (default fp32) keeps,
    e.g., fp16 weights in half the memory."""
    from clipforge.checkpoint_formats.stable_diffusion import read_text_encoders, text_config_of
    from clipforge.loading import build_text_encoder

    path = Path(os.fspath(path)).expanduser()
    layout, tensors, configs = read_text_encoders(path)
    pipeline = preset or layout.pipeline
    if pipeline not in PIPELINE_SLOTS:
        raise InvalidInputError(f"preset must be one of {', '.join(PIPELINE_SLOTS)}, got {pipeline!r}")
    wanted = PIPELINE_SLOTS[pipeline]
    missing = [name for name in wanted if name not in tensors]
    if missing:
        raise InvalidInputError(f"{path}: preset {pipeline!r} needs the {', '.join(missing)} text encoder(s); "
                                f"the file holds {', '.join(tensors) or 'none'}")
    encoders = {}
    for slot in layout.slots:
        if slot.name not in wanted:
            continue
        where = f"{path} ({slot.name})"
        text, embed_dim = text_config_of(tensors[slot.name], where, configs.get(slot.name))
        model = build_text_encoder(text, embed_dim, slot.activation, tensors.pop(slot.name), where, dtype=dtype)
        encoders[slot.name] = model.to(device) if device is not None else model
    pads = {slot.name: slot.pad_token_id for slot in layout.slots if layout.diffusers and slot.name in encoders}
    return PromptEncoder(pipeline, encoders, str(path), list(layout.notes), pads)
