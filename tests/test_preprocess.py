"""Preprocess parity: OpenAI's `clip`, open_clip and transformers are the oracles.

Tolerance is 1e-6 max abs everywhere; in practice the outputs are bit-identical.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import warnings

import image_fixtures as fx
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from clipforge.configs import PreprocessConfig
from clipforge.image import Preprocess, load_image
from clipforge.image.preprocess import (
    composite_on_white,
    resized_shortest_side,
    to_8bit,
)

# The references' convert("RGB") warns on palette images with per-entry alpha; ours does not
# (checked in test_no_palette_transparency_warning).
pytestmark = pytest.mark.filterwarnings("ignore:Palette images with Transparency")

TOL = 1e-6
SIZES = (224, 288, 336, 384, 448)
# Modes where the references are defined and we must match them; I;16 is the documented deviation.
PARITY_MODES = tuple(m for m in fx.GENERATED_MODES if m != "I;16")


@functools.lru_cache(maxsize=None)
def clip_ref(size: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import clip
    return clip.clip._transform(size)


@functools.lru_cache(maxsize=None)
def open_clip_ref(size: int):
    import open_clip

    return open_clip.image_transform(size, is_train=False)


@functools.lru_cache(maxsize=None)
def hf_ref(size: int | None, backend: str = "torchvision"):
    from transformers import CLIPImageProcessor, CLIPImageProcessorPil

    cls = CLIPImageProcessor if backend == "torchvision" else CLIPImageProcessorPil
    if size is None:
        return cls()  # its defaults: shortest_edge 224, crop 224x224
    return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def run_hf(image: Image.Image, size: int | None, backend: str = "torchvision") -> torch.Tensor:
    out = hf_ref(size, backend)(image, return_tensors="pt")["pixel_values"][0]
    return torch.as_tensor(out)


@functools.lru_cache(maxsize=None)
def ours(size: int, mode: str = "openai", **options) -> Preprocess:
    return Preprocess(PreprocessConfig(image_size=size, mode=mode), **options)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == torch.float32 and b.dtype == torch.float32
    return (a - b).abs().max().item()


def sizes_for(size: int) -> tuple[tuple[int, int], ...]:
    # The extreme aspect ratios make a 224 x 74666 intermediate: those run at 224 only, for time.
    if size == 224:
        return fx.ODD_SIZES
    return tuple(s for s in fx.ODD_SIZES if max(s) / min(s) < 100 and s != (224, 224))


# -- generated images of every mode ------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", PARITY_MODES)
def test_openai_mode_matches_clip_and_open_clip(mode: str, size: int) -> None:
    for wh in sizes_for(size):
        image = generated_image(mode, wh)
        got = ours(size)(image)
        assert got.shape == (3, size, size)
        assert max_diff(got, clip_ref(size)(image)) <= TOL, (mode, wh)
        assert max_diff(got, open_clip_ref(size)(image)) <= TOL, (mode, wh)


@pytest.mark.parametrize("size", (None, 224, 336, 448))
@pytest.mark.parametrize("mode", PARITY_MODES)
def test_hf_mode_matches_clip_image_processor(mode: str, size: int | None) -> None:
    s = size or 224
    for wh in sizes_for(s):
        image = generated_image(mode, wh)
        got = ours(s, "hf")(image)
        assert max_diff(got, run_hf(image, size)) <= TOL, (mode, wh)


@pytest.mark.parametrize("size", (224, 336))
@pytest.mark.parametrize("mode", PARITY_MODES)
def test_hf_pil_backend_matches_clip_image_processor_pil(mode: str, size: int) -> None:
    for wh in sizes_for(size):
        image = generated_image(mode, wh)
        got = ours(size, "hf", hf_backend="pil")(image)
        assert max_diff(got, run_hf(image, size, "pil")) <= TOL, (mode, wh)


@functools.lru_cache(maxsize=None)
def _generated(mode: str, wh: tuple[int, int]) -> Image.Image:
    return fx.generated_image(mode, wh)


def generated_image(mode: str, wh: tuple[int, int]) -> Image.Image:
    return _generated(mode, wh).copy()  # copies: nothing may mutate the cached original


# -- 16-bit: the documented deviation --------------------------------------------------------


@pytest.mark.parametrize("kind", ["I;16", "I-16bit-range"])
@pytest.mark.parametrize("pipeline", ["openai", "hf"])
def test_16bit_is_scaled_not_clipped(kind: str, pipeline: str) -> None:
    image16 = fx.generated_image("I;16", (333, 517))
    if kind == "I-16bit-range":
        image16 = Image.fromarray(np.asarray(image16).astype(np.int32))
        assert image16.mode == "I"
    values = np.asarray(image16).astype(np.float64)
    expected_8bit = Image.fromarray(np.floor(values * 255 / 65535 + 0.5).astype(np.uint8))
    assert to_8bit(image16).mode == "L"
    assert np.array_equal(np.asarray(to_8bit(image16)), np.asarray(expected_8bit))

    if pipeline == "openai":
        got, reference, reference_on_8bit = ours(224)(image16), clip_ref(224)(image16), clip_ref(224)(expected_8bit)
    else:
        got, reference, reference_on_8bit = ours(224, "hf")(image16), run_hf(image16, 224), run_hf(expected_8bit, 224)
    # The reference clips at 255: (nearly) pure white. We deviate from that ...
    white = (1 - torch.tensor(PreprocessConfig().mean)) / torch.tensor(PreprocessConfig().std)
    assert torch.isclose(reference, white.view(3, 1, 1), atol=1e-5).float().mean() > 0.99
    assert max_diff(got, reference) > 1.0
    # ... and equal the reference run on the same image scaled to 8 bits first.
    assert max_diff(got, reference_on_8bit) <= TOL
    # Sanity: the mean brightness survives.
    unnormalized = got * torch.tensor(PreprocessConfig().std).view(3, 1, 1) + torch.tensor(
        PreprocessConfig().mean
    ).view(3, 1, 1)
    assert abs(unnormalized.mean().item() - values.mean() / 65535) < 0.02


def test_8bit_range_I_images_are_left_alone() -> None:
    image = fx.generated_image("I", (40, 30))
    assert to_8bit(image) is image


# -- real images: openclipart and JPEGs made from it -----------------------------------------


@pytest.fixture(scope="module")
def corpus_images() -> list[tuple[str, Image.Image]]:
    return [(p.name, load_image(p)) for p in fx.corpus_sample(200)]


def test_corpus_sample_covers_modes_and_sizes(corpus_images) -> None:
    modes = {(im.mode, "transparency" in im.info) for _, im in corpus_images}
    assert {("RGBA", False), ("LA", False), ("P", True), ("P", False), ("RGB", False), ("L", False)} <= modes
    shorts = [min(im.size) for _, im in corpus_images]
    assert min(shorts) < 32 and max(shorts) >= 1024 and len(corpus_images) == 200


def test_corpus_openai_224(corpus_images) -> None:
    for name, image in corpus_images:
        got = ours(224)(image)
        assert max_diff(got, clip_ref(224)(image)) <= TOL, name
        assert max_diff(got, open_clip_ref(224)(image)) <= TOL, name


@pytest.mark.parametrize("size", (288, 336, 384, 448))
def test_corpus_openai_other_sizes(corpus_images, size: int) -> None:
    for name, image in corpus_images[SIZES.index(size) :: 8]:
        assert max_diff(ours(size)(image), clip_ref(size)(image)) <= TOL, name


@pytest.mark.parametrize("backend", ["torchvision", "pil"])
def test_corpus_hf_224(corpus_images, backend: str) -> None:
    for name, image in corpus_images:
        got = ours(224, "hf", hf_backend=backend)(image)
        assert max_diff(got, run_hf(image, 224, backend)) <= TOL, name


def test_corpus_hf_336(corpus_images) -> None:
    for name, image in corpus_images[::5]:
        assert max_diff(ours(336, "hf")(image), run_hf(image, 336)) <= TOL, name


def test_jpegs_match_all_references() -> None:
    jpegs = fx.corpus_jpegs()
    assert {load_image(p).mode for p in jpegs} == {"RGB", "L", "CMYK"}
    for path in jpegs:
        image = load_image(path)
        for size in (224, 336):
            got = ours(size)(image)
            assert max_diff(got, clip_ref(size)(image)) <= TOL, path.name
            assert max_diff(got, open_clip_ref(size)(image)) <= TOL, path.name
            assert max_diff(ours(size, "hf")(image), run_hf(image, size)) <= TOL, path.name


def test_no_palette_transparency_warning(corpus_images) -> None:
    palette = [im for _, im in corpus_images if im.mode == "P" and isinstance(im.info.get("transparency"), bytes)]
    assert palette
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for image in palette[:5]:
            ours(224)(image)
            ours(224, "hf", alpha_on_white=False)(image)
        assert "transparency" in palette[0].info  # the caller's image keeps its key


# -- options -----------------------------------------------------------------------------


def test_alpha_on_white_option_openai() -> None:
    image = fx.generated_image("RGBA", (333, 517))
    flat = ours(224, alpha_on_white=True)(image)
    assert max_diff(flat, clip_ref(224)(composite_on_white(image))) <= TOL
    assert max_diff(flat, clip_ref(224)(image)) > 0.1  # the default drops alpha, as OpenAI does


def test_transparent_pixels_openai_vs_hf() -> None:
    # Fully transparent red. OpenAI's pipeline resizes RGBA (PIL premultiplies alpha, so colour
    # under alpha 0 is lost) and then drops alpha: black. transformers composites on white first.
    image = Image.new("RGBA", (50, 60), (255, 0, 0, 0))
    mean = torch.tensor(PreprocessConfig().mean).view(3, 1, 1)
    std = torch.tensor(PreprocessConfig().std).view(3, 1, 1)
    openai = ours(224)(image) * std + mean
    hf = ours(224, "hf")(image) * std + mean
    assert torch.allclose(openai, torch.zeros_like(openai), atol=1e-5)
    assert torch.allclose(hf, torch.ones_like(hf), atol=1e-5)
    assert max_diff(ours(224, "hf")(image), run_hf(image, 224)) <= TOL
    # hf without compositing drops alpha *before* resizing: the hidden red shows.
    no_alpha = ours(224, "hf", alpha_on_white=False)(image) * std + mean
    assert torch.allclose(no_alpha.mean((1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)
    # With no resize (short side already 224) OpenAI's pipeline shows the hidden colour too.
    exact = ours(224)(Image.new("RGBA", (224, 300), (255, 0, 0, 0))) * std + mean
    assert torch.allclose(exact.mean((1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)


def test_exif_transpose_option() -> None:
    exif_jpeg = next(p for p in fx.corpus_jpegs() if p.name.endswith("_exif6.jpg"))
    image = load_image(exif_jpeg)
    upright = ImageOps.exif_transpose(image)
    assert upright.size == image.size[::-1]
    assert max_diff(ours(224, exif_transpose=True)(image), clip_ref(224)(upright)) <= TOL
    assert max_diff(ours(224)(image), clip_ref(224)(image)) <= TOL  # off by default


def test_input_image_is_not_modified() -> None:
    image = fx.generated_image("RGBA", (60, 40))
    before = np.asarray(image).copy()
    ours(224, alpha_on_white=True, exif_transpose=True)(image)
    ours(224, "hf")(image)
    assert np.array_equal(np.asarray(image), before)


# -- API ---------------------------------------------------------------------------------


def test_batch_repr_config_and_validation() -> None:
    config = PreprocessConfig(image_size=288)
    pre = Preprocess(config)
    assert pre.config is config and pre.image_size == 288
    images = [fx.generated_image(m, (50, 70)) for m in ("RGB", "P", "LA")]
    batch = pre.batch(images)
    assert batch.shape == (3, 3, 288, 288) and batch.dtype == torch.float32
    assert all(torch.equal(batch[i], pre(im)) for i, im in enumerate(images))
    assert pre.batch([]).shape == (0, 3, 288, 288)
    text = repr(pre)
    assert text.startswith("Preprocess(mode='openai'") and "image_size=288" in text and "alpha_on_white=False" in text
    assert "hf_backend='torchvision'" in repr(Preprocess(PreprocessConfig(mode="hf")))
    with pytest.raises(ValueError, match="mode"):
        Preprocess(PreprocessConfig(mode="timm"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hf_backend"):
        Preprocess(hf_backend="cv2")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pre(np.zeros((4, 4, 3), np.uint8))  # type: ignore[arg-type]


def test_bilinear_interpolation_matches_torchvision() -> None:
    import torchvision.transforms as T

    ref = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop(224),
            lambda im: im.convert("RGB"),
            T.ToTensor(),
            T.Normalize(PreprocessConfig().mean, PreprocessConfig().std),
        ]
    )
    pre = Preprocess(PreprocessConfig(interpolation="bilinear"))
    for mode in ("RGB", "RGBA", "P"):
        image = fx.generated_image(mode, (333, 517))
        assert max_diff(pre(image), ref(image)) <= TOL


def test_resized_shortest_side_truncates_like_torchvision() -> None:
    assert resized_shortest_side(333, 517, 224) == (224, int(224 * 517 / 333))
    assert resized_shortest_side(517, 333, 224) == (int(224 * 517 / 333), 224)
    assert resized_shortest_side(10000, 30, 224) == (74666, 224)
    assert resized_shortest_side(1, 1, 224) == (224, 224)


def test_center_crop_padding_paths_match_references() -> None:
    # After a shortest-side resize the crop never pads; the helpers still must, like the references.
    import torchvision.transforms as T
    from transformers.image_transforms import center_crop as hf_numpy_center_crop

    from clipforge.image.preprocess import (
        _center_crop_hf,
        _center_crop_hf_pil,
        _center_crop_openai,
    )

    for wh in [(5, 7), (224, 3), (3, 300), (10, 10), (223, 225), (9, 8)]:
        for mode in ("RGB", "P", "LA"):
            image = fx.generated_image(mode, wh)
            assert np.array_equal(np.asarray(T.CenterCrop(8)(image)), np.asarray(_center_crop_openai(image, 8)))
        chw = torch.from_numpy(np.array(fx.generated_image("RGB", wh))).permute(2, 0, 1).contiguous()
        hf_pil = hf_numpy_center_crop(chw.numpy(), (8, 8), input_data_format="channels_first")
        assert np.array_equal(hf_pil, _center_crop_hf_pil(chw, 8).numpy())
        processor = hf_ref(None).__class__(
            do_resize=False, do_rescale=False, do_normalize=False, crop_size={"height": 8, "width": 8}
        )
        hf = processor(fx.generated_image("RGB", wh), return_tensors="pt")["pixel_values"][0]
        assert torch.equal(hf.to(torch.uint8), _center_crop_hf(chw, 8))


def test_no_torchvision_at_run_time() -> None:
    code = (
        "import sys; from PIL import Image; import clipforge.image as ci;"
        "from clipforge.configs import PreprocessConfig;"
        "im = Image.new('RGBA', (300, 200), (1, 2, 3, 4));"
        "ci.Preprocess()(im); ci.Preprocess(PreprocessConfig(mode='hf'))(im);"
        "ci.Preprocess(PreprocessConfig(mode='hf'), hf_backend='pil')(im);"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torchvision', 'transformers', 'open_clip', 'clip')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
