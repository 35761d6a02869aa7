"""The model zoo against its sources: open_clip's model configs and pretrained table, OpenAI's URLs.

Needs no weights and no network: the references are read from the installed open_clip and
clip-anytorch packages.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipforge import model_zoo
from clipforge.configs import OPENAI_MEAN, ResNetConfig, VisionTransformerConfig
from clipforge.model_zoo import (
    ARCHITECTURES,
    HF_HUB_IDS,
    OPENAI_MODEL_NAMES,
    WEIGHTS,
    WeightsRecord,
    get_architecture,
    get_weights,
    list_architectures,
    list_models,
    lookup_hf_hub_id,
    weights_table_markdown,
)

REPO = Path(__file__).resolve().parents[1]
BASE_NAMES = [
    "RN50", "RN101", "RN50x4", "RN50x16", "RN50x64",
    "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "ViT-g-14", "ViT-bigG-14",
]  # fmt: skip


@pytest.fixture(scope="module")
def open_clip():
    return pytest.importorskip("open_clip")


# ---- architectures ---------------------------------------------------------------------------------


# Other families' named architectures (EVA02-CLIP, MobileCLIP, ...) are checked in their own test modules.
CLIP_ARCHITECTURES = [name for name, cfg in ARCHITECTURES.items() if cfg.family == "clip"]


def test_architecture_names() -> None:
    expected = [n for base in BASE_NAMES for n in (base, base + "-quickgelu")]
    assert list_architectures()[: len(expected)] == expected == CLIP_ARCHITECTURES
    for base in BASE_NAMES:
        assert ARCHITECTURES[base].activation == "gelu"
        assert ARCHITECTURES[base + "-quickgelu"].activation == "quick_gelu"
        assert ARCHITECTURES[base + "-quickgelu"] == ARCHITECTURES[base].replace(activation="quick_gelu")


def _open_clip_config(open_clip, name: str) -> dict:
    cfg = open_clip.get_model_config(name)
    if cfg is None and name.endswith("-quickgelu"):
        # open_clip ships no ViT-g-14-quickgelu json; the twin is the base config with quick_gelu on.
        cfg = {**open_clip.get_model_config(name[: -len("-quickgelu")]), "quick_gelu": True}
    assert cfg is not None, name
    return cfg


@pytest.mark.parametrize("name", CLIP_ARCHITECTURES)
def test_architecture_matches_open_clip(open_clip, name: str) -> None:
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    ref = _open_clip_config(open_clip, name)
    # Every field open_clip sets must be one we model; anything else would be a silent difference.
    assert set(ref) <= {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}
    assert set(ref["vision_cfg"]) <= {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio"}
    assert set(ref["text_cfg"]) <= {"context_length", "vocab_size", "width", "heads", "layers"}

    ours = ARCHITECTURES[name]
    vis_ref = CLIPVisionCfg(**ref["vision_cfg"])
    txt_ref = CLIPTextCfg(**ref["text_cfg"])
    assert ours.embed_dim == ref["embed_dim"]
    assert (ours.activation == "quick_gelu") == ref.get("quick_gelu", False)
    assert ours.layer_norm_eps == 1e-5  # open_clip's LayerNorm default

    v = ours.vision
    assert v.image_size == vis_ref.image_size
    assert v.width == vis_ref.width
    if isinstance(vis_ref.layers, (list, tuple)):
        assert isinstance(v, ResNetConfig)
        assert vis_ref.patch_size is None
        assert v.layers == tuple(vis_ref.layers)
        assert v.heads == vis_ref.width * 32 // vis_ref.head_width  # open_clip's ModifiedResNet heads
    else:
        assert isinstance(v, VisionTransformerConfig)
        assert v.layers == vis_ref.layers
        assert v.patch_size == vis_ref.patch_size
        assert v.heads == vis_ref.width // vis_ref.head_width
        assert v.mlp_ratio == vis_ref.mlp_ratio
        assert v.mlp_width == int(vis_ref.width * vis_ref.mlp_ratio)

    t = ours.text
    assert (t.context_length, t.vocab_size) == (txt_ref.context_length, txt_ref.vocab_size)
    assert (t.width, t.heads, t.layers) == (txt_ref.width, txt_ref.heads, txt_ref.layers)
    assert t.mlp_width == int(txt_ref.width * txt_ref.mlp_ratio)
    assert t.pad_token_id == txt_ref.pad_id


def test_get_architecture_errors_and_aliases() -> None:
    assert get_architecture("ViT-L/14@336px") is ARCHITECTURES["ViT-L-14-336"]
    with pytest.raises(KeyError) as info:
        get_architecture("ViT-B-33")
    message = str(info.value)
    assert "ViT-B-33" in message and "ViT-B-32" in message and not message.startswith('"')


# ---- weights ---------------------------------------------------------------------------------------


def test_weights_keys_and_arch_names() -> None:
    for (base, tag), record in WEIGHTS.items():
        assert record.base_arch == base and record.tag == tag
        assert record.arch in ARCHITECTURES
        assert record.arch == (base + "-quickgelu" if record.activation == "quick_gelu" else base)
        assert record.preprocess.image_size == ARCHITECTURES[base].image_size
        assert record.model_config().activation == record.activation
    # CLIP's weights, other families' open_clip-style weights (FAMILY_WEIGHTS), then released models by name.
    assert list_models() == ([(r.arch, r.tag) for r in [*WEIGHTS.values(), *model_zoo.FAMILY_WEIGHTS.values()]]
                             + [(m.name, m.hf_hub_id) for m in model_zoo.NAMED_MODELS.values()])
    assert {tag for _, tag in WEIGHTS if tag == "openai"} and len(WEIGHTS) >= 18


def test_openai_records_match_clip_anytorch() -> None:
    clip_module = pytest.importorskip("clip.clip")
    assert set(OPENAI_MODEL_NAMES) == set(clip_module._MODELS)
    openai_keys = {key for key in WEIGHTS if key[1] == "openai"}
    assert openai_keys == {(ours, "openai") for ours in OPENAI_MODEL_NAMES.values()}
    for openai_name, ours in OPENAI_MODEL_NAMES.items():
        record = get_weights(ours, "openai")
        url = clip_module._MODELS[openai_name]
        assert record.url == url
        assert record.sha256 == url.split("/")[-2]  # OpenAI publishes the sha256 as the path component
        assert record.url_filename == url.rsplit("/", 1)[-1]
        assert record.activation == "quick_gelu" and record.preprocess.mean == OPENAI_MEAN


def _open_clip_hub(open_clip, ref: dict) -> tuple[str, tuple[str, ...]]:
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    hub_id, filename = os.path.split(ref["hf_hub"])
    filename = filename or HF_WEIGHTS_NAME
    # open_clip tries the safetensors twin of the default pickle first.
    names = (HF_SAFE_WEIGHTS_NAME, filename) if filename == HF_WEIGHTS_NAME else (filename,)
    return hub_id, names


@pytest.mark.parametrize("key", list(WEIGHTS), ids=lambda k: f"{k[0]}:{k[1]}")
def test_record_matches_open_clip_pretrained(open_clip, key: tuple[str, str]) -> None:
    record = WEIGHTS[key]
    ref = open_clip.get_pretrained_cfg(record.base_arch, record.tag)
    assert ref, f"open_clip does not know {key}"
    hub_id, names = _open_clip_hub(open_clip, ref)
    assert record.hf_hub_id == hub_id
    assert record.hf_filenames == names
    assert record.file_format == "open_clip"
    assert record.preprocess.mean == tuple(ref["mean"])
    assert record.preprocess.std == tuple(ref["std"])
    assert record.preprocess.interpolation == ref["interpolation"]
    assert ref["resize_mode"] == "shortest" and record.preprocess.mode == "openai"
    assert (record.activation == "quick_gelu") == ref.get("quick_gelu", False)
    # open_clip lists QuickGELU weights under "<arch>-quickgelu" too: our arch name is a valid open_clip pair.
    assert open_clip.get_pretrained_cfg(record.arch, record.tag)
    if record.tag == "openai":
        assert record.url == ref["url"]


def test_laion400m_b32_is_quickgelu_and_l14_laion2b_uses_half_mean() -> None:
    assert get_weights("ViT-B-32", "laion400m_e32").arch == "ViT-B-32-quickgelu"
    assert get_weights("ViT-B-32", "laion2b_s34b_b79k").activation == "gelu"
    assert get_weights("ViT-L-14", "laion2b_s32b_b82k").preprocess.mean == (0.5, 0.5, 0.5)


def test_get_weights_spellings_and_errors() -> None:
    plain = get_weights("ViT-B-32", "laion2b_s34b_b79k")
    assert get_weights("ViT-B-32-quickgelu", "laion2b_s34b_b79k") is plain
    assert get_weights("ViT-B-32", "LAION2B-s34B-b79K") is plain  # open_clip's tag normalisation
    assert get_weights("ViT-B/32", "openai") is get_weights("ViT-B-32-quickgelu", "openai")
    with pytest.raises(KeyError) as info:
        get_weights("ViT-B-32", "laion5b")
    assert "laion2b_s34b_b79k" in str(info.value) and "openai" in str(info.value)
    with pytest.raises(KeyError, match="ViT-B-32"):
        get_weights("ViT-B-31", "openai")


def test_record_rejects_contradictions() -> None:
    record = get_weights("ViT-B-32", "openai")
    with pytest.raises(ValueError, match="activation"):
        dataclasses.replace(record, activation="gelu")
    with pytest.raises(ValueError, match="hub repo or a URL"):
        dataclasses.replace(record, url=None, hf_hub_id=None)


def test_model_config_carries_record_numerics() -> None:
    record = dataclasses.replace(get_weights("ViT-B-16", "openai"), pad_token_id=49407, layer_norm_eps=1e-6)
    cfg = record.model_config()
    assert cfg.text.pad_token_id == 49407 and cfg.layer_norm_eps == 1e-6 and cfg.activation == "quick_gelu"
    assert record.file_format_for("/x/ViT-B-16.pt") == "openai"
    assert record.file_format_for("/x/open_clip_model.safetensors") == "open_clip"


def test_lookup_hf_hub_id() -> None:
    for hub_id, key in HF_HUB_IDS.items():
        record = lookup_hf_hub_id(hub_id)
        assert isinstance(record, WeightsRecord)
        assert (record.base_arch, record.tag) == key and record.hf_hub_id == hub_id
        assert record.file_format == "hf" and record.preprocess.mode == "hf"
        assert record.hf_filenames == ("model.safetensors", "pytorch_model.bin")
        assert record.activation == WEIGHTS[key].activation
    large = lookup_hf_hub_id("openai/clip-vit-large-patch14-336")
    assert large is not None and large.arch == "ViT-L-14-336-quickgelu" and large.preprocess.image_size == 336
    assert large.pad_token_id == 49407  # OpenAI's transformers tokenizers pad with <|endoftext|>
    assert lookup_hf_hub_id("laion/CLIP-ViT-H-14-laion2B-s32B-b79K").pad_token_id == 0
    # An open_clip-format repo gives back its own record unchanged.
    assert lookup_hf_hub_id("timm/vit_base_patch32_clip_224.openai") is get_weights("ViT-B-32", "openai")
    assert lookup_hf_hub_id("someone/unknown-model") is None


# ---- docs and hygiene ------------------------------------------------------------------------------


def test_docs_weights_table_is_generated() -> None:
    text = (REPO / "docs" / "weights.md").read_text()
    start, end = "<!-- weights-table:start -->\n", "<!-- weights-table:end -->"
    assert start in text and end in text
    table = text.split(start, 1)[1].split(end, 1)[0]
    assert table.strip() == weights_table_markdown().strip(), (
        "docs/weights.md is stale: paste clipforge.model_zoo.weights_table_markdown() between the markers"
    )


def test_importing_zoo_and_cache_imports_neither_torch_nor_hub() -> None:
    code = (
        "import sys, clipforge.model_zoo, clipforge.hub_cache; "
        "heavy = [m for m in ('torch', 'huggingface_hub', 'tqdm', 'open_clip') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
    assert model_zoo.__name__ == "clipforge.model_zoo"


def test_family_records_match_open_clip(open_clip) -> None:
    """The multilingual entries read as open_clip's own model configs and name its hub repos."""
    from clipforge.checkpoint_formats.xlm_roberta import open_clip_config_to_config
    from clipforge.model_zoo import FAMILY_ARCHITECTURES, FAMILY_WEIGHTS

    assert set(FAMILY_WEIGHTS) == {("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"),
                                   ("xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k")}
    for (arch, tag), record in FAMILY_WEIGHTS.items():
        assert get_weights(arch, tag) is record and record.license and record.notes
        assert record.preprocess.image_size == FAMILY_ARCHITECTURES[arch].image_size
        assert FAMILY_ARCHITECTURES[arch] == open_clip_config_to_config(open_clip.get_model_config(arch))
        ref = open_clip.get_pretrained_cfg(arch, tag)
        assert record.hf_hub_id == ref["hf_hub"].rstrip("/") and record.preprocess.mean == tuple(ref["mean"])
        assert record.tokenizer_file[0] == "FacebookAI/" + open_clip.get_model_config(arch)["text_cfg"]["hf_tokenizer_name"]
        assert lookup_hf_hub_id(record.hf_hub_id) is record


def test_chinese_clip_named_models() -> None:
    for name in ("chinese-clip-vit-base-patch16", "chinese-clip-vit-large-patch14",
                 "chinese-clip-vit-large-patch14-336px", "chinese-clip-vit-huge-patch14"):
        entry = model_zoo.NAMED_MODELS[name]
        assert entry.hf_hub_id == f"OFA-Sys/{name}" and entry.family == "chinese_clip" and entry.license == "MIT"
        assert entry.preprocess.resize_mode == "squash" and entry.preprocess.image_size == entry.architecture.image_size
        assert entry.architecture.text.context_length == 52 and entry.architecture.vision_activation == "quick_gelu"
