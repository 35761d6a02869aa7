"""ClipGuidance and spherical_distance_loss on a tiny random clipforge model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipforge.configs import (
    ClipConfig,
    PreprocessConfig,
    TextConfig,
    VisionTransformerConfig,
)
from clipforge.models import ClipModel
from clipforge.tasks.guidance import ClipGuidance, spherical_distance_loss
from clipforge.text import Tokenizer

SIZE = 32


@pytest.fixture(scope="module")
def model() -> ClipModel:
    torch.manual_seed(0)
    config = ClipConfig(
        embed_dim=16,
        vision=VisionTransformerConfig(image_size=SIZE, patch_size=8, width=32, layers=2, heads=4),
        text=TextConfig(width=32, heads=4, layers=2),
    )
    model = ClipModel(config).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # guidance optimises the image, never the model
    return model


@pytest.fixture(scope="module")
def text_embeds(model) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_text(Tokenizer()(["a red rose, still life"]))[0]


# Not OpenAI's numbers, so a path that ignored the config's mean/std would be caught.
CONFIG = PreprocessConfig(image_size=SIZE, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def test_spherical_distance_is_half_the_squared_angle():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[3.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])  # angles 0, pi/2, pi; lengths do not matter
    expected = torch.tensor([0.0, (math.pi / 2) ** 2 / 2, math.pi**2 / 2])
    assert torch.allclose(spherical_distance_loss(x, y), expected, atol=1e-6)


def test_no_augmentation_equals_encode_image_of_the_resized_image(model):
    torch.manual_seed(1)
    image = torch.rand(2, 3, 50, 70)  # [0, 1]; not square: the centred 50x50 square is used
    guidance = ClipGuidance(model, CONFIG, augment=False, input_range="[0,1]")
    square = image[:, :, :, 10:60]
    resized = F.interpolate(square, size=(SIZE, SIZE), mode="bicubic", align_corners=False, antialias=True)
    mean, std = torch.tensor(CONFIG.mean).view(1, 3, 1, 1), torch.tensor(CONFIG.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.encode_image((resized - mean) / std)
        got = guidance.embed(image)
    assert got.shape == (1, 2, 16)
    assert torch.allclose(got[0], expected, atol=1e-6)


def test_input_ranges_agree(model):
    torch.manual_seed(2)
    unit = torch.rand(2, 3, 48, 40)
    minus_one_one = ClipGuidance(model, CONFIG, cutouts=4, input_range="[-1,1]")
    zero_one = ClipGuidance(model, CONFIG, cutouts=4, input_range="[0,1]")
    with torch.no_grad():
        a = minus_one_one.embed(unit * 2 - 1, torch.Generator().manual_seed(5))
        b = zero_one.embed(unit, torch.Generator().manual_seed(5))
    assert a.shape == (4, 2, 16)
    assert torch.allclose(a, b, atol=1e-5)


def test_cutouts_are_random_but_seeded(model):
    image = torch.rand(1, 3, 64, 64)
    guidance = ClipGuidance(model, CONFIG, cutouts=3, cut_power=2.0)
    with torch.no_grad():
        a = guidance.embed(image, torch.Generator().manual_seed(0))
        b = guidance.embed(image, torch.Generator().manual_seed(0))
        c = guidance.embed(image, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_gradients_reach_the_image(model, text_embeds):
    image = (torch.rand(2, 3, 48, 40) * 2 - 1).requires_grad_()
    guidance = ClipGuidance(model, CONFIG, cutouts=4)
    loss = guidance.loss(image, text_embeds, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
    per_image = guidance.loss(image.detach(), text_embeds.expand(2, -1), reduction="none",
                              generator=torch.Generator().manual_seed(0))
    assert torch.allclose(per_image.sum(), loss.detach(), atol=1e-6)


# Random cutouts and flips make a harder target (every view must match), so it falls more slowly.
@pytest.mark.parametrize("augment, factor", [(False, 0.5), (True, 0.95)])
def test_loss_decreases_when_the_image_is_optimised(model, text_embeds, augment, factor):
    torch.manual_seed(3)
    image = (torch.rand(1, 3, 40, 40) * 2 - 1).requires_grad_()
    guidance = ClipGuidance(model, CONFIG, cutouts=8, augment=augment)
    optimizer = torch.optim.Adam([image], lr=0.05)

    def evaluate() -> float:
        with torch.no_grad():  # the same cutouts before and after
            return float(guidance.loss(image, text_embeds, generator=torch.Generator().manual_seed(0)))

    before = evaluate()
    for _ in range(20):
        optimizer.zero_grad()
        guidance.loss(image, text_embeds).backward()
        optimizer.step()
    after = evaluate()
    assert after < factor * before, (augment, before, after)


def test_bad_arguments(model, text_embeds):
    with pytest.raises(ValueError, match="input_range"):
        ClipGuidance(model, CONFIG, input_range="0..255")
    with pytest.raises(ValueError, match="px"):
        ClipGuidance(model, PreprocessConfig(image_size=224))
    with pytest.raises(ValueError, match="text_embeds"):
        ClipGuidance(model, CONFIG).loss(torch.rand(2, 3, 40, 40), torch.rand(3, 16))
