"""What bench/run.py measures: libraries ("variants"), workloads, inputs, weights files and FLOP counts.

Plain data and small helpers shared by the parent (bench/run.py) and the worker processes
(bench/workers.py). Every library gets the same weights (one random open_clip model per
architecture, written once in each library's format by clipforge's converters) and the same inputs
(pixels from a fixed seed, the same token ids, the same image files).
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

# ---- libraries ------------------------------------------------------------------------------------

REFERENCE = "open_clip"  # outputs of every row are compared with this library's, in the same run


@dataclass(frozen=True)
class Variant:
    name: str  # row label
    worker: str  # worker process that runs it (one process per library)
    peer: bool  # a reference library (True) or clipforge / something built from it (False)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("clipforge", "clipforge", False),
        Variant("clipforge draft", "clipforge", False),  # e2e only: draft=True JPEG decoding
        Variant("clipforge int8", "clipforge_int8", False),
        Variant("onnxruntime", "onnxruntime", False),  # clipforge.export ONNX files run by onnxruntime
        Variant("open_clip", "open_clip", True),
        Variant("OpenAI clip", "openai", True),
        Variant("transformers", "transformers", True),  # text: all 77 tokens, no attention mask
        Variant("transformers longest", "transformers", True),  # text: padding="longest" + attention_mask
    ]
}
WORKERS = sorted({v.worker for v in VARIANTS.values()})

# clipforge's name for each architecture: QuickGELU, so that OpenAI's clip (QuickGELU only) can share the weights.
CLIPFORGE_ARCH = {"ViT-B-32": "ViT-B-32-quickgelu", "RN50": "RN50-quickgelu", "ViT-B-16": "ViT-B-16-quickgelu"}


# ---- workloads ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    key: str  # unique row label, e.g. "image ViT-B-32 b16"
    kind: str  # "image" | "text" | "e2e" | "train" | "sgemm"
    arch: str
    batch: int
    reps: int  # calls per timed measurement (batch 1: several, so a measurement is not a few ms)
    variants: tuple[str, ...]
    seed: int = 0
    files: str = ""  # e2e only: which file set ("corpus" or "photos"; see FILE_SETS)

    @property
    def items(self) -> int:
        return self.batch * self.reps

    @property
    def unit(self) -> str:
        return {"image": "img/s", "text": "texts/s", "e2e": "img/s", "train": "samples/s", "sgemm": "GFLOP/s"}[self.kind]


@dataclass
class Group:
    """Workloads run together while the workers hold one model (loaded before, freed after)."""

    name: str
    arch: str
    train: bool  # workers load the model for training (train mode, AdamW)
    workloads: list[Workload] = field(default_factory=list)

    @property
    def workers(self) -> list[str]:
        return sorted({VARIANTS[v].worker for w in self.workloads for v in w.variants})


VIT_ALL = ("clipforge", "clipforge int8", "onnxruntime", "open_clip", "OpenAI clip", "transformers")
VIT_PEERS = ("clipforge", "open_clip", "OpenAI clip", "transformers")
RESNET = ("clipforge", "open_clip", "OpenAI clip")  # transformers has no ResNet CLIP
TEXT_ALL = VIT_ALL + ("transformers longest",)
E2E = ("clipforge", "clipforge draft", "open_clip")
TRAIN = ("clipforge", "open_clip")
E2E_FILES = 64  # 25 JPEGs + 39 PNGs from the test corpus
# Debian's desktop wallpaper packages: real photographs and artwork as large JPEGs (1.3-18 Mpx),
# the nearest offline stand-in for a folder of camera photos.
PHOTO_PACKAGES = ("mate-backgrounds", "ukui-wallpapers", "plasma-workspace-wallpapers")
TRAIN_BATCH = 16
SGEMM_N = 4096


def plan(quick: bool) -> list[Group]:
    """The groups of workloads. --quick leaves out RN50 and ViT-B-16 at batch 1 and 64."""
    b32 = Group("ViT-B-32 inference", "ViT-B-32", train=False)
    for batch, reps in [(1, 16), (16, 1), (64, 1)]:
        b32.workloads.append(Workload(f"image ViT-B-32 b{batch}", "image", "ViT-B-32", batch, reps, VIT_ALL))
    for batch, reps in [(1, 16), (64, 1)]:
        b32.workloads.append(Workload(f"text b{batch}", "text", "ViT-B-32", batch, reps, TEXT_ALL))
    b32.workloads.append(Workload("end-to-end folder -> .npy", "e2e", "ViT-B-32", 32, 1, E2E, files="corpus"))
    b32.workloads.append(Workload("end-to-end photos -> .npy", "e2e", "ViT-B-32", 32, 1, E2E, files="photos"))
    b32.workloads.append(Workload(f"sgemm {SGEMM_N}x{SGEMM_N} fp32", "sgemm", "ViT-B-32", SGEMM_N, 1, ("clipforge",)))

    train = Group("ViT-B-32 training", "ViT-B-32", train=True)
    train.workloads.append(Workload(f"train step ViT-B-32 b{TRAIN_BATCH}", "train", "ViT-B-32", TRAIN_BATCH, 1, TRAIN))

    rn50 = Group("RN50 inference", "RN50", train=False)
    for batch, reps in ([(16, 1)] if quick else [(1, 16), (16, 1), (64, 1)]):
        rn50.workloads.append(Workload(f"image RN50 b{batch}", "image", "RN50", batch, reps, RESNET))

    b16 = Group("ViT-B-16 inference", "ViT-B-16", train=False)
    for batch, reps in ([(16, 1)] if quick else [(1, 8), (16, 1), (64, 1)]):
        b16.workloads.append(Workload(f"image ViT-B-16 b{batch}", "image", "ViT-B-16", batch, reps, VIT_PEERS))
    return [b32, train, rn50, b16]


# ---- inputs ---------------------------------------------------------------------------------------


def pixels(n: int, size: int = 224, seed: int = 0):
    """[n, 3, size, size] normalized-looking pixels, identical in every process for the same seed."""
    import torch

    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def captions(n: int, seed: int = 0) -> list[str]:
    """n real captions: Debian package short descriptions (dpkg status + apt lists), shuffled."""
    from tokenizer_corpus import debian_descriptions

    short, _ = debian_descriptions()
    rng = random.Random(seed)
    short = list(short)
    rng.shuffle(short)
    return (short * (n // max(1, len(short)) + 1))[:n]


def e2e_files(n: int = E2E_FILES) -> list[str]:
    """Real image files of varied sizes: every test JPEG, then corpus PNGs up to n (interleaved)."""
    import image_fixtures as fx

    jpegs = [str(p) for p in fx.corpus_jpegs()]
    pngs = [str(p) for p in fx.corpus_sample(200)][:: 200 // max(1, n - len(jpegs))][: n - len(jpegs)]
    files = jpegs + pngs
    random.Random(0).shuffle(files)  # mix sizes and formats across batches
    return files


def photo_files(cache: Path = ROOT / "bench" / ".photo_cache") -> list[str]:
    """Large real JPEGs from PHOTO_PACKAGES (apt-get download, unpacked once into `cache`).

    Every JPEG of mate-backgrounds and ukui-wallpapers, and of each Plasma wallpaper its largest
    image and its 1920-pixel-wide one; [] when the packages cannot be fetched.
    """
    import subprocess

    unpacked = cache / "unpacked"
    if not unpacked.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        fetched = subprocess.run(["apt-get", "download", *PHOTO_PACKAGES], cwd=cache, capture_output=True, text=True)
        debs = sorted(cache.glob("*.deb"))
        if fetched.returncode != 0 or not debs:
            print(f"photo workload skipped: apt-get download failed: {fetched.stderr.strip()[:300]}", file=sys.stderr)
            return []
        tmp = cache / "unpacking"
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
            deb.unlink()
        tmp.rename(unpacked)
    files = sorted(str(p) for p in (unpacked / "usr/share/backgrounds").rglob("*.jpg"))
    for wallpaper in sorted((unpacked / "usr/share/wallpapers").glob("*/contents/images")):
        sizes = {}
        for p in wallpaper.glob("*.jpg"):
            w, _, h = p.stem.partition("x")
            if w.isdigit() and h.isdigit():
                sizes[(int(w), int(h))] = str(p)
        if sizes:
            files.append(sizes[max(sizes, key=lambda s: s[0] * s[1])])
            files += [sizes[s] for s in sorted(sizes) if s[0] == 1920 and s[1] < s[0]][:1]
    random.Random(0).shuffle(files)
    return files


FILE_SETS = {"corpus": e2e_files, "photos": photo_files}


# ---- weights --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightPaths:
    arch: str
    open_clip: str  # open_clip's own safetensors (the source; clipforge loads this one too)
    openai: str  # OpenAI state dict (.pt)
    hf: Optional[str]  # transformers directory (ViTs only)
    onnx_dir: str  # where the onnxruntime worker writes/reads clipforge's ONNX export


def prepare_weights(arch: str, root: Path) -> WeightPaths:
    """Build open_clip's `arch` with random weights once; write it in each library's format (cached in root)."""
    out = root / arch
    paths = WeightPaths(
        arch, str(out / "open_clip.safetensors"), str(out / "openai.pt"),
        None if arch.startswith("RN") else str(out / "hf"), str(out / "onnx"),
    )
    if (out / ".complete").exists():
        return paths
    out.mkdir(parents=True, exist_ok=True)
    import clipforge
    from references import build_open_clip
    from safetensors.torch import save_file

    ref = build_open_clip(arch, quick_gelu=True, seed=0)  # random BatchNorm statistics too
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, paths.open_clip)
    del ref
    model, _, _ = clipforge.load(paths.open_clip, arch=CLIPFORGE_ARCH[arch])
    clipforge.save(model, paths.openai, format="openai")
    if paths.hf:
        clipforge.save(model, paths.hf, format="hf")
    del model
    (out / ".complete").touch()
    return paths


# ---- FLOPs ----------------------------------------------------------------------------------------


def vit_image_flops(image_size: int, patch: int, width: int, layers: int, mlp_width: int, embed_dim: int) -> int:
    """FLOPs (2 x multiply-adds) of one ViT image-tower forward, from the shapes (matmuls and attention only)."""
    n = (image_size // patch) ** 2 + 1  # tokens: patches + class token
    patch_embed = (n - 1) * width * 3 * patch * patch
    per_layer = (
        n * width * 3 * width  # q, k, v projection
        + 2 * n * n * width  # q @ k^T and attn @ v, all heads
        + n * width * width  # out projection
        + 2 * n * width * mlp_width  # MLP
    )
    return 2 * (patch_embed + layers * per_layer + width * embed_dim)


def text_flops(length: int, width: int = 512, layers: int = 12, embed_dim: int = 512) -> int:
    """FLOPs of one text-tower forward over `length` tokens (causal attention counted as full)."""
    per_layer = length * width * 4 * width + 2 * length * length * width + 2 * length * width * 4 * width
    return 2 * (layers * per_layer + width * embed_dim)
