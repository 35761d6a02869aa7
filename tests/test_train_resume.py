"""Exact resume: a run SIGKILLed after its first checkpoint, then resumed, ends with bit-identical
weights (and per-step losses) to a run that was never interrupted (CPU, fp32)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import train_config_dict

from clipforge.train.synthetic import write_shapes_dataset

pytestmark = pytest.mark.slow  # training runs (make test-fast leaves them out)

# Calls train(); SLOW seconds of sleep after each step give the test time to kill it mid-run.
RUNNER = """
import json, os, sys, time
from clipforge.train import TrainConfig, train

slow = float(os.environ.get("SLOW", "0"))
train(TrainConfig.from_dict(json.load(open(sys.argv[1]))), callbacks=[lambda record: time.sleep(slow)])
"""


def _start(config_path: Path, slow: float) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", SLOW=str(slow))
    return subprocess.Popen([sys.executable, "-c", RUNNER, str(config_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> None:
    out = proc.communicate(timeout=180)[0]
    assert proc.returncode == 0, out[-3000:]


def _losses(out_dir: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["type"] == "train"]


@pytest.mark.parametrize("source,workers", [("csv", 0), ("csv", 2), ("webdataset", 2)])
def test_sigkill_then_resume_is_bit_identical(tmp_path, source, workers):
    if source == "csv":
        data = write_shapes_dataset(tmp_path / "data", 94)
        with open(data, "a") as f:  # two bad rows: the skipped count must survive the resume too
            f.write("images/missing.png,a ghost\nimages/000001.png,\n")
        data_cfg = {"train": str(data)}
    else:
        data = write_shapes_dataset(tmp_path / "data", 96, format="webdataset", samples_per_shard=32)
        data_cfg = {"train": str(data), "shuffle_buffer": 16}
    config = {
        **data_cfg, "batch_size": 8, "epochs": 2, "lr": 1e-3, "warmup_steps": 3,
        # save_every_steps is odd so that the resumed WebDataset stream must continue at worker 1
        "workers": workers, "save_every_steps": 3, "keep_checkpoints": 2, "progress": False, "plot": False,
        "seed": 11, "weight_decay": 0.1, "grad_clip_norm": 1.0,
    }
    paths = {}
    for name in ("reference", "interrupted"):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(train_config_dict(**config, out_dir=str(tmp_path / name))))

    reference = _start(paths["reference"], slow=0.0)
    victim = _start(paths["interrupted"], slow=0.1)
    checkpoints = tmp_path / "interrupted" / "checkpoints"
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("step_*.pt")):
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "interrupted" / "final.safetensors").exists(), "the run finished before the kill"
    killed_at = max(int(p.stem.split("_")[1]) for p in checkpoints.glob("step_*.pt"))

    resumed = _start(paths["interrupted"], slow=0.0)
    _finish(resumed)
    _finish(reference)

    expected = load_file(tmp_path / "reference" / "final.safetensors")
    got = load_file(tmp_path / "interrupted" / "final.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    # The metrics log of the resumed run is the reference's: same steps, same losses, no duplicates.
    assert _losses(tmp_path / "interrupted") == _losses(tmp_path / "reference")
    steps = [s for s, _ in _losses(tmp_path / "reference")]
    assert steps == list(range(1, 25)) and 0 < killed_at < 24
    last = json.loads((tmp_path / "interrupted" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["skipped"] == (4 if source == "csv" else 0)  # 2 bad rows x 2 epochs
