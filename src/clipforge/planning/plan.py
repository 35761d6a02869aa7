"""`plan_training`: size a CLIP training run (compute, time, memory, storage) before buying hardware.

Everything is derived from the architecture (`flops.py`, `memory.py`), a GPU's datasheet peak
(`hardware.py`) and one assumption, the utilisation the run reaches (`DEFAULT_MFU`, calibrated
against published runs in `calibration.py` and docs/plan.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional, Union

from clipforge.configs import ClipConfig, ResNetConfig
from clipforge.planning.flops import sample_flops
from clipforge.planning.hardware import (
    PRECISIONS,
    GpuSpec,
    PlanInputError,
    get_gpu,
    measure_cpu,
)
from clipforge.planning.memory import (
    GB,
    MemoryEstimate,
    estimate_memory,
    loss_bytes,
    max_micro_batch,
    param_count,
)

# The fraction of the GPUs' peak the run sustains on the FLOPs it executes (model FLOPs plus the
# recomputation of gradient checkpointing and accumulation): the MFU when nothing is recomputed.
# Calibrated in docs/plan.md: the large-model runs published by OpenAI and LAION (ViT-L/14 to
# ViT-g/14 on V100 and A100) sustained 0.16-0.28 of peak on their executed FLOPs; 0.25 is near the
# top of that range. Small models (ViT-B/32) sit far lower: their runs are bound by data loading.
DEFAULT_MFU = 0.2
# On a CPU the peak is a measured matmul rate (hardware.measure_cpu), not a datasheet figure, and a
# training step reaches a larger share of it: 0.25-0.62 (median 0.41) in ten runs of
# tools/plan_cpu_check.py on a busy 2-core machine (docs/plan.md).
DEFAULT_CPU_MFU = 0.4
DEFAULT_GLOBAL_BATCH = 32768  # the CLIP paper's
SMALL_MODEL_TRAIN_FLOPS = 150e9  # per pair: about ViT-B/16 (123 GFLOPs); below it the calibration is poor
MEMORY_HEADROOM = 0.10  # of GPU memory left for the CUDA context, workspaces and fragmentation
TAR_BLOCK = 512  # a tar member is a 512-byte header plus its data padded to whole 512-byte blocks
TAR_RECORD = 20 * TAR_BLOCK  # an archive ends with two zero blocks, padded to a 10 kB record


def parse_count(text: Union[str, int, float]) -> int:
    """'400M' -> 400_000_000; also '2B', '1.5e9', '400000000', '32k', '12.8B'."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = text.strip().replace("_", "").replace(",", "")
        scale = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}.get(s[-1:].lower(), 1.0)
        try:
            value = float(s[:-1] if scale != 1.0 else s) * scale
        except ValueError:
            raise PlanInputError(f"cannot read {text!r} as a count; write e.g. 400M, 2B, 1.5e9 or 400000000") from None
    if not (0 < value < float("inf")):
        raise PlanInputError(f"a count must be a positive number, got {text!r}")
    return int(round(value))


def resolve_model(model: Union[str, ClipConfig]) -> tuple[str, ClipConfig]:
    if isinstance(model, ClipConfig):
        return "custom", model
    from clipforge.model_zoo import UnknownModelError, get_architecture

    try:
        config = get_architecture(model)
    except UnknownModelError as err:
        raise PlanInputError(str(err)) from None
    if not isinstance(config, ClipConfig):
        # The FLOP and memory formulas are CLIP's ViT / ResNet towers'; other families' would be wrong or fail.
        raise PlanInputError(f"{model} is a {config.family} model: plan estimates CLIP architectures only")
    return model, config


@dataclass(frozen=True)
class TrainingPlan:
    # ---- inputs, as resolved ----
    model: str
    gpu: str
    gpu_description: str
    gpus: int
    precision: str
    pairs: int
    epochs: float
    samples: int  # pairs x epochs: samples seen
    global_batch: int
    local_batch: int  # per GPU per optimizer step
    micro_batch: int  # per GPU per forward (local_batch / accum_steps)
    accum_steps: int
    grad_checkpointing: bool
    text_tokens: int
    local_loss: bool
    mfu: float
    # ---- compute ----
    params: int
    forward_flops_per_sample: float
    train_flops_per_sample: float
    executed_flops_per_sample: float  # + recomputation (checkpointing, accumulation)
    train_flops: float  # model FLOPs of the run: 3 x forward (+ the loss)
    executed_flops: float
    peak_flops_per_gpu: float
    effective_mfu: float  # train_flops / (GPU time x peak)
    samples_per_second_per_gpu: float
    gpu_hours: float
    wall_days: float
    cost: Optional[float]
    # ---- memory ----
    gpu_memory_gb: float
    usable_memory_gb: float
    memory: MemoryEstimate  # at the chosen micro batch and checkpointing
    memory_no_checkpointing: MemoryEstimate  # at the local batch, one micro-batch
    memory_checkpointing: MemoryEstimate
    max_batch_per_gpu: int  # largest micro batch that fits, with the chosen checkpointing
    max_batch_no_checkpointing: int
    max_batch_checkpointing: int
    fits: bool
    gather_with_grad: bool
    local_loss_needed: bool
    loss_memory_local_gb: float
    loss_memory_full_gb: float
    # ---- storage ----
    image_bytes: int
    caption_bytes: int
    dataset_storage_tb: float
    webdataset_shards: int
    samples_per_shard: int
    checkpoint_gb: float  # a resumable training checkpoint: fp32 weights + AdamW state
    weights_fp16_gb: float
    notes: tuple[str, ...] = ()

    @property
    def memory_per_gpu_gb(self) -> float:
        return self.memory.total / GB

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; the issue's keys first."""
        out: dict[str, Any] = {
            "train_flops": self.train_flops,
            "gpu_hours": self.gpu_hours,
            "wall_days": self.wall_days,
            "memory_per_gpu_gb": self.memory_per_gpu_gb,
            "max_batch_per_gpu": self.max_batch_per_gpu,
            "dataset_storage_tb": self.dataset_storage_tb,
            "checkpoint_gb": self.checkpoint_gb,
        }
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, MemoryEstimate):
                value = value.to_dict() | {"peak_phase": value.peak_phase}
            elif isinstance(value, tuple):
                value = list(value)
            out.setdefault(f.name, value)
        return out


def webdataset_bytes(pairs: int, image_bytes: float, caption_bytes: float, samples_per_shard: int = 10000) -> float:
    """Bytes of `pairs` samples stored as WebDataset tar shards, one image and one caption member each.

    Each member costs a 512-byte header plus its data rounded up to 512 bytes: half a block of
    padding on average for an image, and a caption under 512 bytes fills one block. Each shard
    ends with two zero blocks and is padded to a 10 kB record (about half a record on average).
    img2dataset also writes a .json of metadata per sample: count about 1.5 kB more per pair for it.
    """
    image = TAR_BLOCK + image_bytes + TAR_BLOCK / 2
    caption = TAR_BLOCK + TAR_BLOCK * math.ceil(caption_bytes / TAR_BLOCK)
    shards = math.ceil(pairs / samples_per_shard)
    return pairs * (image + caption) + shards * (2 * TAR_BLOCK + TAR_RECORD / 2)


def plan_training(
    model: Union[str, ClipConfig],
    pairs: Union[int, str],
    epochs: float = 32,
    gpu: Union[str, GpuSpec] = "A100-80GB",
    gpus: int = 1,
    global_batch: Union[int, str] = DEFAULT_GLOBAL_BATCH,
    *,
    precision: Optional[str] = None,
    mfu: Optional[float] = None,
    grad_checkpointing: Optional[bool] = None,
    accum_steps: Optional[int] = None,
    text_tokens: Optional[int] = None,
    local_loss: bool = True,
    image_bytes: int = 30000,
    caption_bytes: int = 100,
    samples_per_shard: int = 10000,
    price_per_gpu_hour: Optional[float] = None,
    memory_headroom: float = MEMORY_HEADROOM,
) -> TrainingPlan:
    """Size a training run of `model` on `pairs` image-text pairs for `epochs` epochs.

    gpu: a name from `hardware.GPUS` (or an alias such as "A100"), a `GpuSpec`, or "cpu" to measure
    this machine. mfu: DEFAULT_MFU (DEFAULT_CPU_MFU on the CPU). precision: bf16 where the GPU has
    it, else fp16 (fp32 on the CPU). grad_checkpointing / accum_steps None: decided from memory
    (checkpointing only if the per-GPU batch does not fit without it; accumulation only if it does
    not fit with it either).
    """
    name, config = resolve_model(model)
    pairs, global_batch = parse_count(pairs), parse_count(global_batch)
    if epochs <= 0:
        raise PlanInputError(f"epochs must be positive, got {epochs}")
    if gpus < 1:
        raise PlanInputError(f"gpus must be at least 1, got {gpus}")
    on_cpu = (gpu.name if isinstance(gpu, GpuSpec) else gpu.strip().lower()) == "cpu"
    mfu = mfu if mfu is not None else (DEFAULT_CPU_MFU if on_cpu else DEFAULT_MFU)
    if not 0 < mfu <= 1:
        raise PlanInputError(f"mfu is a fraction of peak in (0, 1], got {mfu}")
    if precision is not None and precision not in PRECISIONS:
        raise PlanInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if on_cpu and isinstance(gpu, str):
        gpu = measure_cpu(precision or "fp32")
    spec = gpu if isinstance(gpu, GpuSpec) else get_gpu(gpu)
    precision = precision or spec.default_precision()
    peak = spec.peak(precision)
    tokens = config.text.context_length if text_tokens is None else text_tokens
    if not 1 <= tokens <= config.text.context_length:
        raise PlanInputError(f"text tokens must be in 1..{config.text.context_length}, got {tokens}")

    notes: list[str] = []
    local_batch = math.ceil(global_batch / gpus)
    if local_batch * gpus != global_batch:
        notes.append(f"{global_batch} pairs do not split evenly over {gpus} GPUs: {local_batch} per GPU, "
                     f"global batch {local_batch * gpus}")
        global_batch = local_batch * gpus
    params = param_count(config)
    usable = spec.memory_bytes * (1 - memory_headroom)

    def memory(micro: int, checkpointing: bool, local: Optional[int] = None, total: int = global_batch
               ) -> MemoryEstimate:
        return estimate_memory(
            config, micro, precision=precision, grad_checkpointing=checkpointing, gpus=gpus,
            global_batch=total, local_batch=local or micro, local_loss=local_loss, text_tokens=tokens, params=params,
        )

    def max_batch(checkpointing: bool) -> int:  # per GPU, on these GPUs (the global batch grows with it)
        return max_micro_batch(lambda b: memory(b, checkpointing, total=b * gpus).total <= usable)

    max_no, max_ck = max_batch(False), max_batch(True)
    if grad_checkpointing is None:  # only when the (micro-)batch does not fit without it
        grad_checkpointing = math.ceil(local_batch / (accum_steps or 1)) > max_no
    max_chosen = max_ck if grad_checkpointing else max_no
    if accum_steps is None:
        accum_steps = 1 if local_batch <= max_chosen or max_chosen == 0 else math.ceil(local_batch / max_chosen)
    if accum_steps < 1:
        raise PlanInputError(f"accum_steps must be at least 1, got {accum_steps}")
    micro = math.ceil(local_batch / accum_steps)
    chosen = memory(micro, grad_checkpointing, local_batch)
    fits = chosen.total <= usable
    if not fits:
        states = (chosen.weights + chosen.optimizer + chosen.ddp_buckets) / GB
        notes.append(f"does not fit: {chosen.total / GB:.1f} GB needed, {usable / GB:.1f} GB usable"
                     + (f" (weights and optimizer state alone: {states:.1f} GB; sharding them (FSDP/ZeRO) "
                        "is not something clipforge's trainer does)" if max_chosen == 0 else ""))
    if grad_checkpointing and isinstance(config.vision, ResNetConfig):
        notes.append("clipforge checkpoints transformer blocks only: the ResNet image tower keeps all its activations")
    if accum_steps > 1:
        notes.append(f"{accum_steps} micro-batches of {micro} per GPU per step (contrastive accumulation: "
                     "features of the whole local batch first, then one more forward with gradients)")

    flops = sample_flops(config, global_batch, gpus, text_tokens=tokens, local_loss=local_loss)
    executed = flops.train
    if grad_checkpointing:
        executed += flops.recompute
    if accum_steps > 1:
        executed += flops.image_forward + flops.text_forward
    if flops.train < SMALL_MODEL_TRAIN_FLOPS and not on_cpu:
        notes.append("a small model: the published ViT-B/32 and B/16 runs reached only 0.04-0.13 of peak, bound by "
                     "data loading rather than FLOPs (docs/plan.md); expect a longer run than --mfu suggests")
    samples = int(round(pairs * epochs))
    gpu_seconds = samples * executed / (peak * mfu)
    gpu_hours = gpu_seconds / 3600

    gathered = gpus > 1
    full_loss = loss_bytes(local_batch, global_batch, gpus, config.embed_dim, local_loss=False)
    local_loss_bytes = loss_bytes(local_batch, global_batch, gpus, config.embed_dim, local_loss=True)
    # Needed: with every GPU holding the whole [global, global] logit matrix the plan would not fit.
    with_full_logits = estimate_memory(
        config, micro, precision=precision, grad_checkpointing=grad_checkpointing, gpus=gpus,
        global_batch=global_batch, local_batch=local_batch, local_loss=False, text_tokens=tokens, params=params,
    )
    local_loss_needed = gathered and with_full_logits.total > usable
    if gathered and not local_loss:
        notes.append("without the local loss every GPU computes the whole global-batch logit matrix")

    buffers = params.buffers
    return TrainingPlan(
        model=name, gpu=spec.name, gpu_description=spec.description, gpus=gpus, precision=precision,
        pairs=pairs, epochs=epochs, samples=samples, global_batch=global_batch, local_batch=local_batch,
        micro_batch=micro, accum_steps=accum_steps, grad_checkpointing=grad_checkpointing, text_tokens=tokens,
        local_loss=local_loss, mfu=mfu,
        params=params.total,
        forward_flops_per_sample=flops.forward, train_flops_per_sample=flops.train,
        executed_flops_per_sample=executed, train_flops=samples * flops.train, executed_flops=samples * executed,
        peak_flops_per_gpu=peak, effective_mfu=mfu * flops.train / executed,
        samples_per_second_per_gpu=peak * mfu / executed, gpu_hours=gpu_hours,
        wall_days=gpu_seconds / gpus / 86400,
        cost=gpu_hours * price_per_gpu_hour if price_per_gpu_hour is not None else None,
        gpu_memory_gb=spec.memory_bytes / GB, usable_memory_gb=usable / GB,
        memory=chosen, memory_no_checkpointing=memory(local_batch, False), memory_checkpointing=memory(local_batch, True),
        max_batch_per_gpu=max_chosen, max_batch_no_checkpointing=max_no, max_batch_checkpointing=max_ck, fits=fits,
        gather_with_grad=gathered, local_loss_needed=local_loss_needed,
        loss_memory_local_gb=local_loss_bytes / GB, loss_memory_full_gb=full_loss / GB,
        image_bytes=image_bytes, caption_bytes=caption_bytes,
        dataset_storage_tb=webdataset_bytes(pairs, image_bytes, caption_bytes, samples_per_shard) / 1e12,
        webdataset_shards=math.ceil(pairs / samples_per_shard), samples_per_shard=samples_per_shard,
        checkpoint_gb=(12.0 * params.total + 4.0 * buffers) / GB, weights_fp16_gb=2.0 * params.total / GB,
        notes=tuple(notes),
    )


# ---- the human-readable report -----------------------------------------------------------------


def _count(n: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:g}"


def _rate(flops_per_second: float) -> str:
    if flops_per_second >= 1e12:
        return f"{flops_per_second / 1e12:.4g} TFLOP/s"
    return f"{flops_per_second / 1e9:.3g} GFLOP/s"


def _memory_line(m: MemoryEstimate) -> str:
    parts = [("weights", m.weights), ("AdamW state", m.optimizer), ("gradients", m.gradients),
             ("autocast copies", m.autocast_copies), ("DDP buckets", m.ddp_buckets),
             ("activations", m.activations), ("loss", m.loss), ("AdamW temporary", m.optimizer_temp)]
    return " + ".join(f"{name} {value / GB:.1f}" for name, value in parts if value > 0)


def format_plan(plan: TrainingPlan) -> str:
    """The plan as an aligned two-column table for a terminal."""
    p = plan
    ckpt = "with gradient checkpointing" if p.grad_checkpointing else "without gradient checkpointing"
    rows = [
        ("run", f"{_count(p.pairs)} pairs x {p.epochs:g} epoch{'s' if p.epochs != 1 else ''} = {_count(p.samples)} "
                f"samples; global batch "
                f"{p.global_batch:,} = {p.gpus} x {p.local_batch}"
                + (f" ({p.accum_steps} micro-batches of {p.micro_batch})" if p.accum_steps > 1 else "")),
        ("model", f"{p.params / 1e6:.1f}M parameters; {p.forward_flops_per_sample / 1e9:.1f} GFLOPs forward per pair "
                  f"({p.text_tokens} text tokens)"),
        ("compute", f"{p.train_flops:.3g} training FLOPs (forward + backward)"
                    + (f"; {p.executed_flops:.3g} executed with recomputation" if p.executed_flops > p.train_flops else "")),
        ("throughput", f"--mfu {p.mfu:g} of {_rate(p.peak_flops_per_gpu)} peak ({p.precision}): "
                       f"{p.samples_per_second_per_gpu:,.1f} pairs/s per GPU (MFU on model FLOPs {p.effective_mfu:.3f})"),
        ("time", f"{p.gpu_hours:,.0f} GPU-hours = {p.wall_days:,.1f} days on {p.gpus} GPU{'s' if p.gpus > 1 else ''}"),
    ]
    if p.cost is not None:
        rows.append(("cost", f"{p.cost:,.0f} at {p.cost / p.gpu_hours:g} per GPU-hour"))
    rows += [
        ("memory per GPU", f"{p.memory_per_gpu_gb:.1f} GB {ckpt}, micro-batch {p.micro_batch} "
                           f"({'fits' if p.fits else 'DOES NOT FIT'} in {p.usable_memory_gb:.1f} GB usable of "
                           f"{p.gpu_memory_gb:.1f} GB = {p.gpu_memory_gb * 1e9 / 2**30:.0f} GiB; peak: {p.memory.peak_phase})"),
        ("", _memory_line(p.memory)),
        ("", f"at {p.local_batch} per GPU: {p.memory_no_checkpointing.total / GB:.1f} GB without checkpointing, "
             f"{p.memory_checkpointing.total / GB:.1f} GB with"),
        ("largest batch/GPU", f"{p.max_batch_no_checkpointing} without checkpointing, "
                              f"{p.max_batch_checkpointing} with"),
        ("loss", (f"gather features with gradients across the {p.gpus} GPUs: yes; local loss: "
                  + ("needed" if p.local_loss_needed else "not needed for memory")
                  + f" (logits {p.loss_memory_local_gb:.2g} GB per GPU with it, {p.loss_memory_full_gb:.3g} GB without)")
                 if p.gather_with_grad else "one process: the whole batch's logits on one device, no gathering"),
        ("dataset", f"{p.dataset_storage_tb:.3g} TB: {_count(p.pairs)} x ({p.image_bytes:,} B image + "
                    f"{p.caption_bytes} B caption + tar headers); {p.webdataset_shards:,} WebDataset shards of "
                    f"{p.samples_per_shard:,}"),
        ("checkpoint", f"{p.checkpoint_gb:.2f} GB to resume (fp32 weights + AdamW state); "
                       f"{p.weights_fp16_gb:.2f} GB of fp16 weights"),
    ]
    rows += [("note", note) for note in p.notes]
    width = max(len(label) for label, _ in rows)
    title = f"{p.model} on {p.gpus} x {p.gpu} ({p.gpu_description})"
    return "\n".join([title] + [f"  {label:<{width}}  {text}" for label, text in rows])
