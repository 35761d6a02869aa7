"""Stable Diffusion text conditioning: the token states each pipeline feeds its UNet, from a CLIP text tower.

What the pipelines use (diffusers 0.42 `encode_prompt`, and the original repos before it):

* SD 1.x: transformers `CLIPTextModel` (OpenAI ViT-L/14), `last_hidden_state`, i.e. after the final
  LayerNorm. Tokenizer pads with the end token 49407.
* SD 2.x: OpenCLIP ViT-H/14 with open_clip's layer "penultimate": the output of the second-to-last
  block WITH the final LayerNorm. (diffusers ships this text encoder with its last block removed,
  so there it is that 23-layer model's `last_hidden_state`.) Tokenizer pads with 0 ("!").
* SDXL: two encoders, each `hidden_states[-2]` WITHOUT the final LayerNorm: CLIP ViT-L/14
  (`encoder=1`, pads with 49407) and OpenCLIP bigG/14 (`encoder=2`, pads with 0). The caller
  concatenates the two along the feature dimension (768 + 1280 = 2048). The pooled vector SDXL
  adds to its time embedding is the bigG encoder's projected `text_embeds` (last layer, final
  LayerNorm, end-of-text token, text projection).

No attention mask is used, as in the pipelines: the causal mask alone decides what each position
sees, so the padding tokens' states (which the UNet attends to) depend on the pad id.

CLIP skip (a later layer skipped = an earlier layer used), counted from the preset's own layer:

| convention  | value | SD 1.x                        | SD 2.x / SDXL                         |
|-------------|-------|-------------------------------|---------------------------------------|
| "a1111"     | N=1   | last layer (+ LN) = default   | preset's layer = default              |
| "a1111"     | N=2   | hidden_states[-2] + LN        | one layer before the preset's         |
| "diffusers" | k=1   | hidden_states[-2] + LN        | one layer before the preset's         |
| either      | None  | preset's layer                | preset's layer                        |

So a1111 N equals diffusers k + 1, and the final LayerNorm is applied exactly when the preset
applies it (SD 1.x/2.x yes, SDXL no), as both tools do for SD 1.x and diffusers does for all three.
(AUTOMATIC1111 itself ignores CLIP skip for SD 2.x and SDXL's bigG encoder.)

Long prompts (`long_prompts="chunk"`): AUTOMATIC1111's scheme. The token ids are cut into windows
of 75; each window gets its own start and end token and padding to 77, is encoded separately,
and the states are concatenated along the sequence: [B, 77 * k, D]. Prompts in a batch with fewer
windows get empty ones (the encoding of ""). Deviation: A1111 by default moves a window's break
back to the last comma when it lies within the last 20 tokens ("comma padding backtrack"); this
is a plain 75-token split, with no comma backtracking (and no "(word:1.2)" emphasis or "BREAK").
The pooled output of a chunked prompt is that of its first window, as in A1111.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Optional, Union

import torch

from clipforge.errors import InvalidInputError
from clipforge.models import CausalTextTransformer
from clipforge.text import Tokenizer
from clipforge.text.tokenizer import END_OF_TEXT_ID

Preset = Literal["sd1", "sd2", "sdxl"]
ClipSkipConvention = Literal["a1111", "diffusers"]
LongPrompts = Literal["truncate", "chunk"]


class PromptEmbedding(NamedTuple):
    hidden_states: Optional[torch.Tensor]  # [batch, 77 * k, width]: what the UNet cross-attends to (None: Flux's CLIP)
    pooled: Optional[torch.Tensor]  # [batch, width] or [batch, embed_dim]; None where the pipeline uses none
    tokens: torch.Tensor  # [batch, 77 * k]: the ids that were encoded


@dataclass(frozen=True)
class ConditioningPreset:
    """How one pipeline reads one text encoder."""

    pad_token_id: int  # what follows the end token: the end token 49407 (transformers' CLIPTokenizer) or 0 (open_clip)
    layer_from_end: int  # 1: output of the last block, 2: of the penultimate block
    final_layer_norm: bool  # apply the tower's final LayerNorm to that layer's states
    projected_pooled: bool  # pooled output passed through the text projection (SDXL's bigG)


EOT = END_OF_TEXT_ID

PRESETS: dict[str, ConditioningPreset] = {
    "sd1": ConditioningPreset(pad_token_id=EOT, layer_from_end=1, final_layer_norm=True, projected_pooled=False),
    "sd2": ConditioningPreset(pad_token_id=0, layer_from_end=2, final_layer_norm=True, projected_pooled=False),
    "sdxl-1": ConditioningPreset(pad_token_id=EOT, layer_from_end=2, final_layer_norm=False, projected_pooled=False),
    "sdxl-2": ConditioningPreset(pad_token_id=0, layer_from_end=2, final_layer_norm=False, projected_pooled=True),
    # SD 3: both CLIPs are CLIPTextModelWithProjection, read at hidden_states[-2] with the projected pool.
    "sd3-1": ConditioningPreset(pad_token_id=EOT, layer_from_end=2, final_layer_norm=False, projected_pooled=True),
    "sd3-2": ConditioningPreset(pad_token_id=0, layer_from_end=2, final_layer_norm=False, projected_pooled=True),
    # Flux: CLIP-L's pooler_output only (final LayerNorm at the end token, no projection).
    "flux": ConditioningPreset(pad_token_id=EOT, layer_from_end=1, final_layer_norm=True, projected_pooled=False),
}


def get_preset(preset: Preset, encoder: Optional[int] = None) -> ConditioningPreset:
    """The preset for `preset` (SDXL needs `encoder`: 1 = CLIP ViT-L, 2 = OpenCLIP bigG)."""
    if preset == "sdxl":
        if encoder not in (1, 2):
            raise InvalidInputError(
                "preset 'sdxl' has two text encoders that pad differently: pass encoder=1 (CLIP ViT-L/14) "
                f"or encoder=2 (OpenCLIP bigG/14), got {encoder!r}"
            )
        return PRESETS[f"sdxl-{encoder}"]
    if preset not in ("sd1", "sd2"):
        raise InvalidInputError(f"preset must be 'sd1', 'sd2' or 'sdxl', got {preset!r}")
    if encoder not in (None, 1):
        raise InvalidInputError(f"preset {preset!r} has one text encoder; got encoder={encoder!r}")
    return PRESETS[preset]


def encode_prompt(
    model: CausalTextTransformer,
    texts: Union[str, Sequence[str]],
    preset: Union[Preset, ConditioningPreset] = "sd1",
    clip_skip: Optional[int] = None,
    clip_skip_convention: ClipSkipConvention = "a1111",
    long_prompts: LongPrompts = "truncate",
    *,
    encoder: Optional[int] = None,
) -> PromptEmbedding:
    """Encode prompts the way a Stable Diffusion pipeline conditions its UNet (see module docstring).

    For SDXL call once per text encoder and concatenate:
        one = encode_prompt(clip_l, texts, "sdxl", encoder=1)
        two = encode_prompt(clip_bigg, texts, "sdxl", encoder=2)
        prompt_embeds = torch.cat([one.hidden_states, two.hidden_states], dim=-1)  # [B, 77k, 2048]
        pooled_prompt_embeds = two.pooled  # [B, 1280]

    `model` is a ClipModel or a text-only encoder (`clipforge.load_prompt_encoder` builds those from
    Stable Diffusion checkpoints and does all of this per pipeline). Runs under the caller's grad
    mode (wrap in torch.no_grad() for inference).
    """
    if not isinstance(model, CausalTextTransformer):
        # What the pipelines condition on is CLIP's text transformer (its per-layer states, final norm,
        # BPE windows): a model whose text tower is another kind (BERT, XLM-R, SigLIP's) cannot stand in.
        family = getattr(getattr(model, "record", None), "family", None) or type(model).__name__
        raise InvalidInputError(f"Stable Diffusion conditioning needs CLIP's causal text transformer; this {family} "
                                f"model's text tower ({type(model).__name__}) is another kind")
    config = preset if isinstance(preset, ConditioningPreset) else get_preset(preset, encoder)
    layer_from_end = config.layer_from_end + _skip_offset(clip_skip, clip_skip_convention)
    n_layers = model.text_config.layers
    if layer_from_end > n_layers + 1:
        raise InvalidInputError(
            f"clip_skip={clip_skip} ({clip_skip_convention}) asks for layer {layer_from_end} from the end; "
            f"the text tower has {n_layers} layers"
        )
    if long_prompts not in ("truncate", "chunk"):
        raise InvalidInputError(f"long_prompts must be 'truncate' or 'chunk', got {long_prompts!r}")

    context = model.text_config.context_length
    tokenizer = Tokenizer(context_length=context, pad_token_id=config.pad_token_id)
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise InvalidInputError("encode_prompt needs at least one text")
    if long_prompts == "truncate":
        windows = tokenizer(texts).unsqueeze(1)  # [batch, 1, context]
    else:
        windows = _chunk_windows(tokenizer, texts, context)  # [batch, k, context]
    batch, k, _ = windows.shape

    device = next(model.parameters()).device
    out = model.encode_text_full(windows.view(batch * k, context).to(device), output_hidden_states=True)
    assert out.hidden_states is not None
    if layer_from_end == 1 and config.final_layer_norm:
        states = out.last_hidden_state  # ln_final(last block): the same thing, already computed
    else:
        states = out.hidden_states[-layer_from_end]
        if config.final_layer_norm:
            states = model.text_final_norm(states)
    if config.projected_pooled and out.text_embeds is None:
        raise InvalidInputError("this preset pools through the text projection, and the encoder has none")
    pooled = out.text_embeds if config.projected_pooled else out.pooled
    return PromptEmbedding(
        hidden_states=states.reshape(batch, k * context, -1),  # windows side by side along the sequence
        pooled=pooled.view(batch, k, -1)[:, 0],  # first window's, as A1111
        tokens=windows.view(batch, k * context),
    )


def _skip_offset(clip_skip: Optional[int], convention: str) -> int:
    """How many layers before the preset's own layer `clip_skip` asks for."""
    if convention not in ("a1111", "diffusers"):
        raise InvalidInputError(f"clip_skip_convention must be 'a1111' or 'diffusers', got {convention!r}")
    if clip_skip is None:
        return 0
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int):
        raise TypeError(f"clip_skip must be an int or None, got {type(clip_skip).__name__}")
    if convention == "a1111":
        if clip_skip < 1:
            raise InvalidInputError(f"A1111's CLIP skip counts from 1 (1 = no skip), got {clip_skip}")
        return clip_skip - 1
    if clip_skip < 0:
        raise InvalidInputError(f"diffusers' clip_skip counts from 0 (0 or None = no skip), got {clip_skip}")
    return clip_skip


# A1111 sets no limit; 32 windows (2,400 tokens) is far past any prompt a UNet was trained for,
# and bounds the work a pasted megabyte costs (its tokenization stops at the limit).
MAX_PROMPT_WINDOWS = 32


def _chunk_windows(tokenizer: Tokenizer, texts: list[str], context: int) -> torch.Tensor:
    """A1111's 75-token windows, each [start] + ids + [end] + padding: [batch, k, context]."""
    size = context - 2
    limit = MAX_PROMPT_WINDOWS * size
    ids = [tokenizer.encode(text, max_tokens=limit + 1) for text in texts]
    for index, row in enumerate(ids):
        if len(row) > limit:
            raise InvalidInputError(
                f"prompt {index} is longer than {limit} tokens ({MAX_PROMPT_WINDOWS} windows of {size}); "
                "shorten it or use long_prompts='truncate'")
    k = max(max(1, -(-len(row) // size)) for row in ids)  # ceil; an empty prompt is one window
    out = torch.full((len(texts), k, context), tokenizer.pad_token_id, dtype=torch.long)
    out[:, :, 0] = tokenizer.sot_token_id
    for b, row in enumerate(ids):
        for j in range(k):
            piece = row[j * size : (j + 1) * size]  # empty past the prompt's end: the encoding of ""
            out[b, j, 1 : 1 + len(piece)] = torch.tensor(piece, dtype=torch.long)
            out[b, j, 1 + len(piece)] = tokenizer.eot_token_id
    return out
