"""CLIP with a BERT-style text tower: Chinese-CLIP (Yang et al. 2022) and open_clip's multilingual
XLM-RoBERTa CLIP. The image tower is CLIP's ViT (`VisionTransformer`, OpenAI's layout under
`visual.`); the text tower is `BertTextEncoder` (under `text.`), pooled as its config says and
projected into the joint space by `text_projection`; logits and probabilities are CLIP's (softmax
over texts at the learned temperature `logit_scale`).

The two families differ only in the text projection: Chinese-CLIP's is one matrix
(`x @ text_projection`, OpenAI's orientation), open_clip's HFTextEncoder "mlp" is Linear, GELU,
Linear (no biases).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.configs import ChineseClipConfig, ModelRecord, XlmRobertaClipConfig
from clipforge.errors import InvalidInputError
from clipforge.models.bert_text import BertTextEncoder, example_tokens
from clipforge.models.family import ImageOutput, SoftmaxContrastiveHead, Towers, check_towers, image_tokens, require_tower
from clipforge.models.text_transformer import TextOutput
from clipforge.models.vision_transformer import VisionTransformer


class BertClipModel(SoftmaxContrastiveHead, nn.Module):
    """The shared body (see the module docstring); subclasses make `text_projection`."""

    def __init__(self, config: Any, towers: Towers = "both"):
        super().__init__()
        self.towers = check_towers(towers)
        self.config = config
        self.record = ModelRecord.default(config)  # clipforge.load replaces it with the file's
        self.visual: Optional[VisionTransformer] = None
        self.text: Optional[BertTextEncoder] = None
        self.text_projection: Optional[nn.Module | nn.Parameter] = None
        if towers != "text":
            self.visual = VisionTransformer(config.vision, config.embed_dim, config.vision_activation,
                                            config.vision_layer_norm_eps)
        if towers != "image":
            self.text = BertTextEncoder(config.text)
            self.text_projection = self.make_text_projection()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def make_text_projection(self) -> nn.Module | nn.Parameter:
        raise NotImplementedError

    def project_text(self, pooled: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return self.logit_scale.dtype

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if self.visual is not None:
            self.visual.transformer.grad_checkpointing = enable  # the BERT tower runs without it

    # ---- image tower -------------------------------------------------------------------------
    def check_pixels(self, pixels: torch.Tensor) -> None:
        size = self.config.image_size
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise InvalidInputError(f"pixels must be [batch, 3, {size}, {size}], got shape {tuple(pixels.shape)}")

    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """[batch, 3, S, S] normalized pixels -> [batch, embed_dim] image embeddings."""
        require_tower(self, "image")
        self.check_pixels(pixels)
        features = self.visual(pixels.to(self.dtype))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_image_full(self, pixels: torch.Tensor, output_hidden_states: bool = False) -> ImageOutput:
        """Tokens and embedding of the image tower (see `ImageOutput`; CLIP's ViT conventions)."""
        require_tower(self, "image")
        self.check_pixels(pixels)
        last, pooled, embeds, hidden = self.visual.forward_full(pixels.to(self.dtype), output_hidden_states)
        return ImageOutput(last, pooled, embeds, hidden, num_prefix_tokens=1)

    def image_tokens(self, pixels: torch.Tensor, layer: int = -2, drop_class_token: bool = True) -> torch.Tensor:
        return image_tokens(self, pixels, layer, drop_class_token)

    # ---- text tower --------------------------------------------------------------------------
    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """[batch, length] token ids (padded with the config's pad id) -> [batch, embed_dim]."""
        require_tower(self, "text")
        features = self.project_text(self.text(tokens))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text_full(self, tokens: torch.Tensor, output_hidden_states: bool = False) -> TextOutput:
        """Per-token states and the embedding (`TextOutput`, as CLIP's): last_hidden_state = the last
        block's output (BERT has no final norm), pooled = the tower's summary ([CLS] or the mean over
        real tokens), text_embeds = its projection; hidden_states = [embeddings, block 1, ..., block L]."""
        require_tower(self, "text")
        hidden: Optional[list[torch.Tensor]] = [] if output_hidden_states else None
        last, real = self.text.forward_tokens(tokens, hidden)
        pooled = self.text.pool(last, real)
        return TextOutput(last, pooled, self.project_text(pooled), hidden)

    def text_attention_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, length] 1 at real tokens, 0 at padding: the mask this model applies, which the
        reference libraries' BERT towers must be given to read the same ids the same way."""
        return (tokens != self.config.text.pad_token_id).long()

    def example_tokens(self, batch: int = 2, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """[batch, context] ids shaped like real text (start id, random ids, end id, padding)."""
        tokenizer, vocab = self.record.tokenizer, self.config.text.vocab_size
        # The record's start / end ids when it has them (a vocabulary came with the weights), else any
        # non-padding ids: the model reads them the same way.
        first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else (self.config.text.pad_token_id + 1) % vocab
        last = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else first
        return example_tokens(self.config.text, first, last, batch, generator)


class ChineseClipModel(BertClipModel):
    """Chinese-CLIP: the [CLS] state times one projection matrix [width, embed_dim]."""

    def __init__(self, config: ChineseClipConfig, towers: Towers = "both"):
        super().__init__(config, towers)

    def make_text_projection(self) -> nn.Parameter:
        width = self.config.text.width
        return nn.Parameter(width**-0.5 * torch.randn(width, self.config.embed_dim))

    def project_text(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled @ self.text_projection  # [batch, embed_dim]


class XlmRobertaClipModel(BertClipModel):
    """open_clip's multilingual CLIP: the mean over real tokens through Linear, GELU, Linear."""

    def __init__(self, config: XlmRobertaClipConfig, towers: Towers = "both"):
        super().__init__(config, towers)

    def make_text_projection(self) -> nn.Sequential:
        width, hidden = self.config.text.width, self.config.projection_hidden
        return nn.Sequential(nn.Linear(width, hidden, bias=False), nn.GELU(),
                             nn.Linear(hidden, self.config.embed_dim, bias=False))

    def project_text(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.text_projection(pooled)  # [batch, embed_dim]
