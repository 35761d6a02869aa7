"""Run by tests/test_train_equivalence.py, either as one plain process or under
`torchrun --nproc_per_node 2` (gloo, CPU). Both runs see the same GLOBAL batch; each rank takes its
slice, exactly as the trainer's sampler deals it out. Rank 0 writes:

* OUT/grads.pt: for each loss variant, the loss of the global batch and every parameter's gradient
  after one forward_backward (DDP has averaged them), with and without gradient accumulation, and
  with ranks holding unequal numbers of rows (a dropped bad sample);
* OUT/train/: a short real `train()` run (metrics.jsonl, final.safetensors) on the shapes data.

usage: python tests/train_ddp_worker.py OUT_DIR SHAPES_CSV
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from clipforge.train.distributed import (
    DistInfo,
    all_reduce_sum,
    cleanup,
    init_distributed,
)
from clipforge.train.loop import build_model, train
from clipforge.train.loss import build_loss
from clipforge.train.step import TrainModule, forward_backward

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import train_config  # noqa: E402

VARIANTS = [  # (name, loss, local_loss, accum_steps, rows per rank when 2 ranks)
    ("clip_local", "clip", True, 1, (4, 4)),
    ("clip_full", "clip", False, 1, (4, 4)),
    ("siglip", "siglip", True, 1, (4, 4)),
    ("clip_local_accum2", "clip", True, 2, (4, 4)),
    ("siglip_accum2", "siglip", True, 2, (4, 4)),
    ("clip_local_uneven", "clip", True, 1, (4, 3)),
    ("siglip_uneven", "siglip", True, 1, (4, 3)),
]


def global_batch(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    images = torch.randn(rows, 3, 32, 32, generator=g)
    texts = torch.zeros(rows, 16, dtype=torch.long)
    for i in range(rows):
        length = int(torch.randint(1, 14, (1,), generator=g))
        texts[i, 0] = 49406
        texts[i, 1 : 1 + length] = torch.randint(1, 49000, (length,), generator=g)
        texts[i, 1 + length] = 49407
    return images, texts


def gradients(info: DistInfo) -> dict:
    results = {}
    for name, loss_kind, local, accum, per_rank in VARIANTS:
        sizes = per_rank if info.world_size == 2 else (sum(per_rank),)
        images, texts = global_batch(sum(per_rank))
        start = sum(sizes[: info.rank])
        mine = slice(start, start + sizes[info.rank])
        images, texts = images[mine], texts[mine]
        config = train_config(train="unused.csv", loss=loss_kind, local_loss=local)
        torch.manual_seed(0)
        model, _, _ = build_model(config)
        loss_fn = build_loss(loss_kind, local_loss=local, dist=info)
        module = TrainModule(model, loss_fn)
        wrapped = torch.nn.parallel.DistributedDataParallel(module) if info.distributed else module
        micro = [(x, t) for x, t in zip(images.chunk(accum), texts.chunk(accum))]
        loss = forward_backward(wrapped, loss_fn, micro)
        loss = all_reduce_sum(loss.double().reshape(1), info) / info.world_size
        grads = {n: p.grad.detach().clone() for n, p in module.named_parameters()}
        results[name] = {"loss": float(loss), "grads": grads}
    return results


def main() -> None:
    out, data = Path(sys.argv[1]), sys.argv[2]
    info = init_distributed("cpu")
    try:
        results = gradients(info)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            torch.save(results, out / "grads.pt")
        # A real run: 8 pairs per step in both cases (1 x 8 or 2 x 4); train() reuses the process group.
        config = train_config(
            train=data, batch_size=8 // info.world_size, max_steps=4,
            lr=1e-3, warmup_steps=1, workers=0, out_dir=str(out / "train"), progress=False, plot=False, seed=3,
        )
        train(config)
    finally:
        cleanup(info)


if __name__ == "__main__":
    main()
