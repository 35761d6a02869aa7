"""CLIP models whose image tower is not OpenAI's (EVA-02, MobileCLIP's) but whose text tower and
contrastive head are: one base class, `TowerClipModel`, and one small subclass per family that
says which image tower it builds.

The text tower is inherited from CausalTextTransformer (its parameters keep OpenAI's top-level key
names); the image tower is `visual`, any module mapping [batch, 3, S, S] pixels to [batch,
embed_dim] with a `forward_full` giving its tokens. Scoring is CLIP's: a softmax over the texts at
the learned temperature exp(logit_scale).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.configs import EvaClipConfig, FastVitMciConfig, MobileClipConfig, ModelRecord
from clipforge.models.eva_vision import EvaVisionTransformer
from clipforge.models.fastvit_mci import FastVitMci
from clipforge.models.mobileclip_vision import MobileClipViT
from clipforge.models.family import ImageOutput, SoftmaxContrastiveHead, Towers, check_towers, image_tokens, require_tower
from clipforge.models.text_transformer import CausalTextTransformer, TextOutput

__all__ = ["TowerClipModel", "EvaClipModel", "MobileClipModel"]


class TowerClipModel(SoftmaxContrastiveHead, CausalTextTransformer):
    """An image tower (`build_image_tower`) and CLIP's causal text tower in one joint space, with a
    learned temperature. `towers` as ClipModel's: "image" / "text" build one tower only."""

    num_prefix_tokens = 1  # tokens before the patch grid in `encode_image_full`

    def __init__(self, config: Any, towers: Towers = "both"):
        self.towers = check_towers(towers)
        super().__init__(config.text, config.embed_dim, config.activation, config.layer_norm_eps,
                         build=towers != "image")
        self.config = config
        self.record = ModelRecord.default(config)
        self.visual: Optional[nn.Module] = None if towers == "text" else self.build_image_tower(config)
        self.logit_scale = nn.Parameter(torch.tensor(config.init_logit_scale))
        if self.logit_scale.device.type != "meta":
            self.initialize_parameters()

    def build_image_tower(self, config: Any) -> nn.Module:
        raise NotImplementedError

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation for the text tower, the tower's own for the image tower."""
        if self.token_embedding is not None:
            self.initialize_text_parameters()
        if self.visual is not None and hasattr(self.visual, "initialize_parameters"):
            self.visual.initialize_parameters()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if self.transformer is not None:
            self.transformer.grad_checkpointing = enable
        if self.visual is not None:
            self.visual.grad_checkpointing = enable

    # ---- image tower -------------------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """[batch, 3, S, S] normalized pixels -> [batch, embed_dim] image embeddings."""
        require_tower(self, "image")
        features = self.visual(pixels.to(self.dtype))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_image_full(self, pixels: torch.Tensor, output_hidden_states: bool = False) -> ImageOutput:
        """The image tower's tokens (after its final norm), pooled summary, embedding and, when asked,
        its hidden states [embeddings, block 1, ...] (see `ImageOutput`)."""
        require_tower(self, "image")
        last, pooled, embeds, hidden = self.visual.forward_full(pixels.to(self.dtype), output_hidden_states)
        return ImageOutput(last, pooled, embeds, hidden, num_prefix_tokens=self.num_prefix_tokens)

    def image_tokens(self, pixels: torch.Tensor, layer: int = -2, drop_class_token: bool = True) -> torch.Tensor:
        """hidden_states[layer] without the class token (see `clipforge.models.family.image_tokens`)."""
        return image_tokens(self, pixels, layer, drop_class_token)

    def example_tokens(self, batch: int = 2, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """[batch, context] token ids shaped like real text (start, words, end token, padding)."""
        text = self.config.text
        tokens = torch.randint(1, min(text.sot_token_id, text.eot_token_id), (batch, text.context_length),
                               generator=generator)
        tokens[:, 0] = text.sot_token_id
        for row in range(batch):
            end = min(text.context_length - 1, 4 + 5 * row)
            tokens[row, end] = text.eot_token_id
            tokens[row, end + 1:] = text.pad_token_id
        return tokens


class EvaClipModel(TowerClipModel):
    """open_clip's EVA02-CLIP: EVA-02's RoPE / SwiGLU ViT (eva_vision.py) and CLIP's text tower."""

    def __init__(self, config: EvaClipConfig, towers: Towers = "both"):
        super().__init__(config, towers)

    def build_image_tower(self, config: EvaClipConfig) -> nn.Module:
        return EvaVisionTransformer(config.vision, config.embed_dim)


class MobileClipModel(TowerClipModel):
    """open_clip's MobileCLIP / MobileCLIP2: a conv-stem ViT (mobileclip_vision.py, the B models) or
    FastViT-MCi (fastvit_mci.py, the S models) and CLIP's text tower, causal or
    (`config.text_causal=False`, open_clip's `no_causal_mask`) bidirectional."""

    def __init__(self, config: MobileClipConfig, towers: Towers = "both"):
        super().__init__(config, towers)

    def build_image_tower(self, config: MobileClipConfig) -> nn.Module:
        if isinstance(config.vision, FastVitMciConfig):
            self.num_prefix_tokens = 0  # a convolutional tower: its tokens are the final feature map
            return FastVitMci(config.vision, config.embed_dim)
        return MobileClipViT(config.vision, config.embed_dim)

    def encode_text_full(self, tokens: torch.Tensor, output_hidden_states: bool = False) -> TextOutput:
        if self.config.text_causal:
            return super().encode_text_full(tokens, output_hidden_states)
        # Bidirectional: every position, padding included, is read by every other (as open_clip runs it).
        self._check_tokens(tokens)
        eot = self.eot_positions(tokens)
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]].to(self.dtype)
        hidden = None
        if output_hidden_states:
            x, hidden = self.transformer(x, is_causal=False, output_hidden_states=True)
        else:
            x = self.transformer(x, is_causal=False)
        x = self.ln_final(x)  # [batch, length, width]
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]  # [batch, width]
        return TextOutput(x, pooled, pooled @ self.text_projection, hidden)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        if self.config.text_causal:
            return super().encode_text(tokens, normalize)
        # Padding changes a bidirectional tower's output: no packing shortcut, all positions run.
        features = self.encode_text_full(tokens).text_embeds
        return F.normalize(features, dim=-1) if normalize else features
