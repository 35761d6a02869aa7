"""int8 dynamic quantization (clipforge.quantize) and ONNX export (clipforge.export).

Quantization is an approximation: the test holds its embeddings to cosine >= 0.99 of fp32 on a small
random model. ONNX export must be exact to 1e-4 (max abs difference) under onnxruntime; those tests
are skipped only when onnxruntime is not importable (`pip install onnxruntime`).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from clipforge.configs import (
    ClipConfig,
    ResNetConfig,
    TextConfig,
    VisionTransformerConfig,
)
from clipforge.models import ClipModel
from clipforge.nn.layers import SelfAttention
from clipforge.quantize import QuantizableSelfAttention, quantize_dynamic

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not importable (pip install onnxruntime)")


def small_vit(width: int = 128, layers: int = 2) -> ClipModel:
    torch.manual_seed(0)
    cfg = ClipConfig(
        embed_dim=64,
        vision=VisionTransformerConfig(image_size=64, patch_size=16, width=width, layers=layers, heads=4),
        text=TextConfig(width=width, heads=4, layers=layers),
        activation="quick_gelu",
    )
    return ClipModel(cfg).eval()


def tiny_resnet() -> ClipModel:
    torch.manual_seed(0)
    cfg = ClipConfig(
        embed_dim=32,
        vision=ResNetConfig(image_size=64, layers=(1, 1, 1, 1), width=8, heads=4),
        text=TextConfig(width=32, heads=2, layers=1),
    )
    model = ClipModel(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model


def captions(n: int = 4) -> torch.Tensor:
    """Token rows of different lengths (eot at 5, 9, 20, 76), zero-padded."""
    gen = torch.Generator().manual_seed(2)
    tokens = torch.zeros(n, 77, dtype=torch.long)
    for i, end in enumerate([5, 9, 20, 76][:n]):
        tokens[i, 0] = 49406
        tokens[i, 1:end] = torch.randint(1, 49000, (end - 1,), generator=gen)
        tokens[i, end] = 49407
    return tokens


def pixels(model: ClipModel, n: int = 3) -> torch.Tensor:
    size = model.config.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(3))


def test_quantize_dynamic_cosine_to_fp32():
    model = small_vit()
    x, t = pixels(model), captions()
    q = quantize_dynamic(model)
    with torch.no_grad():
        for ours, ref in ((q.encode_image(x), model.encode_image(x)), (q.encode_text(t), model.encode_text(t))):
            cos = F.cosine_similarity(ours, ref, dim=-1)
            assert cos.min() >= 0.99, f"int8 cosine to fp32 {cos.min():.4f} < 0.99"


def test_quantize_dynamic_covers_attention_and_leaves_the_original():
    model = small_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize_dynamic(model)
    attentions = [m for m in q.modules() if isinstance(m, SelfAttention)]
    assert attentions and all(isinstance(m, QuantizableSelfAttention) for m in attentions)
    assert not any(isinstance(p, torch.nn.Parameter) for m in attentions for n, p in m.named_parameters(recurse=False))
    attn = q.transformer.resblocks[0].attn
    assert isinstance(attn, QuantizableSelfAttention)
    assert type(attn.in_proj).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert type(q.visual.transformer.resblocks[0].mlp.c_fc).__module__.startswith("torch.ao.nn.quantized.dynamic")
    # the fp32 model is untouched
    assert all(type(m.attn) is SelfAttention for m in model.transformer.resblocks)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_quantizable_attention_is_exact_before_quantization():
    from clipforge.quantize import make_attention_quantizable

    model = small_vit()
    x, t = pixels(model), captions()
    with torch.no_grad():
        ref_image, ref_text = model.encode_image(x), model.encode_text(t)
        make_attention_quantizable(model)
        assert torch.allclose(model.encode_image(x), ref_image, atol=1e-6, rtol=0)
        assert torch.allclose(model.encode_text(t), ref_text, atol=1e-6, rtol=0)


def test_quantize_rejects_non_fp32():
    with pytest.raises(ValueError, match="fp32"):
        quantize_dynamic(small_vit(width=32, layers=1).half())


@needs_ort
@pytest.mark.parametrize("build", [small_vit, tiny_resnet], ids=["vit", "resnet"])
def test_onnx_export_parity(build, tmp_path):
    from clipforge.export import export_onnx, onnx_parity, onnx_session

    model = build()
    image_path, text_path = export_onnx(model, tmp_path)
    assert image_path.exists() and text_path.exists()
    # dynamic batch: other batch sizes than the export example (2), and varied caption lengths
    x, t = pixels(model, 5), captions(4)
    diffs = onnx_parity(model, image_path, text_path, pixels=x, tokens=t)
    assert diffs["image"] <= 1e-4 and diffs["text"] <= 1e-4, diffs
    one = onnx_session(text_path, threads=1).run(None, {"tokens": t[:1].numpy()})[0]
    with torch.no_grad():
        assert (torch.from_numpy(one) - model.encode_text(t[:1])).abs().max() <= 1e-4


@needs_ort
def test_onnx_text_graph_has_a_dynamic_length(tmp_path):
    """The text graph runs at any length up to the context: at 77 and at 16 it equals encode_text."""
    from clipforge.export import export_onnx, onnx_session

    model = small_vit()
    _, text_path = export_onnx(model, tmp_path)
    session = onnx_session(text_path)
    assert session.get_inputs()[0].shape[1] == "length"
    full = model.example_tokens(3, generator=torch.Generator().manual_seed(1))  # end tokens at 4, 9, 14
    for length in (full.shape[1], 16):
        tokens = full[:, :length]
        out = session.run(None, {"tokens": tokens.numpy()})[0]
        with torch.no_grad():
            assert (torch.from_numpy(out) - model.encode_text(tokens)).abs().max() <= 1e-4, length
