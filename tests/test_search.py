"""Search: exact top-k, FAISS recall against exact, `clipforge index` / `clipforge search`, the HTML page,
and refusal of a query model that is not the index's. Tiny random models, real clip-art images."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipforge
from clipforge.cli import main as cli_main
from clipforge.configs import ClipConfig, TextConfig, VisionTransformerConfig
from clipforge.tasks.search import (
    SearchIndex,
    build_faiss_index,
    exact_search,
    recall_at_k,
)

pytestmark = pytest.mark.filterwarnings("ignore:Palette images with Transparency")

TINY = ClipConfig(
    embed_dim=32,
    vision=VisionTransformerConfig(image_size=32, patch_size=8, width=64, layers=2, heads=2),
    text=TextConfig(context_length=77, width=64, heads=2, layers=2),
)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_recall_at_k():
    exact = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(np.array([[3, 2, 9, -1], [7, 8, 9, 10]]), exact) == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert recall_at_k(np.array([[-1, -1, -1, -1], [4, 4, 4, 4]]), exact) == pytest.approx(0.125)
    with pytest.raises(ValueError, match="queries"):
        recall_at_k(exact[:1], exact)


def test_exact_search_matches_brute_force_across_blocks():
    rng = np.random.default_rng(0)
    vectors, queries = _unit(rng, 1000, 16), _unit(rng, 7, 16)
    result = exact_search(vectors, queries, 5, block_rows=128)  # top-k merged over 8 blocks
    scores = queries @ vectors.T
    expected = np.argsort(-scores, axis=1)[:, :5]
    np.testing.assert_array_equal(result.ids, expected)
    np.testing.assert_allclose(result.scores, np.take_along_axis(scores, expected, 1), atol=1e-6)
    assert exact_search(vectors[:3], queries, 10).ids.shape == (7, 3)  # k larger than the collection


@pytest.mark.parametrize("backend", ["faiss-ivf", "faiss-hnsw"])
def test_faiss_recall_on_random_vectors(backend):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install faiss-cpu)")
    rng = np.random.default_rng(0)
    # Uniformly random unit vectors: no cluster structure, the hardest case for IVF and HNSW.
    vectors, queries = _unit(rng, 20000, 64), _unit(rng, 200, 64)
    built = build_faiss_index(vectors, backend)
    exact = exact_search(vectors, queries, 10)
    approx = built.search(queries, 10)
    recall = recall_at_k(approx.ids, exact.ids)
    assert recall >= 0.9, (backend, built.params, recall)
    assert abs(recall - built.calibrated_recall) < 0.05  # the calibration predicts recall on new queries
    # Row ids are the collection's rows even though calibration rows are added last.
    assert np.array_equal(built.search(vectors[:50], 1).ids[:, 0], np.arange(50))


def test_faiss_missing_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(RuntimeError, match="pip install faiss-cpu"):
        build_faiss_index(np.eye(4, dtype=np.float32), "faiss-ivf")


# ---- the commands ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return clipforge.save(clipforge.ClipModel(TINY), tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    from image_fixtures import corpus_sample

    d = tmp_path_factory.mktemp("photos")
    for i, src in enumerate(corpus_sample(10)):
        shutil.copy(src, d / f"{i:02d}_{src.name}")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return d


def _with_our_commands() -> list[str]:
    # Until cli/main.py lists them (and without registering them twice once it does).
    return [*cli_main.COMMAND_MODULES, *(m for m in ("embed", "search") if m not in cli_main.COMMAND_MODULES)]


def _cli(args, monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", _with_our_commands())
    code = cli_main.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def index_dir(model_file, folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index") / "photos.index"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli_main, "COMMAND_MODULES", _with_our_commands())
        assert cli_main.main(["index", str(folder), "--model", str(model_file), "--out", str(out),
                              "--workers", "0", "--shard-size", "4", "--no-progress"]) == 0
    return out


def test_index_records_the_model(index_dir, model_file):
    record = json.loads((index_dir / "index.json").read_text())
    assert record["model"]["name_or_path"] == str(model_file)
    assert record["model"]["config"] == TINY.to_dict()
    index = SearchIndex(index_dir)
    assert len(index) == 10 and index.vectors.dtype == np.float32
    manifest = [json.loads(line) for line in (index_dir / "manifest.jsonl").read_text().splitlines()]
    assert [(Path(e["path"]).name, e["error"]["code"]) for e in manifest if "error" in e] == [("broken.png", "not_an_image")]


def test_text_search_prints_paths_and_scores(index_dir, model_file, monkeypatch, capsys):
    code, out, _ = _cli(["search", index_dir, "a red car", "-k", "3"], monkeypatch, capsys)
    assert code == 0
    rows = re.findall(r"^\s+(\d+)\s+(-?\d\.\d{4})\s+(\S.*)$", out, re.M)
    assert [r[0] for r in rows] == ["1", "2", "3"]
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    # The scores are the model's own cosine similarities.
    model, _, tokenizer = clipforge.load(model_file)
    index = SearchIndex(index_dir)
    with torch.no_grad():
        query = model.encode_text(tokenizer(["a red car"]), normalize=True).numpy()
    best = np.argsort(-(index.vectors @ query[0]))[:3]
    assert [r[2] for r in rows] == [index.paths[i] for i in best]


def test_image_search_finds_the_image_itself_and_writes_html(index_dir, folder, monkeypatch, capsys, tmp_path):
    query = sorted(folder.glob("03_*"))[0]
    page = tmp_path / "results.html"
    code, out, _ = _cli(["search", index_dir, "--image", query, "-k", "4", "--html", page], monkeypatch, capsys)
    assert code == 0
    first = re.search(r"^\s+1\s+(\S+)\s+(.*)$", out, re.M)
    assert first.group(2) == str(query) and float(first.group(1)) == pytest.approx(1.0, abs=1e-4)
    html = page.read_text()
    thumbnails = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', html)
    assert len(thumbnails) == 5  # the query image and 4 results, all inline
    assert "<script" not in html and "http" not in html  # self-contained
    thumb = Image.open(io.BytesIO(base64.b64decode(thumbnails[1])))
    assert max(thumb.size) <= 192 and thumb.mode == "RGB"
    assert str(query) in html


@pytest.mark.parametrize("backend", ["faiss-ivf", "faiss-hnsw"])
def test_faiss_backends_from_the_command_line(index_dir, backend, monkeypatch, capsys):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install faiss-cpu)")
    _, exact_out, _ = _cli(["search", index_dir, "a diagram", "-k", "5"], monkeypatch, capsys)
    code, out, _ = _cli(["search", index_dir, "a diagram", "-k", "5", "--backend", backend, "--check-recall"],
                        monkeypatch, capsys)
    assert code == 0
    assert re.search(r"recall@5 of this query vs exact search: 1\.000", out)  # tiny collection: exact
    assert re.findall(r"^\s+\d+\s+\S+\s+(.*)$", out, re.M) == re.findall(r"^\s+\d+\s+\S+\s+(.*)$", exact_out, re.M)
    assert list(index_dir.glob(f"{backend}-10.faiss"))  # cached for the next search


def test_a_different_query_model_is_refused(index_dir, tmp_path, monkeypatch, capsys):
    torch.manual_seed(1)
    same_config = clipforge.save(clipforge.ClipModel(TINY), tmp_path / "other.safetensors")
    code, _, err = _cli(["search", index_dir, "a red car", "--model", same_config], monkeypatch, capsys)
    assert code == 1 and "different weights" in err and "leave out --model" in err
    wider = TINY.replace(embed_dim=16)
    code, _, err = _cli(["search", index_dir, "a red car", "--model",
                         clipforge.save(clipforge.ClipModel(wider), tmp_path / "wider.safetensors")], monkeypatch, capsys)
    assert code == 1 and "configs differ (in embed_dim)" in err
    # Building into the same index with another model is refused too.
    code, _, err = _cli(["index", index_dir.parent, "--model", same_config, "--out", index_dir, "--workers", "0"],
                        monkeypatch, capsys)
    assert code == 1 and "different weights" in err


def test_search_needs_exactly_one_query(index_dir, monkeypatch, capsys):
    code, _, err = _cli(["search", index_dir], monkeypatch, capsys)
    assert code == 1 and "either a text QUERY or --image" in err
