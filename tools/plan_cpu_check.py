"""Compare `clipforge plan --gpu cpu` with a measured training step on this machine (docs/plan.md).

    python tools/plan_cpu_check.py [--steps 5] [--batch 256]

Trains the bundled model's architecture (recipes/clipforge-mini.toml: 64-px ViT, 4+4 layers) on
random pixels and full-length captions, i.e. clipforge's training step without data loading,
and times it. Then plans the same model with this machine's measured matmul peak, and prints
a docs/plan.md table row: measured and planned pairs/s, plan time / measured time, and the
utilisation the step actually reached (the --mfu that would reproduce it). Both are measured in the same minute, so a busy machine slows both.
"""

from __future__ import annotations

import argparse
import time
import tomllib
from pathlib import Path

import torch

from clipforge.configs import ClipConfig
from clipforge.models import ClipModel
from clipforge.planning import measure_cpu, plan_training
from clipforge.train.loss import ClipLoss
from clipforge.train.step import TrainModule, forward_backward
from clipforge.train.optim import build_optimizer

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clipforge-mini.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    config = ClipConfig.from_dict(tomllib.loads(RECIPE.read_text())["model"])
    torch.manual_seed(0)
    model = ClipModel(config).train()
    loss_fn = ClipLoss()
    module = TrainModule(model, loss_fn)
    optimizer = build_optimizer(module.named_parameters(), lr=1e-4, weight_decay=0.1)
    pixels = torch.randn(args.batch, 3, config.image_size, config.image_size)
    tokens = torch.randint(1, 49000, (args.batch, config.text.context_length))
    tokens[:, 0], tokens[:, -1] = config.text.sot_token_id, config.text.eot_token_id

    def step() -> None:
        forward_backward(module, loss_fn, [(pixels, tokens)])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: AdamW state, oneDNN kernels
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    measured = args.batch / sorted(times)[len(times) // 2]  # median step

    cpu = measure_cpu("fp32")
    plan = plan_training(config, 1_000_000, 1, cpu, 1, args.batch, precision="fp32")
    implied = plan.executed_flops_per_sample * measured / plan.peak_flops_per_gpu
    print(f"{cpu.description}; {torch.get_num_threads()} threads")
    print(f"model {plan.params / 1e6:.1f}M params, {plan.train_flops_per_sample / 1e9:.3f} GFLOPs per pair (train), "
          f"checkpointing {plan.grad_checkpointing}")
    print(f"| {torch.get_num_threads()} threads, batch {args.batch}, fp32 | {cpu.peak('fp32') / 1e9:.0f} GFLOP/s "
          f"| {measured:.1f} | {plan.samples_per_second_per_gpu:.1f} | {measured / plan.samples_per_second_per_gpu:.2f} "
          f"| {implied:.3f} |")

if __name__ == "__main__":
    main()
