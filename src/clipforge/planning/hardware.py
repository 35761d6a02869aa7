"""Accelerators as plain data: peak dense FLOP/s per precision and memory, from vendor datasheets.

Every figure is the vendor's *dense* peak (no 2:4 sparsity; where a datasheet prints the sparse
figure, with a footnote, the value here is half of it). "fp32" is plain FP32 (no TF32: PyTorch
runs fp32 matmuls without TF32 by default). For GeForce cards "bf16"/"fp16" is the tensor-core rate
with FP32 accumulation, which is what autocast training uses (half the FP16-accumulate figure).
Memory is the marketed capacity; for HBM parts that number is in GiB, and it is stored in bytes.

`measure_cpu()` stands in for a datasheet on this machine: a few seconds of matmuls.
"""

from __future__ import annotations

import difflib
import os
import time
from dataclasses import dataclass, field
from typing import Optional

from clipforge.errors import ClipforgeError

GiB = 2**30
TERA = 1e12

PRECISIONS = ("bf16", "fp16", "fp32")


class UnknownGpuError(ClipforgeError, ValueError):
    """An accelerator name not in the table; the message names the close matches."""


class PlanInputError(ClipforgeError, ValueError):
    """An input `clipforge plan` cannot work with (a count it cannot read, a precision a GPU lacks, ...)."""


@dataclass(frozen=True)
class GpuSpec:
    name: str
    description: str
    memory_bytes: float
    peak_flops: dict[str, Optional[float]] = field(default_factory=dict)  # precision -> FLOP/s (None: unsupported)
    source: str = ""

    def peak(self, precision: str) -> float:
        value = self.peak_flops.get(precision)
        if value is None:
            supported = [p for p in PRECISIONS if self.peak_flops.get(p)]
            raise PlanInputError(
                f"{self.name} has no {precision} tensor cores in its datasheet; use --precision {' or '.join(supported)}"
            )
        return value

    def default_precision(self) -> str:
        """bf16 where the hardware has it, else fp16, else fp32."""
        return next(p for p in PRECISIONS if self.peak_flops.get(p))


def _gpu(name: str, description: str, memory_gib: float, bf16: Optional[float], fp16: Optional[float],
         fp32: float, source: str) -> GpuSpec:
    peaks = {"bf16": bf16 * TERA if bf16 else None, "fp16": fp16 * TERA if fp16 else None, "fp32": fp32 * TERA}
    return GpuSpec(name, description, memory_gib * GiB, peaks, source)


# name -> spec. TFLOP/s are dense; the comment names the datasheet figure they come from.
GPUS: dict[str, GpuSpec] = {g.name: g for g in [
    # V100 datasheet (SXM2): 125 TFLOPS "deep learning" (FP16 tensor), 15.7 FP32; no bf16.
    _gpu("V100-32GB", "NVIDIA V100 SXM2 32 GB", 32, None, 125, 15.7, "NVIDIA V100 datasheet (SXM2)"),
    _gpu("V100-16GB", "NVIDIA V100 SXM2 16 GB", 16, None, 125, 15.7, "NVIDIA V100 datasheet (SXM2)"),
    # T4 datasheet: 65 TFLOPS mixed precision (FP16/FP32), 8.1 FP32; no bf16.
    _gpu("T4", "NVIDIA T4 16 GB", 16, None, 65, 8.1, "NVIDIA T4 datasheet"),
    # A100 datasheet: BF16/FP16 tensor 312 (624 with sparsity), FP32 19.5.
    _gpu("A100-40GB", "NVIDIA A100 SXM4 40 GB", 40, 312, 312, 19.5, "NVIDIA A100 datasheet"),
    _gpu("A100-80GB", "NVIDIA A100 SXM4 80 GB", 80, 312, 312, 19.5, "NVIDIA A100 datasheet"),
    # A10 datasheet: BF16/FP16 tensor 125 (250 with sparsity), FP32 31.2.
    _gpu("A10", "NVIDIA A10 24 GB", 24, 125, 125, 31.2, "NVIDIA A10 datasheet"),
    # H100 datasheet: SXM BF16/FP16 1,979* (*with sparsity) -> 989.5 dense, FP32 67;
    # PCIe 1,513* -> 756.5 dense, FP32 51.
    _gpu("H100-SXM", "NVIDIA H100 SXM5 80 GB", 80, 989.5, 989.5, 67, "NVIDIA H100 datasheet"),
    _gpu("H100-PCIe", "NVIDIA H100 PCIe 80 GB", 80, 756.5, 756.5, 51, "NVIDIA H100 datasheet"),
    # H200 datasheet (SXM): same compute as H100 SXM (1,979* -> 989.5 dense, FP32 67), 141 GB HBM3e.
    _gpu("H200", "NVIDIA H200 SXM 141 GB", 141, 989.5, 989.5, 67, "NVIDIA H200 datasheet"),
    # HGX B200 spec page, per GPU: FP16/BF16 tensor 4.5 PFLOPS (with sparsity) -> 2,250 dense, FP32 75,
    # 180 GB HBM3e.
    _gpu("B200", "NVIDIA B200 (HGX) 180 GB", 180, 2250, 2250, 75, "NVIDIA HGX B200 specifications"),
    # L40S datasheet: BF16/FP16 tensor 362.05 (733* with sparsity), FP32 91.6, 48 GB GDDR6.
    _gpu("L40S", "NVIDIA L40S 48 GB", 48, 362.05, 362.05, 91.6, "NVIDIA L40S datasheet"),
    # GA102 (Ampere GeForce) whitepaper, RTX 3090: FP16/BF16 tensor with FP32 accumulate 71 (142 with
    # sparsity; 142 dense with FP16 accumulate), FP32 35.6.
    _gpu("RTX-3090", "NVIDIA GeForce RTX 3090 24 GB", 24, 71, 71, 35.6, "NVIDIA Ampere GA102 whitepaper"),
    # Ada whitepaper, RTX 4090: FP16/BF16 tensor with FP32 accumulate 165.2 (330.3 with FP16 accumulate),
    # FP32 82.6.
    _gpu("RTX-4090", "NVIDIA GeForce RTX 4090 24 GB", 24, 165.2, 165.2, 82.6, "NVIDIA Ada Lovelace whitepaper"),
    # AMD Instinct MI300X datasheet: FP16/BF16 matrix 1,307.4 dense (2,614.9 with sparsity), FP32 matrix 163.4.
    _gpu("MI300X", "AMD Instinct MI300X 192 GB", 192, 1307.4, 1307.4, 163.4, "AMD Instinct MI300X datasheet"),
]}

# Short names people type; each resolves to one table entry (shown in the plan's output).
ALIASES: dict[str, str] = {
    "V100": "V100-32GB",
    "A100": "A100-80GB",
    "H100": "H100-SXM",
    "H200-SXM": "H200",
    "RTX3090": "RTX-3090",
    "3090": "RTX-3090",
    "RTX4090": "RTX-4090",
    "4090": "RTX-4090",
}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def list_gpus() -> list[str]:
    return list(GPUS)


def get_gpu(name: str) -> GpuSpec:
    """The table entry for a name (case, spaces and dashes ignored; aliases such as "A100" accepted)."""
    wanted = _key(name)
    names = {_key(n): n for n in GPUS}
    names.update({_key(a): target for a, target in ALIASES.items()})
    if wanted in names:
        return GPUS[names[wanted]]
    known = list(GPUS) + list(ALIASES) + ["cpu"]
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.4)
    if not close:  # try again ignoring case and punctuation
        by_key = {_key(k): k for k in known}
        close = [by_key[k] for k in difflib.get_close_matches(wanted, list(by_key), n=4, cutoff=0.4)]
    hint = f"did you mean: {', '.join(close)}?" if close else f"known: {', '.join(list(GPUS) + ['cpu'])}"
    raise UnknownGpuError(f"unknown GPU {name!r}; {hint}")


def gpu_table_markdown() -> str:
    """The table in docs/plan.md: dense peaks in TFLOP/s and memory, as this module holds them."""
    lines = ["| name | accelerator | bf16 | fp16 | fp32 | memory | source |", "|---|---|---:|---:|---:|---:|---|"]
    for spec in GPUS.values():
        peaks = [f"{spec.peak_flops[p] / TERA:g}" if spec.peak_flops.get(p) else "-" for p in PRECISIONS]
        aliases = [a for a, target in ALIASES.items() if target == spec.name]
        name = spec.name + (f" ({', '.join(aliases)})" if aliases else "")
        lines.append(f"| {name} | {spec.description} | {' | '.join(peaks)} | {spec.memory_bytes / GiB:g} GiB "
                     f"| {spec.source} |")
    return "\n".join(lines)


# ---- this machine ----------------------------------------------------------------------------------


def _available_memory_bytes() -> float:
    """MemAvailable from /proc/meminfo where there is one, else the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def measure_matmul_flops(precision: str = "fp32", size: int = 1024, seconds: float = 1.5) -> float:
    """Best achieved FLOP/s of a [size x size] @ [size x size] matmul on the CPU over ~`seconds`.

    The CPU's analogue of a datasheet peak: the rate its BLAS reaches on a large, square matmul
    with the threads torch uses. Training reaches a fraction of it (the MFU), like on a GPU.
    """
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    flops_per_matmul = 2.0 * size**3
    torch.mm(a, b)  # warm-up (thread pool, packing buffers)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        repeats = 0
        while repeats < 3 or time.perf_counter() - start < 0.1:
            torch.mm(a, b)
            repeats += 1
        elapsed = time.perf_counter() - start
        best = max(best, repeats * flops_per_matmul / elapsed)
        if time.perf_counter() > deadline:
            return best


def measure_cpu(precision: str = "fp32", seconds: float = 1.5) -> GpuSpec:
    """This machine as a `GpuSpec`: measured matmul FLOP/s at `precision`, available RAM as memory."""
    import torch

    flops = measure_matmul_flops(precision, seconds=seconds)
    threads = torch.get_num_threads()
    return GpuSpec(
        name="cpu",
        description=f"this CPU, {threads} thread{'s' if threads != 1 else ''}, {flops / TERA * 1000:.0f} GFLOP/s "
                    f"measured ({precision} matmul)",
        memory_bytes=_available_memory_bytes(),
        peak_flops={precision: flops},
        source="measured here: best rate of 1024x1024 matmuls over a few seconds",
    )
