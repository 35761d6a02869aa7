"""Opt-in int8 dynamic quantization of a ClipModel's linear layers, for CPU inference.

    from clipforge.quantize import quantize_dynamic
    model_int8 = quantize_dynamic(model)          # a quantized copy; `model` is left as it was

Weights of every `nn.Linear` become int8 (per-tensor scale); activations are quantized on the fly
per call (torch.ao's dynamic quantization, fbgemm/x86 kernels). Outputs change: this is an
approximation, not a faithful model. BENCHMARKS.md gives its speed and the cosine similarity of its
embeddings to fp32.

`SelfAttention` projects q/k/v with `F.linear(x, in_proj_weight)` on a bare Parameter, which
torch's quantizer does not see; it is swapped for `QuantizableSelfAttention`, whose projection is an
`nn.Linear`, so the largest matmul of each block is quantized too. Convolutions (the ViT patch
embedding, the whole ResNet trunk) and the final projection matrices stay fp32.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from clipforge.errors import InvalidInputError
from clipforge.nn.layers import SelfAttention

__all__ = ["QuantizableSelfAttention", "quantize_dynamic", "make_attention_quantizable"]


class QuantizableSelfAttention(SelfAttention):
    """`SelfAttention` with its fused q/k/v projection held as an `nn.Linear` (`in_proj`)."""

    def __init__(self, attention: SelfAttention):
        nn.Module.__init__(self)  # not SelfAttention's: its bare projection Parameters are replaced
        self.heads = attention.heads
        out_features, in_features = attention.in_proj_weight.shape
        self.in_proj = nn.Linear(in_features, out_features)
        with torch.no_grad():
            self.in_proj.weight.copy_(attention.in_proj_weight)
            self.in_proj.bias.copy_(attention.in_proj_bias)
        self.out_proj = attention.out_proj

    def project_qkv(self, x: torch.Tensor) -> torch.Tensor:
        return self.in_proj(x)


def make_attention_quantizable(model: nn.Module) -> nn.Module:
    """Replace every `SelfAttention` in `model` (in place) by an equivalent `QuantizableSelfAttention`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SelfAttention) and not isinstance(child, QuantizableSelfAttention):
                setattr(parent, name, QuantizableSelfAttention(child))
    return model


def quantize_dynamic(model: nn.Module, inplace: bool = False, dtype: torch.dtype = torch.qint8) -> nn.Module:
    """int8 dynamic quantization of all linear layers (attention q/k/v included); CPU only, eval mode.

    Returns the quantized model (a copy unless `inplace`). The result runs only on CPU and cannot be
    trained; `encode_image` / `encode_text` / `forward` keep their signatures.
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise InvalidInputError("quantize_dynamic: dynamic int8 quantization runs on CPU; move the model with .cpu() first")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise InvalidInputError("quantize_dynamic: expects an fp32 model; call .float() first")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    make_attention_quantizable(model)
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the eager dynamic path still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")
        from torch.ao.quantization import quantize_dynamic as _torch_quantize_dynamic

        return _torch_quantize_dynamic(model, {nn.Linear}, dtype=dtype, inplace=True)
