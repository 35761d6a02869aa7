"""The hardening catalogue for inputs other than checkpoints (docs/security.md): hostile or damaged
images, tables, file names and training runs get a named error, bounded cost, and lose nothing else.
(Checkpoints and the tokenizer: tests/test_hostile_checkpoints.py, tests/test_tokenizer_hardening.py.)"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_models import TINY, train_config

import clipforge
from clipforge.image import ImageLoadError, ImageRef, load_image
from clipforge.sources import read_table

SAMPLES = Path(clipforge.__file__).parent / "bundled" / "samples"


def _png_bytes(size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


# ---- images -----------------------------------------------------------------------------------------


def test_eps_named_jpg_is_not_handed_to_ghostscript(tmp_path, monkeypatch):
    eps = tmp_path / "photo.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a) or (_ for _ in ()).throw(AssertionError("subprocess")))
    with pytest.raises(ImageLoadError) as err:
        load_image(eps)
    assert err.value.code == "not_an_image" and str(eps) in str(err.value) and not started


def test_a_thin_strip_is_refused_in_bounded_time_and_memory(tmp_path):
    strip = tmp_path / "strip.png"
    Image.new("RGB", (4000, 1), "red").save(strip)
    assert strip.stat().st_size < 200
    code = (
        "import resource, sys, time; from clipforge.image import load_image, iter_image_batches, Preprocess;"
        "from clipforge.configs import PreprocessConfig;"
        f"t = time.monotonic(); b = next(iter_image_batches([{str(strip)!r}], Preprocess(PreprocessConfig()), num_workers=0));"
        "print(b.errors[0][2].code, time.monotonic() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    base = subprocess.run([sys.executable, "-c", "import resource, clipforge.image; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                          capture_output=True, text=True, check=True)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "preprocess_failed"
    assert float(out[1]) < 2.0 and (int(out[2]) - int(base.stdout)) / 1024 < 100  # was ~1 GB and seconds


def test_odd_paths_are_named_errors(tmp_path):
    loop = tmp_path / "loop.png"
    os.symlink(loop, loop)
    for path, code in ((loop, "unreadable"), (str(tmp_path / "nul\0.png"), "bad_path"), (tmp_path, "not_a_file")):
        with pytest.raises(ImageLoadError) as err:
            load_image(path)
        assert err.value.code == code, (path, err.value)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(fifo)  # would block forever if opened


def test_image_refs_report_truncation(tmp_path):
    data = _png_bytes()
    shard = tmp_path / "x.bin"
    shard.write_bytes(b"head" + data[:10])
    with pytest.raises(ImageLoadError) as err:
        load_image(ImageRef("x.tar::a.png", path=str(shard), offset=4, size=len(data)))
    assert err.value.code == "truncated"
    assert load_image(ImageRef("mem.png", data=data)).size == (8, 8)


# ---- tables ------------------------------------------------------------------------------------------


def test_a_damaged_csv_loses_only_its_damaged_rows(tmp_path):
    rows = [f"img/{i}.png,caption {i}" for i in range(20)]
    rows[3] = 'img/3.png,"a quote that never closes'  # used to swallow the rest of the file
    raw = ("image,caption\n" + "\n".join(rows) + "\n").encode()
    raw = raw.replace(b"caption 7", b"caption \xff7")  # one invalid UTF-8 byte
    raw = raw.replace(b"img/9.png", b"img/\x009.png")  # a NUL byte in a path
    table = tmp_path / "pairs.csv"
    table.write_bytes(raw)
    items = read_table(table)
    problems = [i for i in items if i.problem]
    assert len(items) == 20 and {p.where.rsplit(":", 1)[1] for p in problems} == {"5", "9"}
    assert all(f"pairs.csv:{p.where.rsplit(':', 1)[1]}" in p.problem for p in problems)
    good = [i for i in items if not i.problem]
    assert [i.caption for i in good if i.caption.startswith("caption 1")][:2] == ["caption 1", "caption 10"]
    assert next(i for i in good if i.path.endswith("9.png")).path.count("\0") == 1  # kept: load_image names it bad_path


def test_jsonl_bad_lines_are_items_with_problems(tmp_path):
    table = tmp_path / "pairs.jsonl"
    table.write_bytes(b'{"image": "a.png", "caption": "ok"}\n{"image": \n[1, 2]\n{"image": "b\xff.png", "caption": "x"}\n'
                      + b"[" * 100_000 + b"]" * 100_000 + b"\n")
    items = read_table(table)
    assert [bool(i.problem) for i in items] == [False, True, True, True, True]
    assert "pairs.jsonl:5: not a row: JSON nested too deeply" in items[4].problem
    assert "pairs.jsonl:2: not valid JSON" in items[1].problem and "not valid UTF-8" in items[3].problem


# ---- file names that are not UTF-8 ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return clipforge.save(clipforge.ClipModel(TINY), tmp_path_factory.mktemp("tiny") / "tiny.safetensors")


def test_a_file_name_that_is_not_utf8_is_embedded_and_recorded_exactly(tiny_file, tmp_path):
    from clipforge.tasks.embedding import read_embeddings

    folder = tmp_path / "photos"
    folder.mkdir()
    odd = os.path.join(os.fsencode(folder), b"caf\xe9.png")
    shutil.copy(SAMPLES / "airplane.png", odd)
    shutil.copy(SAMPLES / "moon-crescent.png", folder / "ok.png")
    result = subprocess.run([sys.executable, "-m", "clipforge.cli.main", "embed", str(folder), "--out", str(tmp_path / "e"),
                             "--model", str(tiny_file), "--no-progress"], capture_output=True, text=True)
    assert result.returncode == 0 and "embedded 2 images" in result.stdout, result.stderr
    paths, vectors = read_embeddings(tmp_path / "e")
    assert vectors.shape[0] == 2 and os.fsencode(paths[0]) == odd
    result = subprocess.run([sys.executable, "-m", "clipforge.cli.main", "classify", str(folder), "--labels", "a,b",
                             "--model", str(tiny_file), "--json"], capture_output=True)
    assert result.returncode == 0
    decoded = json.loads(result.stdout.decode("utf-8"))  # valid UTF-8, and the name round-trips
    assert os.fsencode(decoded["results"][0]["path"]) == odd


# ---- training ------------------------------------------------------------------------------------------


@pytest.mark.slow  # training runs
def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    from clipforge.train import train
    from clipforge.train.loop import TrainingDivergedError
    from clipforge.train.synthetic import write_shapes_dataset

    data = write_shapes_dataset(tmp_path / "data", 48)
    good = train_config(train=str(data), batch_size=8, max_steps=3, workers=0, progress=False, plot=False,
                        out_dir=str(tmp_path / "run"), save_every_steps=3, lr=1e-4)
    train(good)
    saved = sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    before = {p.name: p.read_bytes() for p in saved}
    diverging = good.replace(optim={"max_steps": 8, "lr": 1e30, "warmup_steps": 0, "weight_decay": 0.0})
    with pytest.raises(TrainingDivergedError, match="training diverged at step .* the last good checkpoint is"):
        train(diverging)
    after = sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    from clipforge.train.checkpointing import load_checkpoint

    for path in after:  # nothing NaN was ever saved
        state = load_checkpoint(path)
        assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point()), path.name
    assert set(before) <= {p.name for p in after}


@pytest.mark.slow  # training runs
@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_resume_falls_back_to_the_newest_readable_checkpoint(tmp_path, damage, caplog):
    from clipforge.train import train
    from clipforge.train.synthetic import write_shapes_dataset

    data = write_shapes_dataset(tmp_path / "data", 48)
    config = train_config(train=str(data), batch_size=8, max_steps=4, workers=0, progress=False, plot=False,
                          out_dir=str(tmp_path / "run"), save_every_steps=2, keep_checkpoints=3)
    train(config)
    newest = sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[: 1000] if damage == "truncated" else b"")
    with caplog.at_level("WARNING", logger="clipforge.train"):
        result = train(config.replace(optim={"max_steps": 6}))
    assert result.steps == 6
    assert any(newest.name in r.message and "resuming from the checkpoint before it" in r.message for r in caplog.records)


@pytest.mark.slow  # training runs
def test_a_truncated_shard_is_reported_with_how_far_it_got(tmp_path, caplog):
    from clipforge.train import train

    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(24):
            for ext, payload in (("png", _png_bytes((32, 32))), ("txt", f"a red square {i}".encode())):
                info = tarfile.TarInfo(f"{i:04d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    full = shard.read_bytes()
    shard.write_bytes(full[: len(full) * 2 // 3])
    config = train_config(train=str(shard), batch_size=4, max_steps=2, workers=0, progress=False, plot=False,
                          out_dir=str(tmp_path / "run"), shuffle_buffer=0)
    with caplog.at_level("WARNING", logger="clipforge.train"):
        train(config)
    messages = " ".join(r.message for r in caplog.records)
    assert "unreadable after" in messages and "shard-000.tar" in messages


# ---- a full disk -----------------------------------------------------------------------------------------


def _fill_the_disk_after(monkeypatch, finished: int, matching: str) -> None:
    """From the (finished+1)-th atomic write of a file whose name contains `matching`, writing fails as a full disk does."""
    import builtins
    import errno

    from clipforge import atomic_files

    calls = []

    def full_open(path, mode="r", *args, **kwargs):
        if "w" in mode and matching in Path(path).name:
            calls.append(path)
            if len(calls) > finished:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(atomic_files, "open", full_open, raising=False)


def test_a_full_disk_during_embed_is_one_line_and_keeps_finished_shards(tiny_file, tmp_path, monkeypatch, capsys):
    from clipforge.cli.main import main

    folder = tmp_path / "photos"
    shutil.copytree(SAMPLES, folder, ignore=shutil.ignore_patterns("*.jsonl"))
    out = tmp_path / "e"
    args = ["embed", str(folder), "--out", str(out), "--model", str(tiny_file), "--no-progress", "--shard-size", "2", "--batch-size", "2", "--workers", "0"]
    _fill_the_disk_after(monkeypatch, finished=2, matching="images-")
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on the device writing" in err[0] and "finished work is kept" in err[0], err
    kept = sorted(p.name for p in out.glob("images-*.npy"))
    assert kept == ["images-00000.npy", "images-00001.npy"]
    monkeypatch.undo()  # space freed: the rerun resumes and completes
    assert main(args) == 0
    assert len(list(out.glob("images-*.npy"))) == (len(list(SAMPLES.glob("*.png"))) + 1) // 2


@pytest.mark.slow  # a training run
def test_a_full_disk_during_training_names_the_disk_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    from clipforge.cli.main import main
    from clipforge.train.synthetic import write_shapes_dataset
    from tiny_models import train_config_dict

    data = write_shapes_dataset(tmp_path / "data", 48)
    config = tmp_path / "run.json"
    config.write_text(json.dumps(train_config_dict(train=str(data), batch_size=8, max_steps=6, workers=0, progress=False,
                                                   plot=False, out_dir=str(tmp_path / "run"), save_every_steps=2)))
    _fill_the_disk_after(monkeypatch, finished=1, matching="step_")
    assert main(["train", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on the device writing" in err[0] and "step_" in err[0], err
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*.pt")] == ["step_00000002.pt"]
