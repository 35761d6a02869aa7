"""`clipforge.tasks.embedding.embed` and `clipforge embed`: every SOURCE kind, bad files, resume after
SIGKILL, several ranks, refusal of a different run. Tiny random model, real clip-art images."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipforge
from clipforge.configs import ClipConfig, TextConfig, VisionTransformerConfig
from clipforge.image import load_image
from clipforge.sources import expand_braces, read_source
from clipforge.tasks.embedding import (
    IncompleteRunError,
    embed,
    read_embeddings,
    read_manifest,
    read_summary,
)

TINY = ClipConfig(
    embed_dim=32,
    vision=VisionTransformerConfig(image_size=32, patch_size=8, width=64, layers=2, heads=2),
    text=TextConfig(context_length=77, width=64, heads=2, layers=2),
)
pytestmark = pytest.mark.filterwarnings("ignore:Palette images with Transparency")

CLI = (  # `clipforge` with our commands, whether or not cli/main.py lists them yet
    "import sys; from clipforge.cli import main as m; "
    "m.COMMAND_MODULES += [c for c in ('embed', 'search') if c not in m.COMMAND_MODULES]; sys.exit(m.main(sys.argv[1:]))"
)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return clipforge.save(clipforge.ClipModel(TINY), tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def loaded(model_file):
    return clipforge.load(model_file)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """12 real clip-art PNGs (two in a subfolder) plus 2 JPEGs made from them."""
    from image_fixtures import corpus_sample

    d = tmp_path_factory.mktemp("images")
    (d / "sub").mkdir()
    out = []
    for i, src in enumerate(corpus_sample(12)):
        dst = (d / "sub" if i % 6 == 5 else d) / f"{i:02d}_{src.name}"
        shutil.copy(src, dst)
        out.append(dst)
    for i in (0, 1):
        rgb = Image.open(out[i]).convert("RGB")
        rgb.save(d / f"photo{i}.jpg", quality=90)
        out.append(d / f"photo{i}.jpg")
    (d / "notes.txt").write_text("not an image, not listed\n")
    return out


def _direct(loaded, paths) -> np.ndarray:
    """Reference: each image embedded on its own, straight through the public API."""
    model, preprocess, _ = loaded
    with torch.no_grad():
        return torch.cat([model.encode_image(preprocess(load_image(p)).unsqueeze(0), normalize=True) for p in paths]).numpy()


def _direct_text(loaded, captions) -> np.ndarray:
    model, _, tokenizer = loaded
    with torch.no_grad():
        return model.encode_text(tokenizer(captions), normalize=True).numpy()


def _run(loaded, source, out, **kwargs):
    model, preprocess, tokenizer = loaded
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("progress", False)
    return embed(model, preprocess, tokenizer, source, out, **kwargs)


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.npy"))}


# ---- SOURCE kinds ------------------------------------------------------------------------------


def test_folder_source(loaded, images, tmp_path):
    folder = images[0].parent
    summary = _run(loaded, folder, tmp_path / "out", batch_size=4, shard_size=5)
    expected = sorted(images, key=lambda p: p.relative_to(folder).as_posix())
    paths, vectors = read_embeddings(tmp_path / "out")
    assert paths == [str(p) for p in expected]  # recursive, sorted by relative path, .txt ignored
    assert vectors.dtype == np.float32 and vectors.shape == (14, 32)
    np.testing.assert_allclose(vectors, _direct(loaded, expected), atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert (summary.items, summary.images, summary.skipped) == (14, 14, {})
    assert sorted(p.name for p in (tmp_path / "out").glob("images-*.npy")) == [f"images-0000{i}.npy" for i in range(3)]
    manifest = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert manifest[6] == {"index": 6, "path": str(expected[6]), "shard": "images-00001.npy", "row": 1}


def test_list_source_relative_paths_and_float16(loaded, images, tmp_path):
    folder = images[0].parent
    listing = tmp_path / "list.txt"
    chosen = [images[3], images[0], images[12]]
    listing.write_text("".join(os.path.relpath(p, tmp_path) + "\n" for p in chosen) + "\n")
    _run(loaded, listing, tmp_path / "out", dtype="float16")
    paths, vectors = read_embeddings(tmp_path / "out")
    assert paths == [str(p) for p in chosen]  # list order kept, blank line skipped
    assert vectors.dtype == np.float16
    np.testing.assert_allclose(vectors.astype(np.float32), _direct(loaded, chosen), atol=1e-3)
    assert folder.exists()


def test_csv_and_jsonl_sources_with_captions(loaded, images, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for p in images[:3]:
        shutil.copy(p, data / p.name)
    rows = [
        {"filepath": images[0].name, "caption": "a diagram"},
        {"filepath": images[1].name, "caption": ""},  # no caption: image only
        {"filepath": "", "caption": "cat sitting on a wooden chair"},  # caption only
        {"filepath": images[2].name, "caption": "Red Rose (still life), caf\u00e9"},
    ]
    table = data / "pairs.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["filepath", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    jsonl = data / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"image": r["filepath"] or None, "text": r["caption"] or None}) + "\n" for r in rows))

    for source, out in ((table, tmp_path / "csv"), (jsonl, tmp_path / "jsonl")):
        summary = _run(loaded, source, out, batch_size=2)
        assert (summary.images, summary.texts, summary.skipped) == (3, 3, {})
        paths, vectors = read_embeddings(out)
        assert paths == [str(data / images[i].name) for i in (0, 1, 2)]  # resolved against the file's folder
        np.testing.assert_allclose(vectors, _direct(loaded, [images[i] for i in (0, 1, 2)]), atol=2e-6)
        captions, text_vectors = read_embeddings(out, "texts")
        assert captions == ["a diagram", "cat sitting on a wooden chair", "Red Rose (still life), caf\u00e9"]
        np.testing.assert_allclose(text_vectors, _direct_text(loaded, captions), atol=2e-6)
        manifest = read_manifest(out)
        assert "path" not in manifest[2] and manifest[2]["text_row"] == 1 and "shard" not in manifest[2]
    assert _shard_bytes(tmp_path / "csv") == _shard_bytes(tmp_path / "jsonl")


def test_table_without_known_columns_is_refused(loaded, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("url,label\nx.png,1\n")
    with pytest.raises(ValueError, match="image/path/filepath"):
        _run(loaded, table, tmp_path / "out")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_source(loaded, images, tmp_path):
    png = images[4].read_bytes()
    jpg = images[12].read_bytes()
    webp_buffer = io.BytesIO()
    Image.open(images[5]).convert("RGB").save(webp_buffer, "WEBP", lossless=True)
    (tmp_path / "ref.webp").write_bytes(webp_buffer.getvalue())
    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:
        _add(tar, "s0001.png", png)
        _add(tar, "s0001.txt", b"a red car")
        _add(tar, "s0002.jpg", jpg)
        _add(tar, "s0002.json", b"{}")
        _add(tar, "s0003.txt", b"caption without an image")
    with tarfile.open(tmp_path / "shard-001.tar", "w") as tar:
        _add(tar, "dir/s0004.webp", webp_buffer.getvalue())
        _add(tar, "dir/s0004.txt", b"a flower")
        _add(tar, "s0005.png", png[: len(png) // 2])  # truncated
        _add(tar, "s0006.json", b"{}")  # neither image nor caption
    assert expand_braces(str(tmp_path / "shard-{000..001}.tar")) == [str(tmp_path / "shard-000.tar"), str(tmp_path / "shard-001.tar")]

    out = tmp_path / "out"
    summary = _run(loaded, str(tmp_path / "shard-{000..001}.tar"), out, batch_size=2, shard_size=4)
    manifest = read_manifest(out)
    assert [e.get("path", "").split("::")[-1] for e in manifest] == ["s0001.png", "s0002.jpg", "", "dir/s0004.webp", "s0005.png", "s0006"]
    assert manifest[4]["error"]["code"] == "truncated" and manifest[5]["error"]["code"] == "no_image"
    assert summary.skipped == {"truncated": 1, "no_image": 1}
    paths, vectors = read_embeddings(out)
    np.testing.assert_allclose(vectors, _direct(loaded, [images[4], images[12], tmp_path / "ref.webp"]), atol=2e-6)
    captions, _ = read_embeddings(out, "texts")
    assert captions == ["a red car", "caption without an image", "a flower"]
    assert not list(out.glob(".scratch*"))  # extracted members are cleaned up


# ---- bad files ---------------------------------------------------------------------------------


def test_bad_files_are_reported_and_nothing_else_is_lost(loaded, images, tmp_path):
    good = images[:6]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.jpg").write_text("this is a text file, not a JPEG\n" * 20)
    data = images[7].read_bytes()
    (bad / "truncated.png").write_bytes(data[: len(data) // 2])
    listing = tmp_path / "list.txt"
    order = [good[0], bad / "empty.png", good[1], good[2], bad / "notes.jpg", good[3], bad / "truncated.png",
             good[4], bad / "missing.png", good[5]]
    listing.write_text("".join(f"{p}\n" for p in order))

    summary = _run(loaded, listing, tmp_path / "out", batch_size=4, shard_size=6)
    manifest = read_manifest(tmp_path / "out")
    assert [e["index"] for e in manifest] == list(range(10))
    errors = {Path(e["path"]).name: e["error"]["code"] for e in manifest if "error" in e}
    assert errors == {"empty.png": "empty", "notes.jpg": "not_an_image", "truncated.png": "truncated", "missing.png": "missing"}
    assert all(e["error"]["message"] for e in manifest if "error" in e)
    paths, vectors = read_embeddings(tmp_path / "out")
    assert paths == [str(p) for p in good]
    np.testing.assert_allclose(vectors, _direct(loaded, good), atol=2e-6)
    assert summary.skipped == {"empty": 1, "not_an_image": 1, "truncated": 1, "missing": 1}
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["skipped"] == summary.skipped and on_disk["images"] == 6
    assert "truncated: 1" in summary.format()


# ---- resume ------------------------------------------------------------------------------------


def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.Popen([sys.executable, "-c", CLI, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_after(args: list[str], out: Path, shards: int) -> None:
    """Start the CLI and SIGKILL it as soon as `shards` image shard files exist."""
    proc = _cli(args)
    deadline = time.monotonic() + 60
    while len(list(out.glob("images-*.npy"))) < shards and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed ({proc.returncode}): {err[-2000:]}"


def test_resume_after_sigkill_gives_exactly_the_uninterrupted_output(loaded, images, model_file, tmp_path):
    listing = tmp_path / "list.txt"
    # 150 items, 2 per shard: 75 commits, so a kill lands mid-run.
    listing.write_text("".join(f"{images[i % len(images)]}\n" for i in range(150)))
    n_items = len(listing.read_text().splitlines())
    out = tmp_path / "resumed"
    args = ["embed", listing, "--out", out, "--model", model_file, "--workers", "0", "--batch-size", "2",
            "--shard-size", "2", "--no-progress"]

    _kill_after(args, out, 1)
    first = len(read_manifest(out, complete=False))
    assert first < n_items
    _kill_after(args, out, len(list(out.glob("images-*.npy"))) + 3)  # killed again, while resuming
    assert first <= len(read_manifest(out, complete=False)) < n_items
    done = _cli(args)
    stdout, stderr = done.communicate(timeout=120)
    assert done.returncode == 0, stderr
    assert "items were already done" in stdout

    reference = tmp_path / "reference"
    _run(loaded, listing, reference, batch_size=2, shard_size=2)
    manifest = read_manifest(out)
    assert [e["index"] for e in manifest] == list(range(n_items))  # each item exactly once, no gaps
    assert (out / "manifest.jsonl").read_bytes() == (reference / "manifest.jsonl").read_bytes()
    assert _shard_bytes(out) == _shard_bytes(reference)  # byte-identical shards
    paths, vectors = read_embeddings(out)
    ref_paths, ref_vectors = read_embeddings(reference)
    assert paths == ref_paths and np.array_equal(vectors, ref_vectors)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_recovery_from_torn_manifest_orphans_and_missing_shards(loaded, images, tmp_path):
    folder = images[0].parent
    reference = tmp_path / "reference"
    _run(loaded, folder, reference, batch_size=3, shard_size=3)
    expected_manifest, expected_shards = (reference / "manifest.jsonl").read_bytes(), _shard_bytes(reference)

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    manifest = out / "manifest.jsonl"
    lines = manifest.read_bytes().splitlines(keepends=True)
    manifest.write_bytes(b"".join(lines[:7]) + lines[7][:10])  # died mid-append in chunk 2
    (out / "images-00004.npy.tmp").write_bytes(b"partial")  # died mid-write of chunk 4
    with pytest.raises(IncompleteRunError, match="6 of 14"):
        read_embeddings(out)  # chunks 0-1 are complete; chunk 2's lines are partial
    summary = _run(loaded, folder, out, batch_size=3, shard_size=3)
    assert summary.resumed_items == 6
    assert manifest.read_bytes() == expected_manifest and _shard_bytes(out) == expected_shards
    assert not list(out.glob("*.tmp"))

    # A manifest line whose shard file vanished: that chunk and everything after it is redone.
    (out / "images-00001.npy").unlink()
    (out / "images-00009.npy").write_bytes(b"orphan")
    summary = _run(loaded, folder, out, batch_size=3, shard_size=3)
    assert summary.resumed_items == 3
    assert manifest.read_bytes() == expected_manifest and _shard_bytes(out) == expected_shards

    # A finished run is a no-op.
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("images-*.npy")}
    assert _run(loaded, folder, out, batch_size=3, shard_size=3).resumed_items == 14
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("images-*.npy")}


def test_a_different_run_in_the_same_directory_is_refused(loaded, images, tmp_path):
    folder = images[0].parent
    _run(loaded, folder, tmp_path / "out", shard_size=5)
    with pytest.raises(ValueError, match="shard_size: 5 then, 4 now"):
        _run(loaded, folder, tmp_path / "out", shard_size=4)
    torch.manual_seed(1)
    other = clipforge.ClipModel(TINY).eval()
    with pytest.raises(ValueError, match="different weights"):
        embed(other, loaded[1], loaded[2], folder, tmp_path / "out", shard_size=5, num_workers=0, progress=False)


# ---- several ranks -----------------------------------------------------------------------------


def test_ranks_split_the_work_and_merge_to_the_single_process_output(loaded, images, tmp_path):
    folder = images[0].parent
    single = tmp_path / "single"
    _run(loaded, folder, single, batch_size=2, shard_size=3)
    multi = tmp_path / "multi"
    _run(loaded, folder, multi, batch_size=2, shard_size=3, rank=1, world_size=3)
    with pytest.raises(IncompleteRunError, match="unfinished ranks: 0, 2 of 3"):
        read_embeddings(multi)
    _run(loaded, folder, multi, batch_size=2, shard_size=3, rank=0, world_size=3)
    _run(loaded, folder, multi, batch_size=2, shard_size=3, rank=2, world_size=3)
    assert sorted(p.name for p in multi.glob("manifest*")) == [f"manifest-rank{r}.jsonl" for r in range(3)]
    assert [json.loads(line)["index"] for line in (multi / "manifest-rank1.jsonl").read_text().splitlines()] == [3, 4, 5, 12, 13]
    assert _shard_bytes(multi) == _shard_bytes(single)
    paths, vectors = read_embeddings(multi)
    single_paths, single_vectors = read_embeddings(single)
    assert paths == single_paths and np.array_equal(vectors, single_vectors)
    assert read_summary(multi)["images"] == 14 and read_summary(multi)["ranks_finished"] == 3


def test_rank_from_torchrun_environment(loaded, images, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    summary = _run(loaded, images[0].parent, tmp_path / "out", shard_size=4)
    assert (summary.rank, summary.world_size, summary.items) == (1, 2, 6)  # chunks 1 and 3: items 4-7, 12-13
    assert (tmp_path / "out" / "manifest-rank1.jsonl").exists() and (tmp_path / "out" / "summary-rank1.json").exists()


def test_source_kinds_are_detected(tmp_path):
    (tmp_path / "a.txt").write_text("x.png\n")
    assert [i.path for i in read_source(str(tmp_path / "a.txt"))] == [str(tmp_path / "x.png")]
    with pytest.raises(FileNotFoundError, match="not found"):
        read_source(str(tmp_path / "missing-{0..1}.tar"))
