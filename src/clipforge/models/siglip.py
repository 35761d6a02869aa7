"""SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training") and SigLIP 2
(Tschannen et al. 2025) at a fixed square resolution.

What differs from CLIP, top to bottom:
- image tower: a ViT with no class token and no LayerNorm before the blocks; a LayerNorm after
  them, then a multihead attention-pool ("MAP") head: one learned probe token attends over every
  patch token, followed by a residual MLP. Its output is the image embedding (no projection).
- text tower: bidirectional attention (no causal mask), final LayerNorm, pooled at the LAST
  position (which, as the tokenizer always pads to the context length, is usually padding), then a
  linear head with a bias.
- logits: sigmoid, exp(logit_scale) * cos + logit_bias, each image-text pair judged on its own.

Parameter names follow clipforge's CLIP layout (`visual.transformer.resblocks.N.attn.in_proj_weight`,
top-level text tower) so the shared layers in `clipforge.nn` are reused as they are.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.configs import Activation, ModelRecord, SiglipConfig, SiglipTextConfig, SiglipVisionConfig
from clipforge.errors import InvalidInputError
from clipforge.models.family import ImageOutput, Towers, check_towers, image_tokens, require_tower
from clipforge.models.text_transformer import TextOutput
from clipforge.nn import LayerNorm, Transformer
from clipforge.nn.layers import MLP

__all__ = ["SiglipModel", "SiglipOutput", "SiglipTextTransformer", "SiglipVisionTransformer", "AttentionPool"]


class SiglipOutput(NamedTuple):
    logits_per_image: torch.Tensor  # [n_images, n_texts], sigmoid logits
    logits_per_text: torch.Tensor  # [n_texts, n_images]


class AttentionPool(nn.Module):
    """Multihead attention pooling (MAP): a learned probe token attends over the tokens, then
    x + mlp(ln(x)). The attention has nn.MultiheadAttention's fused q/k/v parameter layout."""

    def __init__(self, width: int, heads: int, mlp_width: int, activation: Activation, eps: float):
        super().__init__()
        self.heads = heads
        self.probe = nn.Parameter(torch.zeros(1, 1, width))
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        self.ln = LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp_width, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, tokens, width] -> [batch, width]"""
        batch, length, width = x.shape
        head_width = width // self.heads
        w_q, w_kv = self.in_proj_weight.split([width, 2 * width])
        b_q, b_kv = self.in_proj_bias.split([width, 2 * width])
        q = F.linear(self.probe.to(x.dtype), w_q, b_q)  # [1, 1, width]
        q = q.view(1, 1, self.heads, head_width).transpose(1, 2).expand(batch, -1, -1, -1)  # [batch, heads, 1, hw]
        kv = F.linear(x, w_kv, b_kv).view(batch, length, 2, self.heads, head_width).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # each [batch, heads, length, head_width]
        out = F.scaled_dot_product_attention(q, k, v).reshape(batch, width)  # one query: [batch, width]
        out = self.out_proj(out)
        return out + self.mlp(self.ln(out))


class SiglipVisionTransformer(nn.Module):
    """Patches + learned positions -> blocks -> ln_post -> attention pool."""

    def __init__(self, cfg: SiglipVisionConfig, activation: Activation, eps: float):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)  # with a bias
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.grid_size**2, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_width, activation, eps)
        self.ln_post = LayerNorm(cfg.width, eps=eps)
        self.attn_pool = AttentionPool(cfg.width, cfg.heads, cfg.mlp_width, activation, eps)

    def embed_patches(self, pixels: torch.Tensor) -> torch.Tensor:
        size = self.cfg.image_size
        if pixels.dim() != 4 or pixels.shape[1] != 3 or pixels.shape[2:] != (size, size):
            raise InvalidInputError(f"pixels must be [batch, 3, {size}, {size}], got shape {tuple(pixels.shape)}")
        x = self.conv1(pixels)  # [batch, width, grid, grid]
        x = x.flatten(2).transpose(1, 2)  # [batch, grid**2, width]
        return x + self.positional_embedding.to(x.dtype)

    def forward_full(
        self, pixels: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, Optional[list[torch.Tensor]]]:
        """(tokens after ln_post [batch, grid**2, width], pooled [batch, width], hidden states
        [embeddings, block 1, ..., block L] before ln_post, or None)."""
        x = self.embed_patches(pixels)
        hidden = None
        if output_hidden_states:
            x, hidden = self.transformer(x, output_hidden_states=True)
        else:
            x = self.transformer(x)
        x = self.ln_post(x)
        return x, self.attn_pool(x), hidden

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.forward_full(pixels)[1]


class SiglipTextTransformer(nn.Module):
    """Tokens + learned positions -> bidirectional blocks -> ln_final -> last position -> linear head."""

    def __init__(self, cfg: SiglipTextConfig, embed_dim: int, activation: Activation, eps: float):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_width, activation, eps)
        self.ln_final = LayerNorm(cfg.width, eps=eps)
        self.text_projection = nn.Linear(cfg.width, embed_dim)

    def forward_full(
        self, tokens: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[list[torch.Tensor]]]:
        """(tokens after ln_final [batch, length, width], pooled [batch, width] (the last position),
        embeddings [batch, embed_dim], hidden states before ln_final or None)."""
        if tokens.dim() != 2:
            raise InvalidInputError(f"tokens must be [batch, length], got shape {tuple(tokens.shape)}")
        if tokens.shape[1] > self.cfg.context_length:
            raise InvalidInputError(f"tokens have length {tokens.shape[1]}, the model's context length is "
                                    f"{self.cfg.context_length}")
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]].to(self.token_embedding.weight.dtype)
        hidden = None
        if output_hidden_states:
            x, hidden = self.transformer(x, output_hidden_states=True)  # no mask: every token sees every token
        else:
            x = self.transformer(x)
        x = self.ln_final(x)
        pooled = x[:, -1]  # the last position, padding or not (the tokenizer pads to the context length)
        return x, pooled, self.text_projection(pooled), hidden


class SiglipModel(nn.Module):
    """SigLIP's two towers and the sigmoid logit's scale and bias (see the module docstring).

    towers: "both", or "image" / "text" for one tower only (the other is never built).
    """

    # The contrastive loss this family is trained with (clipforge.train's default for it):
    # "siglip" = the pairwise sigmoid loss on exp(logit_scale) * cos + logit_bias.
    loss_kind = "siglip"

    def __init__(self, config: SiglipConfig, towers: Towers = "both"):
        super().__init__()
        self.towers = check_towers(towers)
        self.config = config
        self.record = ModelRecord.default(config)
        act, eps = config.activation, config.layer_norm_eps
        self.visual = SiglipVisionTransformer(config.vision, act, eps) if towers != "text" else None
        self.text = SiglipTextTransformer(config.text, config.embed_dim, act, eps) if towers != "image" else None
        self.logit_scale = nn.Parameter(torch.tensor(10.0).log())  # big_vision's init: temperature 10, bias -10
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))
        self.initialize_parameters()

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for tower in (self.visual, self.text):
            if tower is not None:
                tower.transformer.grad_checkpointing = enable

    def initialize_parameters(self) -> None:
        """A plain random initialisation (for tests and training from scratch; loading overwrites it)."""
        for name, p in self.named_parameters():
            if name in ("logit_scale", "logit_bias"):
                continue
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)
            elif name.endswith("weight") and name.split(".")[-2].startswith("ln"):  # LayerNorm scales
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    # ---- image tower -------------------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """[batch, 3, S, S] normalized pixels -> [batch, embed_dim]: the attention pool's output."""
        require_tower(self, "image")
        features = self.visual(pixels.to(self.dtype))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_image_full(self, pixels: torch.Tensor, output_hidden_states: bool = False) -> ImageOutput:
        """Tokens and embedding (see `ImageOutput`): equal to transformers' SiglipVisionModel's
        last_hidden_state (after post_layernorm), pooler_output and hidden_states."""
        require_tower(self, "image")
        last, pooled, hidden = self.visual.forward_full(pixels.to(self.dtype), output_hidden_states)
        return ImageOutput(last, pooled, pooled, hidden, num_prefix_tokens=0)

    def image_tokens(self, pixels: torch.Tensor, layer: int = -2, drop_class_token: bool = True) -> torch.Tensor:
        """hidden_states[layer] (default -2), no post-norm, [batch, grid**2, width] (no class token to drop)."""
        return image_tokens(self, pixels, layer, drop_class_token)

    # ---- text tower --------------------------------------------------------------------------
    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """[batch, context] token ids, padded to the context length -> [batch, embed_dim]."""
        require_tower(self, "text")
        features = self.text.forward_full(tokens)[2]
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text_full(self, tokens: torch.Tensor, output_hidden_states: bool = False) -> TextOutput:
        """Per-token states and the pooled embedding (`TextOutput`, as CLIP's): last_hidden_state after
        ln_final, pooled = its last position, text_embeds = the head's output; hidden states before ln_final."""
        require_tower(self, "text")
        last, pooled, embeds, hidden = self.text.forward_full(tokens, output_hidden_states)
        return TextOutput(last, pooled, embeds, hidden)

    def example_tokens(self, batch: int = 2, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """[batch, context] ids shaped like the tokenizer's output (words, eos 1, padding 1): for
        tracing, export and conversion checks."""
        context = self.config.text.context_length
        tokens = torch.randint(3, self.config.text.vocab_size, (batch, context), generator=generator)
        for row in range(batch):
            end = min(context - 1, 4 + 5 * row)
            tokens[row, end:] = 1
        return tokens

    # ---- both ----------------------------------------------------------------------------------
    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """[n_images, n_texts] sigmoid logits of L2-normalized features: exp(logit_scale) * cos + logit_bias."""
        scale = self.logit_scale.exp().to(image_features.dtype)
        return scale * image_features @ text_features.t() + self.logit_bias.to(image_features.dtype)

    def probabilities(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """[n_images, n_texts] the probability that each text matches each image, each pair judged on
        its own (SigLIP's sigmoid; rows do not sum to 1)."""
        return torch.sigmoid(self.logits(image_features, text_features))

    def pair_probabilities(self, image_features: torch.Tensor, text_features: torch.Tensor) -> Optional[torch.Tensor]:
        """[n] sigmoid probability that image i matches text i."""
        scale = self.logit_scale.exp().to(image_features.dtype)
        return torch.sigmoid(scale * (image_features * text_features).sum(-1) + self.logit_bias.to(image_features.dtype))

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> SiglipOutput:
        image = self.encode_image(pixels, normalize=True)
        text = self.encode_text(tokens, normalize=True)
        logits_per_image = self.logits(image, text)
        return SiglipOutput(logits_per_image, logits_per_image.t())
