"""Sizing a CLIP training run before buying the hardware: FLOPs, time, memory, storage.

`plan_training(model, pairs, epochs, gpu, gpus, global_batch)` returns a `TrainingPlan`; the
`clipforge plan` command prints it. The FLOP and memory counts come from the architecture config
(flops.py, memory.py); GPU peaks from datasheets (hardware.py); the one assumption, the
utilisation, is calibrated against published runs (calibration.py, docs/plan.md).

This package imports no torch at module level (only `--gpu cpu` measures, with torch).
"""

from clipforge.planning.flops import SampleFlops, sample_flops
from clipforge.planning.hardware import (
    GPUS,
    GpuSpec,
    PlanInputError,
    UnknownGpuError,
    get_gpu,
    list_gpus,
    measure_cpu,
)
from clipforge.planning.memory import MemoryEstimate, estimate_memory, param_count
from clipforge.planning.plan import (
    DEFAULT_CPU_MFU,
    DEFAULT_GLOBAL_BATCH,
    DEFAULT_MFU,
    TrainingPlan,
    format_plan,
    parse_count,
    plan_training,
)

__all__ = [
    "DEFAULT_CPU_MFU",
    "DEFAULT_GLOBAL_BATCH",
    "DEFAULT_MFU",
    "GPUS",
    "GpuSpec",
    "MemoryEstimate",
    "PlanInputError",
    "SampleFlops",
    "TrainingPlan",
    "UnknownGpuError",
    "estimate_memory",
    "format_plan",
    "get_gpu",
    "list_gpus",
    "measure_cpu",
    "param_count",
    "parse_count",
    "plan_training",
    "sample_flops",
]
