"""Export a model's two towers (any family: CLIP, SigLIP, ...) to ONNX, and check them with onnxruntime.

    from clipforge.export import export_onnx, onnx_parity
    image_path, text_path = export_onnx(model, "out/")      # out/image_encoder.onnx, out/text_encoder.onnx
    onnx_parity(model, image_path, text_path)               # {"image": max abs diff, "text": ...}

- image tower: input `pixels` [batch, 3, S, S] float32 -> `image_embeds` [batch, embed_dim]
- text tower: input `tokens` [batch, length] int64 -> `text_embeds` [batch, embed_dim], pooled as
  `encode_text` does (CLIP: at the first end-of-text token; SigLIP: at the last position), via the
  model's `encode_text_full` (the graph runs every position: it has no data-dependent padding skip,
  so it does more work than `encode_text` on short captions)
- the batch axis is dynamic in both; the text length is dynamic too (any length up to the context
  length: CLIP gives the same embedding for any length that keeps the end token; SigLIP reads the
  last position, so it must be fed what its tokenizer gives, padded to 64); embeddings are not
  normalized (as `encode_image/encode_text`)

Export uses torch's TorchScript-based exporter (`dynamo=False`): it needs no extra package.
onnxruntime is needed only by `onnx_parity` and to run the files (`pip install onnxruntime`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

__all__ = ["ImageEncoder", "TextEncoder", "export_onnx", "onnx_parity", "onnx_session"]


class ImageEncoder(nn.Module):
    """pixels [batch, 3, S, S] -> image embeddings [batch, embed_dim]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


class TextEncoder(nn.Module):
    """tokens [batch, context] -> text embeddings [batch, embed_dim], pooled at the end-of-text token."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text_full(tokens).text_embeds


def _example_tokens(model: nn.Module, batch: int = 2) -> torch.Tensor:
    """Token ids shaped as the model's tokenizer gives them (the model's own `example_tokens`)."""
    return model.example_tokens(batch, generator=torch.Generator().manual_seed(0))


def _export(
    module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str, opset: int,
    input_axes: Optional[dict[int, str]] = None,
) -> None:
    with warnings.catch_warnings():
        # The legacy exporter warns about its own deprecation and about traced shape checks.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), str(path), dynamo=False, opset_version=opset,
            input_names=[input_name], output_names=[output_name],
            dynamic_axes={input_name: input_axes or {0: "batch"}, output_name: {0: "batch"}},
            do_constant_folding=True,
        )


def export_onnx(model: nn.Module, out_dir: Union[str, os.PathLike], opset: int = 17) -> tuple[Path, Path]:
    """Write `image_encoder.onnx` and `text_encoder.onnx` (fp32, dynamic batch) to `out_dir`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        size = model.config.image_size
        param = next(model.parameters())
        pixels = torch.zeros(2, 3, size, size, dtype=param.dtype, device=param.device)
        tokens = _example_tokens(model).to(param.device)
        image_path, text_path = out / "image_encoder.onnx", out / "text_encoder.onnx"
        with torch.no_grad():
            _export(ImageEncoder(model), pixels, image_path, "pixels", "image_embeds", opset)
            _export(TextEncoder(model), tokens, text_path, "tokens", "text_embeds", opset, {0: "batch", 1: "length"})
    finally:
        model.train(was_training)
    return image_path, text_path


def onnx_session(path: Union[str, os.PathLike], threads: Optional[int] = None):
    """An onnxruntime CPU InferenceSession for `path` (`threads`: intra-op threads; None = ORT's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_parity(
    model: nn.Module,
    image_path: Union[str, os.PathLike],
    text_path: Union[str, os.PathLike],
    pixels: Optional[torch.Tensor] = None,
    tokens: Optional[torch.Tensor] = None,
) -> dict[str, float]:
    """Max abs difference between onnxruntime's outputs and the model's (random pixels / short captions by default)."""
    model.eval()
    size = model.config.image_size
    if pixels is None:
        pixels = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    if tokens is None:
        tokens = _example_tokens(model, 3)  # end tokens at different positions
    with torch.no_grad():
        image_ref = model.encode_image(pixels).float()
        text_ref = model.encode_text(tokens).float()
    image_out = onnx_session(image_path).run(None, {"pixels": pixels.float().numpy()})[0]
    text_out = onnx_session(text_path).run(None, {"tokens": tokens.long().numpy()})[0]
    return {
        "image": float((torch.from_numpy(image_out) - image_ref).abs().max()),
        "text": float((torch.from_numpy(text_out) - text_ref).abs().max()),
    }
