"""Published CLIP training runs, and what `plan_training` predicts for each: the MFU calibration.

Each run is transcribed from its source (named in `source`); figures the source does not state
are marked in `assumed`. docs/plan.md shows `calibration_markdown()`, and tests/test_plan.py
checks that the table there is what this code produces, so the document cannot drift.

Two kinds of published figure:
    time: wall-clock days or GPU-hours for a whole run (pairs x epochs samples);
    throughput: samples per second per GPU, measured in a running job (LAION's training-speed table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from clipforge.errors import InvalidInputError
from clipforge.planning.hardware import get_gpu
from clipforge.planning.plan import DEFAULT_MFU, TrainingPlan, plan_training

CLIP_PAPER = "Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision, sec. 2.5"
OPEN_CLIP_LAION400M = "open_clip docs/PRETRAINED.md, LAION-400M section"
LAION_BLOG = "LAION blog, Large scale openCLIP: L/14, H/14 and g/14 trained on LAION-2B (2022-09-15), 'Training speeds'"


@dataclass(frozen=True)
class PublishedRun:
    label: str
    model: str
    gpu: str
    gpus: int
    global_batch: int
    precision: str
    grad_checkpointing: bool
    source: str
    pairs: int = 400_000_000
    epochs: float = 32
    gpu_hours: Optional[float] = None  # "time" runs: published GPU-hours (or days x GPUs x 24)
    samples_per_second_per_gpu: Optional[float] = None  # "throughput" runs
    published: str = ""  # the figure as the source words it
    assumed: str = ""  # what the source does not say and the plan assumes


PUBLISHED_RUNS: tuple[PublishedRun, ...] = (
    PublishedRun(
        "CLIP ViT-L/14", "ViT-L-14", "V100-32GB", 256, 32768, "fp16", True, CLIP_PAPER,
        gpu_hours=12 * 24 * 256, published="12 days on 256 V100",
        assumed="V100 SXM2 32 GB; the 12 days taken as the 32 epochs at 224 px (the paper adds one epoch at 336 px)",
    ),
    PublishedRun(
        "CLIP RN50x64", "RN50x64", "V100-32GB", 592, 32768, "fp16", True, CLIP_PAPER,
        gpu_hours=18 * 24 * 592, published="18 days on 592 V100",
        assumed="V100 SXM2 32 GB; clipforge recomputes only the text tower under checkpointing",
    ),
    PublishedRun(
        "open_clip ViT-B/32, LAION-400M", "ViT-B-32", "A100-40GB", 128, 32768, "fp16", False, OPEN_CLIP_LAION400M,
        gpu_hours=4600, published="128 A100 40GB, ~36 h, 4600 GPU-hours, 256/GPU",
        assumed="32 epochs of 400M pairs (weights tagged laion400m_e32); amp fp16; no checkpointing",
    ),
    PublishedRun(
        "open_clip ViT-B/16, LAION-400M", "ViT-B-16", "A100-40GB", 176, 33792, "fp16", False, OPEN_CLIP_LAION400M,
        gpu_hours=10700, published="176 A100 40GB, ~61 h, 10700 GPU-hours, 192/GPU",
        assumed="32 epochs of 400M pairs (laion400m_e32); amp fp16; no checkpointing",
    ),
    PublishedRun(
        "open_clip ViT-L/14, LAION-400M", "ViT-L-14", "A100-40GB", 400, 38400, "fp16", True, OPEN_CLIP_LAION400M,
        gpu_hours=50800, published="400 A100 40GB, ~127 h, 50800 GPU-hours, 96/GPU, grad checkpointing",
        assumed="32 epochs of 400M pairs (laion400m_e32); amp fp16",
    ),
    PublishedRun(
        "LAION ViT-B/32 fp16", "ViT-B-32", "A100-40GB", 824, 96 * 824, "fp16", True, LAION_BLOG,
        samples_per_second_per_gpu=228, published="228 samples/s/GPU, 96/GPU, 824 A100 40GB",
    ),
    PublishedRun(
        "LAION ViT-H/14 fp16", "ViT-H-14", "A100-40GB", 824, 96 * 824, "fp16", True, LAION_BLOG,
        samples_per_second_per_gpu=30, published="30 samples/s/GPU, 96/GPU, 824 A100 40GB",
    ),
    PublishedRun(
        "LAION ViT-H/14 bf16", "ViT-H-14", "A100-40GB", 824, 96 * 824, "bf16", True, LAION_BLOG,
        samples_per_second_per_gpu=42, published="42 samples/s/GPU, 96/GPU, 824 A100 40GB",
    ),
    PublishedRun(
        "LAION ViT-g/14 fp16", "ViT-g-14", "A100-40GB", 800, 40 * 800, "fp16", True, LAION_BLOG,
        samples_per_second_per_gpu=20, published="20 samples/s/GPU, 40/GPU, 800 A100 40GB",
    ),
    PublishedRun(
        "LAION ViT-g/14 bf16", "ViT-g-14", "A100-40GB", 800, 80 * 800, "bf16", True, LAION_BLOG,
        samples_per_second_per_gpu=31, published="31 samples/s/GPU, 80/GPU, 800 A100 40GB",
    ),
)


@dataclass(frozen=True)
class CalibrationRow:
    run: PublishedRun
    plan: TrainingPlan  # at DEFAULT_MFU (or the mfu asked for), checkpointing as published
    implied_utilisation: float  # the --mfu that reproduces the published figure (executed FLOPs)
    implied_mfu: float  # model FLOPs / (GPU time x peak): the run's MFU proper
    predicted_over_published: float  # plan time / published time (>1: plan is slower)

    @property
    def published_batch_fits(self) -> bool:
        return self.plan.max_batch_per_gpu >= self.plan.local_batch


def calibrate(run: PublishedRun, mfu: float = DEFAULT_MFU) -> CalibrationRow:
    plan = plan_training(
        run.model, run.pairs, run.epochs, run.gpu, run.gpus, run.global_batch, precision=run.precision,
        mfu=mfu, grad_checkpointing=run.grad_checkpointing, accum_steps=1,
    )
    peak = get_gpu(run.gpu).peak(run.precision)
    if run.gpu_hours is not None:
        published_seconds_per_sample = run.gpu_hours * 3600 / plan.samples
    elif run.samples_per_second_per_gpu is not None:
        published_seconds_per_sample = 1 / run.samples_per_second_per_gpu
    else:
        raise InvalidInputError(f"{run.label}: neither GPU-hours nor throughput given")
    predicted_seconds_per_sample = 1 / plan.samples_per_second_per_gpu
    return CalibrationRow(
        run, plan,
        implied_utilisation=plan.executed_flops_per_sample / (published_seconds_per_sample * peak),
        implied_mfu=plan.train_flops_per_sample / (published_seconds_per_sample * peak),
        predicted_over_published=predicted_seconds_per_sample / published_seconds_per_sample,
    )


def calibration_rows(mfu: float = DEFAULT_MFU) -> list[CalibrationRow]:
    return [calibrate(run, mfu) for run in PUBLISHED_RUNS]


def _published_and_predicted(row: CalibrationRow) -> tuple[str, str]:
    run, plan = row.run, row.plan
    if run.gpu_hours is not None:
        days = run.gpu_hours / 24 / run.gpus
        return f"{run.gpu_hours:,.0f} GPU-h ({days:.1f} d)", f"{plan.gpu_hours:,.0f} GPU-h ({plan.wall_days:.1f} d)"
    return f"{run.samples_per_second_per_gpu:g} /s/GPU", f"{plan.samples_per_second_per_gpu:.1f} /s/GPU"


def calibration_markdown(mfu: float = DEFAULT_MFU) -> str:
    """The comparison table of docs/plan.md, as this code computes it."""
    lines = [
        f"| run | hardware | batch (per GPU) | ckpt | published | plan at --mfu {mfu:g} | plan / published "
        "| implied --mfu | implied MFU | max batch/GPU (plan) |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for row in calibration_rows(mfu):
        run, plan = row.run, row.plan
        published, predicted = _published_and_predicted(row)
        lines.append(
            f"| {run.label} | {run.gpus} x {run.gpu} {run.precision} | {plan.global_batch:,} ({plan.local_batch}) "
            f"| {'yes' if run.grad_checkpointing else 'no'} | {published} | {predicted} "
            f"| {row.predicted_over_published:.2f} | {row.implied_utilisation:.3f} | {row.implied_mfu:.3f} "
            f"| {plan.max_batch_per_gpu} |"
        )
    return "\n".join(lines)
