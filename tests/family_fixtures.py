"""One tiny random model per CLIP family, written by its reference library in that library's own
format, for tests that run every task and CLI command on every family (tests/test_family_tasks.py).

The builders reuse each family's test module (its reference helpers), so a model here is the one the
family's parity tests check. `build(name, directory)` returns a `FamilyModel`: `native` is what the
reference library wrote; `cli` is what the CLI is pointed at (the native path itself, or — for
open_clip's bare timm-tower files, whose shapes cannot say the image size, text causality or
preprocessing — a clipforge file saved from the native file loaded with the config the family test pins).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

FAMILIES = ["clip", "siglip", "siglip2", "chinese_clip", "xlm_roberta_clip", "eva_clip", "mobileclip_b", "mobileclip_s"]


@dataclass
class FamilyModel:
    name: str  # the test id
    family: str  # the record's family
    native: Path  # the reference library's file or directory
    cli: Path  # what `--model` gets
    labels: list[str]
    image_size: int
    convert_to: list[str] = field(default_factory=list)  # formats `clipforge convert` writes for this family
    cleanup: Optional[Callable[[], None]] = None


def _clip(root: Path) -> FamilyModel:
    """transformers' CLIPModel directory (save_pretrained), CLIP's BPE tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=1, max_position_embeddings=77),
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=1,
                           image_size=32, patch_size=8),
        projection_dim=32,
    )
    model = CLIPModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = root / "clip_hf"
    model.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return FamilyModel("clip", "clip", path, path, ["a cat", "a dog", "a red rose"], 32,
                       ["clipforge", "openai", "open_clip", "hf"])


def _siglip(root: Path) -> FamilyModel:
    from siglip_helpers import write_hf_siglip_dir

    path = root / "siglip_hf"
    path.mkdir()
    write_hf_siglip_dir(path)
    return FamilyModel("siglip", "siglip", path, path, ["a cat", "a dog", "a red rose"], 32, ["clipforge", "hf"])


def _siglip2(root: Path) -> FamilyModel:
    from siglip_helpers import hf_siglip2, spm_model

    path = root / "siglip2_hf"
    hf_siglip2().save_pretrained(path)
    (path / "tokenizer.model").write_bytes(spm_model("gemma"))
    return FamilyModel("siglip2", "siglip", path, path, ["a cat", "a dog", "a red rose"], 32, ["clipforge", "hf"])


def _chinese_clip(root: Path) -> FamilyModel:
    from test_chinese_clip import OFA_PREPROCESSOR, build_vocab, perturb, tiny_hf_config
    from transformers import ChineseCLIPModel

    torch.manual_seed(0)
    vocab = build_vocab()
    model = ChineseCLIPModel(tiny_hf_config(len(vocab))).eval()
    perturb(model)
    path = root / "chinese_clip_hf"
    model.save_pretrained(path)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    (path / "preprocessor_config.json").write_text(json.dumps(OFA_PREPROCESSOR))
    return FamilyModel("chinese_clip", "chinese_clip", path, path, ["猫", "狗", "一只鸟的照片"], 32, ["clipforge", "hf"])


def _xlm_roberta_clip(root: Path) -> FamilyModel:
    """open_clip's hub layout (open_clip_model.safetensors + open_clip_config.json + sentencepiece.bpe.model).
    open_clip names the text tower only by hub name: the test's tiny one joins clipforge's table for the
    module (undone by `cleanup`)."""
    from test_xlm_roberta_clip import TINY_TOWER, train_sentencepiece, write_open_clip_xlm_roberta_clip

    from clipforge.checkpoint_formats import xlm_roberta
    from clipforge.configs import BertTextConfig

    base = root / "xlmr"
    base.mkdir()
    _, hub = write_open_clip_xlm_roberta_clip(base, train_sentencepiece(base), width=64, mlp_width=128)
    had = TINY_TOWER in xlm_roberta.TEXT_TOWERS
    xlm_roberta.TEXT_TOWERS[TINY_TOWER] = BertTextConfig(
        vocab_size=302, width=64, layers=2, heads=2, mlp_width=128, max_positions=80, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=1, context_length=77, positions="roberta", pooling="mean")

    def cleanup() -> None:
        if not had:
            xlm_roberta.TEXT_TOWERS.pop(TINY_TOWER, None)

    return FamilyModel("xlm_roberta_clip", "xlm_roberta_clip", hub, hub, ["a cat", "eine Katze", "一只猫"], 32,
                       ["clipforge"], cleanup)


def _pinned_clipforge_file(native: Path, out: Path, config_change: Callable, preprocess) -> Path:
    import warnings

    import clipforge

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", clipforge.errors.AssumptionWarning)  # a bare file states no numerics
        inferred, _, _ = clipforge.load(native)
        model, _, _ = clipforge.load(native, arch=config_change(inferred.config), preprocess=preprocess)
    return clipforge.save(model, out)


def _eva_clip(root: Path) -> FamilyModel:
    from safetensors.torch import save_file
    from test_eva_clip import TINY, _register_tiny_timm_eva, open_clip_tiny, randomize_

    from clipforge.configs import PreprocessConfig

    _register_tiny_timm_eva()
    torch.manual_seed(0)
    model = randomize_(open_clip_tiny(), seed=1).eval()
    native = root / "eva_open_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(native))
    cli = _pinned_clipforge_file(native, root / "eva.safetensors", lambda _: TINY, PreprocessConfig(image_size=32))
    return FamilyModel("eva_clip", "eva_clip", native, cli, ["a cat", "a dog", "a red rose"], 32,
                       ["clipforge", "open_clip"])


def _mobileclip_b(root: Path) -> FamilyModel:
    from safetensors.torch import save_file
    from test_mobileclip import _register_tiny_timm_mci, open_clip_tiny, randomize_

    from clipforge.configs import PreprocessConfig

    _register_tiny_timm_mci()
    torch.manual_seed(0)
    model = randomize_(open_clip_tiny(True), seed=3).eval()
    native = root / "mobileclip_b_open_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(native))
    cli = _pinned_clipforge_file(native, root / "mobileclip_b.safetensors", lambda c: c.replace(text_causal=True),
                                 PreprocessConfig(image_size=32, mean=(0.0,) * 3, std=(1.0,) * 3))
    return FamilyModel("mobileclip_b", "mobileclip", native, cli, ["a cat", "a dog", "a red rose"], 32,
                       ["clipforge", "open_clip"])


def _mobileclip_s(root: Path) -> FamilyModel:
    import open_clip
    from safetensors.torch import save_file
    from test_mobileclip import _register_tiny_fastvits, fastvit_model_cfg, randomize_

    from clipforge.configs import PreprocessConfig

    _register_tiny_fastvits()
    torch.manual_seed(0)
    model = randomize_(open_clip.model.CustomTextCLIP(**fastvit_model_cfg("mci012")), seed=4).eval()
    native = root / "mobileclip_s_open_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(native))

    def change(config):
        return config.replace(text_causal=False, vision=dataclasses.replace(config.vision, image_size=64))

    cli = _pinned_clipforge_file(native, root / "mobileclip_s.safetensors", change,
                                 PreprocessConfig(image_size=64, mean=(0.0,) * 3, std=(1.0,) * 3))
    return FamilyModel("mobileclip_s", "mobileclip", native, cli, ["a cat", "a dog", "a red rose"], 64,
                       ["clipforge", "open_clip"])


BUILDERS: dict[str, Callable[[Path], FamilyModel]] = {
    "clip": _clip, "siglip": _siglip, "siglip2": _siglip2, "chinese_clip": _chinese_clip,
    "xlm_roberta_clip": _xlm_roberta_clip, "eva_clip": _eva_clip, "mobileclip_b": _mobileclip_b,
    "mobileclip_s": _mobileclip_s,
}


def build(name: str, root: Path) -> FamilyModel:
    return BUILDERS[name](root)
