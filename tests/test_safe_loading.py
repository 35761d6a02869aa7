"""Reading checkpoints never runs code from the file: payloads are refused, tensors come back exact."""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from clipforge.checkpoint_formats import CheckpointError, read_checkpoint
from clipforge.checkpoint_formats.safe_pickle import open_torch_file


class _SystemPayload:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExecPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"visual.proj": torch.randn(4, 3, generator=g), "logit_scale": torch.tensor(4.6052)}


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code_ran"


@pytest.mark.parametrize("payload_cls", [_SystemPayload, _ExecPayload])
@pytest.mark.parametrize("container", ["plain_pickle", "torch_zip", "torch_legacy", "training_checkpoint"])
def test_code_payload_is_refused_without_running(tmp_path, marker, payload_cls, container):
    payload = payload_cls(marker)
    path = tmp_path / "evil.pt"
    if container == "plain_pickle":
        path.write_bytes(pickle.dumps({"w": payload}))
    elif container == "torch_zip":
        torch.save({**_state(), "evil": payload}, path)
    elif container == "torch_legacy":
        torch.save({**_state(), "evil": payload}, path, _use_new_zipfile_serialization=False)
    else:
        torch.save({"epoch": 1, "state_dict": _state(), "optimizer": {"hook": payload}}, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert not marker.exists()
    message = str(info.value)
    assert ("system" in message) or ("exec" in message)
    assert "refusing to load global" in message and "safetensors" in message  # why, and how to convert


def _zip_with(path: Path, entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


def test_payload_inside_a_torchscript_archive_is_refused(tmp_path, marker):
    path = tmp_path / "evil_script.pt"
    _zip_with(path, {
        "evil_script/data.pkl": pickle.dumps(_SystemPayload(marker), protocol=2),
        "evil_script/code/__torch__/m.py": b"class M(Module):\n  __parameters__ = []\n  __buffers__ = []\n",
        "evil_script/version": b"3\n",
    })
    with pytest.raises(CheckpointError, match="system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_torchscript_class_cannot_be_called_with_arguments(tmp_path):
    # GLOBAL '__torch__.m Evil', ('x',) REDUCE: a class *call* TorchScript never emits.
    data = b"\x80\x02c__torch__.m\nEvil\nX\x01\x00\x00\x00x\x85R."
    path = tmp_path / "call.pt"
    _zip_with(path, {"call/data.pkl": data, "call/code/__torch__/m.py": b""})
    with pytest.raises(CheckpointError, match="constructed by a call"):
        read_checkpoint(path)


def test_torchscript_classes_are_refused_outside_torchscript_archives(tmp_path):
    data = b"\x80\x02c__torch__.m\nEvil\n)\x81}b."  # NEWOBJ + BUILD of a __torch__ class
    path = tmp_path / "plain.pt"
    _zip_with(path, {"plain/data.pkl": data})
    with pytest.raises(CheckpointError, match="__torch__.m.Evil"):
        read_checkpoint(path)


class _FakeStorage:
    pass


def _handmade_archive(path: Path, size: tuple[int, ...], stride: tuple[int, ...], storage_bytes: int, numel: int) -> None:
    """A torch zip archive written by hand, to describe tensors torch.save never would."""
    fake = _FakeStorage()

    class Rebuild:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (fake, 0, size, stride, False, collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if obj is fake else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"t": Rebuild()})
    _zip_with(path, {"h/data.pkl": buf.getvalue(), "h/data/0": bytes(storage_bytes), "h/byteorder": b"little"})


def test_view_past_its_storage_is_refused(tmp_path):
    path = tmp_path / "oob.pt"
    _handmade_archive(path, size=(100,), stride=(1,), storage_bytes=16, numel=4)
    with pytest.raises(CheckpointError, match="reaches past"):
        read_checkpoint(path)


def test_storage_of_the_wrong_length_is_refused(tmp_path):
    path = tmp_path / "short.pt"
    _handmade_archive(path, size=(4,), stride=(1,), storage_bytes=12, numel=4)
    with pytest.raises(CheckpointError, match="holds 12 bytes"):
        read_checkpoint(path)


def test_handmade_archive_reads(tmp_path):
    path = tmp_path / "ok.pt"
    _handmade_archive(path, size=(2, 2), stride=(1, 2), storage_bytes=16, numel=4)
    tf = open_torch_file(path)
    t = tf.materialize(tf.obj)["t"]
    assert t.shape == (2, 2) and t.stride() == (1, 2)


def test_pickle_named_safetensors_is_refused(tmp_path, marker):
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_SystemPayload(marker)))
    with pytest.raises(CheckpointError, match="safetensors"):
        read_checkpoint(path)
    assert not marker.exists()


def test_zip_that_is_not_a_torch_archive(tmp_path):
    path = tmp_path / "x.npz"
    _zip_with(path, {"a.npy": b"\x93NUMPY"})
    with pytest.raises(CheckpointError, match="not a PyTorch archive"):
        read_checkpoint(path)


def _awkward_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(6, 4, generator=g)
    return {
        "a.float32": torch.randn(3, 5, generator=g),
        "a.float16": torch.randn(7, generator=g).half(),
        "a.bfloat16": torch.randn(2, 3, generator=g).bfloat16(),
        "a.float64": torch.randn(2, generator=g).double(),
        "a.int64": torch.arange(5),
        "a.int8": torch.arange(-3, 3, dtype=torch.int8),
        "a.uint8": torch.arange(4, dtype=torch.uint8),
        "a.bool": torch.tensor([True, False, True]),
        "a.scalar": torch.tensor(2.5),
        "a.empty": torch.empty(0, 3),
        "a.transposed": base.t(),  # non-contiguous view
        "a.slice": base[2:4],  # shares storage with a.transposed, offset view
    }


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        assert torch.equal(got[k], want[k]), k


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_save_round_trip_all_dtypes(tmp_path, monkeypatch, zip_format):
    want = _awkward_tensors()
    path = tmp_path / "t.pt"
    torch.save(want, path, _use_new_zipfile_serialization=zip_format)
    for name in ("load", "jit.load"):  # prove the reference loaders are not used
        obj, attr = (torch, "load") if name == "load" else (torch.jit, "load")
        monkeypatch.setattr(obj, attr, lambda *a, **k: pytest.fail(f"torch.{name} called"))
    tf = open_torch_file(path)
    _assert_same(tf.materialize(tf.obj), want)


def test_training_checkpoint_reads_only_the_state_dict(tmp_path):
    weights = _state()
    optimizer = {"state": {0: {"exp_avg": torch.randn(1000)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]}
    path = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "run", "state_dict": {"module." + k: v for k, v in weights.items()},
                "optimizer": optimizer}, path)
    tf = open_torch_file(path)
    reads = []
    original = tf._read_storage
    tf._read_storage = lambda ref: reads.append(ref.numel) or original(ref)
    tf.materialize(tf.obj["state_dict"])
    assert 1000 not in reads  # the optimizer's storage stayed on disk
    ck = read_checkpoint(path)
    assert ck.format == "open_clip"
    _assert_same(ck.state_dict, {"module." + k: v for k, v in weights.items()})


class _WithPlainTensor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)
        self.bn = torch.nn.BatchNorm1d(2)
        self.plain = torch.zeros(4)  # a tensor attribute, not a parameter or buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.lin(x)) + self.plain[:2].sum()


def test_scripted_module_yields_exactly_its_state_dict(tmp_path, monkeypatch):
    scripted = torch.jit.script(_WithPlainTensor())
    path = tmp_path / "scripted.pt"
    scripted.save(str(path))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load called"))
    tf = open_torch_file(path)
    assert tf.is_torchscript
    got = tf.materialize(tf.script_state_dict())
    want = scripted.state_dict()
    assert sorted(got) == sorted(want)  # 'plain' left out, BatchNorm buffers in
    for k in want:
        assert torch.equal(got[k], want[k]) and got[k].dtype == want[k].dtype, k
