"""The batch equivalences training promises, to fp32 rounding (1e-5):

* N processes x batch B == 1 process x batch N*B (torchrun, 2 gloo processes on the CPU);
* k accumulated micro-batches of B == one batch of k*B (also with gradient checkpointing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import train_config
from train_ddp_worker import VARIANTS, global_batch

from clipforge.train.distributed import DistInfo
from clipforge.train.loop import build_model
from clipforge.train.loss import build_loss
from clipforge.train.step import TrainModule, forward_backward
from clipforge.train.synthetic import write_shapes_dataset

pytestmark = pytest.mark.slow  # training runs (make test-fast leaves them out)

WORKER = Path(__file__).parent / "train_ddp_worker.py"
TOL = 1e-5


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only: no network needed
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    return env


def _read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None
                    and shutil.which("torchrun") is None, reason="torchrun not found")
def test_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    data = write_shapes_dataset(tmp_path / "data", 48)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    one = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path / "one"), str(data)], env=_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(WORKER), str(tmp_path / "two"), str(data)],
                         env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
    out_one = one.communicate(timeout=240)[0]
    assert one.returncode == 0, out_one[-3000:]
    assert two.returncode == 0, two.stdout[-3000:]

    a = torch.load(tmp_path / "one" / "grads.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "grads.pt", weights_only=True)
    assert sorted(a) == sorted(b) == sorted(v[0] for v in VARIANTS)
    for name in a:
        assert abs(a[name]["loss"] - b[name]["loss"]) <= TOL, name
        assert a[name]["grads"].keys() == b[name]["grads"].keys()
        for param, grad in a[name]["grads"].items():
            # every parameter gets a gradient, the temperature (and SigLIP's bias) included
            assert grad.abs().sum() > 0, (name, param)
            torch.testing.assert_close(b[name]["grads"][param], grad, rtol=0, atol=TOL, msg=f"{name}: {param}")

    # A real train() run: 2 x 4 pairs per step vs 1 x 8. Per-step losses agree to fp32 rounding; the
    # weights after 4 AdamW steps agree to 1e-4 (Adam divides by sqrt(v), which amplifies rounding).
    m1, m2 = _read_metrics(tmp_path / "one/train/metrics.jsonl"), _read_metrics(tmp_path / "two/train/metrics.jsonl")
    assert [r["step"] for r in m1] == [r["step"] for r in m2] == [1, 2, 3, 4]
    for r1, r2 in zip(m1, m2):
        assert abs(r1["loss"] - r2["loss"]) <= TOL
        assert r1["lr"] == r2["lr"]
    from safetensors.torch import load_file

    w1, w2 = load_file(tmp_path / "one/train/final.safetensors"), load_file(tmp_path / "two/train/final.safetensors")
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=0, atol=1e-4, msg=key)


def _grads(loss_kind: str, micro: int, rows: int = 8, checkpointing: bool = False) -> tuple[float, dict]:
    config = train_config(train="unused.csv", loss=loss_kind)
    torch.manual_seed(0)
    model, _, _ = build_model(config)
    model.set_grad_checkpointing(checkpointing)
    model.train()
    loss_fn = build_loss(loss_kind, local_loss=True, dist=DistInfo())
    module = TrainModule(model, loss_fn)
    images, texts = global_batch(rows)
    loss = forward_backward(module, loss_fn, list(zip(images.chunk(micro), texts.chunk(micro))))
    return float(loss), {n: p.grad.clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("loss_kind", ["clip", "siglip"])
def test_accumulation_equals_one_big_batch(loss_kind):
    loss_1, grads_1 = _grads(loss_kind, 1)
    for k in (2, 4):
        loss_k, grads_k = _grads(loss_kind, k)
        assert abs(loss_k - loss_1) <= TOL
        for name, grad in grads_1.items():
            torch.testing.assert_close(grads_k[name], grad, rtol=0, atol=TOL, msg=f"k={k}: {name}")
    # The temperature's gradient is taken once, not k times (open_clip's accum_freq adds it k times).
    assert grads_1["model.logit_scale"].abs() > 1e-3


def test_gradient_checkpointing_gives_the_same_gradients():
    _, plain = _grads("clip", 2)
    _, checkpointed = _grads("clip", 2, checkpointing=True)
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=0, atol=TOL, msg=name)
