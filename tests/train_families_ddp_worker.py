"""Worker for tests/test_train_families.py: `python train_families_ddp_worker.py OUT INIT DATA` (alone, or
under torchrun with 2 processes): a 4-step `train()` fine-tuning of INIT (a SigLIP directory) with
8 pairs per step (1 x 8 or 2 x 4), written to OUT (metrics.jsonl, final.safetensors)."""

from __future__ import annotations

import sys

from tiny_models import train_config

from clipforge.train import train
from clipforge.train.distributed import cleanup, init_distributed


def main() -> None:
    out, init, data = sys.argv[1:4]
    info = init_distributed("cpu")
    try:
        train(train_config(init=init, train=data, batch_size=8 // info.world_size, max_steps=4, lr=1e-3, warmup_steps=1,
                           workers=0, out_dir=out, progress=False, plot=False, seed=3))
    finally:
        cleanup(info)


if __name__ == "__main__":
    main()
