"""encode_text skips padding (TokenPacking) and computes the last block at the end-of-text token only.

That must not change a number: each case compares with open_clip, which runs all 77 positions,
in value (1e-5 x scale, as the parity tests) and, in training, in the gradients of every text
parameter. The batches mix lengths on purpose: one token row of every shape the packing treats
differently (a row filling all 77 positions, rows of equal length, a single row, a row with no
end-of-text token).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from references import build_open_clip

import clipforge
from clipforge import model_zoo

TOL = 1e-5


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from safetensors.torch import save_file

    ref = build_open_clip("ViT-B-32", depth=3, quick_gelu=True)
    path = tmp_path_factory.mktemp("packing") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    cfg = model_zoo.get_architecture("ViT-B-32-quickgelu")
    cfg = cfg.replace(
        vision=dataclasses.replace(cfg.vision, layers=3), text=dataclasses.replace(cfg.text, layers=3)
    )
    model, _, _ = clipforge.load(path, arch=cfg)
    return model, ref


def token_rows(lengths: list[int], seed: int = 0) -> torch.Tensor:
    """Rows of random word ids with start-of-text, end-of-text at position length - 1, zero padding."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(len(lengths), 77, dtype=torch.long)
    for row, n in enumerate(lengths):
        tokens[row, 0] = 49406
        tokens[row, 1 : n - 1] = torch.randint(1, 49000, (n - 2,), generator=g)
        tokens[row, n - 1] = 49407
    return tokens


CASES = {
    "mixed": [5, 12, 3, 77, 20, 9, 9, 40],
    "equal lengths": [11, 11, 11, 11],
    "single row": [14],
    "one full row": [77],
    "shortest possible": [2, 2, 30],
}


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    scale = ref.abs().max().item()
    diff = (ours - ref).abs().max().item()
    assert diff <= TOL * max(scale, 1e-6), f"{what}: max abs diff {diff:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("case", list(CASES))
def test_packed_text_features_equal_all_77_positions(pair, case):
    model, ref = pair
    tokens = token_rows(CASES[case])
    with torch.no_grad():
        ours = model.encode_text(tokens)
        assert_close(ours, ref.encode_text(tokens), f"{case} vs open_clip")
        assert_close(ours, model.encode_text_full(tokens).text_embeds, f"{case} vs encode_text_full")


def test_row_without_end_of_text_pools_at_the_largest_id(pair):
    """OpenAI pools at argmax(tokens): a row cut without an end-of-text token pools at its largest id."""
    model, ref = pair
    tokens = token_rows([6, 30])
    tokens[1, 29] = 0  # drop the end-of-text token
    tokens[1, 10] = 49300  # now the largest id in the row
    with torch.no_grad():
        assert_close(model.encode_text(tokens), ref.encode_text(tokens), "no end-of-text row")


@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_text_gradients_equal_open_clip(pair, checkpointing):
    model, ref = pair
    tokens = token_rows(CASES["mixed"], seed=1)
    weights = torch.randn(len(CASES["mixed"]), model.config.embed_dim, generator=torch.Generator().manual_seed(2))
    model.train()
    model.set_grad_checkpointing(checkpointing)
    ref.train()
    try:
        model.zero_grad()
        ref.zero_grad()
        (model.encode_text(tokens) * weights).sum().backward()
        (ref.encode_text(tokens) * weights).sum().backward()
        ref_grads = dict(ref.named_parameters())
        compared = 0
        for name, p in model.named_parameters():
            if name.startswith("visual.") or name == "logit_scale":
                continue
            g, rg = p.grad, ref_grads[name].grad  # open_clip keeps OpenAI's key layout, as clipforge
            assert g is not None and rg is not None, name
            assert_close(g, rg, f"grad {name}")
            compared += 1
        assert compared > 10
    finally:
        model.eval()
        model.set_grad_checkpointing(False)
        ref.eval()
