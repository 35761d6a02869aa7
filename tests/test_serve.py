"""`clipforge serve`: the HTTP API against a live uvicorn server on a free loopback port.

Parity with `clipforge search` (order and scores), every kind of bad input, the bearer token, the
Host check, thumbnail traversal, SSRF refusal (policy function and through the API), the time
limit, micro-batching, and 200 concurrent requests with no error. A tiny random model, real
clip-art images (tests/image_fixtures.py).
"""

from __future__ import annotations

import http.client
import http.server
import io
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests  # in the test extra, with the serve extra: missing, these tests fail (never skip)
import torch
from PIL import Image
from serve_helpers import LiveServer
from tiny_models import TINY

import clipforge
from clipforge.cli import main as cli_main
from clipforge.serve.app import ServeOptions, check_bind, create_app, is_loopback_host
from clipforge.serve.errors import ApiError, ServeError
from clipforge.serve.service import Limits, SearchService, parse_labels
from clipforge.serve.urls import UrlPolicy, check_url, fetch_url, is_public_address
from clipforge.serve.worker import BatchingEncoder, EncoderBusy
from clipforge.tasks.search import SearchIndex, embed_image_queries, embed_text_queries

pytestmark = pytest.mark.filterwarnings("ignore:Palette images with Transparency")

TOKEN = "test-token-0123456789abcdef"
LIMITS = Limits(max_upload_bytes=200_000, max_pixels=4_000_000)
TEMPLATES = ["a photo of {}.", "{}"]
QUERIES = ["a red car", "chess", "a map of a country", "a flag", "flowers and ornaments"]


# ---- fixtures: a tiny model, an index of real clip-art, live servers ---------------------------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return clipforge.save(clipforge.ClipModel(TINY), tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """10 real clip-art images and a CSV giving captions to most of them."""
    from image_fixtures import corpus_sample

    d = tmp_path_factory.mktemp("photos")
    rows = ["image,caption"]
    for i, src in enumerate(corpus_sample(10)):
        shutil.copy(src, d / f"{i:02d}_{src.name}")
        rows.append(f"{i:02d}_{src.name}," + (f"clip art number {i}" if i % 3 else ""))
    (d / "items.csv").write_text("\n".join(rows) + "\n")
    return d


def _cli(args: list, capsys) -> tuple[int, str, str]:
    code = cli_main.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def index_dir(model_file, folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index") / "clipart.index"
    assert cli_main.main(["index", str(folder / "items.csv"), "--model", str(model_file), "--out", str(out),
                          "--workers", "0", "--shard-size", "4", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def loaded(model_file):
    return clipforge.load(model_file)


@pytest.fixture(scope="module")
def service(index_dir, loaded):
    model, preprocess, tokenizer = loaded
    s = SearchService(SearchIndex(index_dir), model, preprocess, tokenizer, model_name="tiny", templates=TEMPLATES,
                      limits=LIMITS, max_batch=16, max_wait=0.005)
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(service):
    with LiveServer(create_app(service, ServeOptions(timeout=20))) as live:
        yield live


@pytest.fixture(scope="module")
def authed(service):
    with LiveServer(create_app(service, ServeOptions(token=TOKEN, timeout=20))) as live:
        yield live


def _images(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def _ok(server: LiveServer) -> None:
    """The server is still serving."""
    r = requests.get(f"{server.url}/api/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def _error(response: requests.Response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"]
    for word in words:
        assert word in body["error"], (word, body["error"])
    return body


# ---- health, page, parity with `clipforge search` ----------------------------------------------------


def test_health_and_page(server, index_dir):
    h = requests.get(f"{server.url}/api/health", timeout=10).json()
    assert h["status"] == "ok" and h["items"] == len(SearchIndex(index_dir)) == 10 and h["model"] == "tiny"
    page = requests.get(f"{server.url}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    # Everything the page loads is served here: no CDN, no other origin.
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/static/") or s.startswith("data:") for s in sources), sources
    for s in sources:
        if s.startswith("/static/"):
            assert requests.get(server.url + s, timeout=10).status_code == 200
    assert not re.search(r"https?://", requests.get(f"{server.url}/static/app.js", timeout=10).text)
    assert not re.search(r"https?://", requests.get(f"{server.url}/static/app.css", timeout=10).text)


def _cli_rows(out: str) -> list[tuple[float, str]]:
    return [(float(s), p) for s, p in re.findall(r"^\s+\d+\s+(-?\d\.\d{4})\s+(\S.*)$", out, re.M)]


def test_text_search_matches_clipforge_search(server, index_dir, loaded, capsys):
    model, _, tokenizer = loaded
    index = SearchIndex(index_dir)
    # Sent at once, so the model worker encodes them in one batch; each must still match a lone query.
    with ThreadPoolExecutor(len(QUERIES)) as pool:
        answers = list(pool.map(lambda q: requests.get(f"{server.url}/api/search", params={"q": q, "k": 7}, timeout=30),
                                QUERIES))
    for query, answer in zip(QUERIES, answers):
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        expected = index.search(embed_text_queries(model, tokenizer, [query]), 7)
        assert [r["id"] for r in results] == expected.ids[0].tolist()
        assert [r["path"] for r in results] == [index.paths[i] for i in expected.ids[0]]
        np.testing.assert_allclose([r["score"] for r in results], expected.scores[0], atol=1e-5)
        assert all(r["thumb"] == f"/api/thumb/{r['id']}" for r in results)
        # ... and what the command prints (4 decimals).
        code, out, _ = _cli(["search", index_dir, query, "-k", 7], capsys)
        assert code == 0
        rows = _cli_rows(out)
        assert [p for _, p in rows] == [r["path"] for r in results]
        np.testing.assert_allclose([s for s, _ in rows], [r["score"] for r in results], atol=6e-5)


def test_captions_come_from_the_index(server, folder):
    results = requests.get(f"{server.url}/api/search", params={"q": "x", "k": 10}, timeout=10).json()["results"]
    by_name = {Path(r["path"]).name: r for r in results}
    assert len(by_name) == 10
    for name, r in by_name.items():
        i = int(name[:2])
        assert r.get("caption") == (f"clip art number {i}" if i % 3 else None), r


def test_image_search_matches_clipforge_search(server, index_dir, folder, loaded, capsys):
    model, preprocess, _ = loaded
    index = SearchIndex(index_dir)
    for path in _images(folder)[:3]:
        r = requests.post(f"{server.url}/api/search", files={"image": (path.name, path.read_bytes(), "image/png")},
                          data={"k": "5"}, timeout=30)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        expected = index.search(embed_image_queries(model, preprocess, [path]), 5)
        assert [x["id"] for x in results] == expected.ids[0].tolist()
        np.testing.assert_allclose([x["score"] for x in results], expected.scores[0], atol=1e-5)
        assert Path(results[0]["path"]).name == path.name and results[0]["score"] == pytest.approx(1.0, abs=1e-5)
        code, out, _ = _cli(["search", index_dir, "--image", path, "-k", 5], capsys)
        assert code == 0 and [p for _, p in _cli_rows(out)] == [x["path"] for x in results]


def test_more_like_an_item(server, index_dir):
    index = SearchIndex(index_dir)
    results = requests.get(f"{server.url}/api/search", params={"id": "3", "k": "4"}, timeout=10).json()["results"]
    expected = index.search(index.vectors[3], 4)
    assert [r["id"] for r in results] == expected.ids[0].tolist() and results[0]["id"] == 3


def test_k_larger_than_the_index_gives_every_item(server):
    results = requests.get(f"{server.url}/api/search", params={"q": "a", "k": "1000"}, timeout=10).json()["results"]
    assert len(results) == 10


def test_classify_uses_the_models_own_probabilities(server, folder, loaded):
    from clipforge.image import load_image
    from clipforge.tasks.zero_shot import build_classifier, probabilities

    model, preprocess, tokenizer = loaded
    path = _images(folder)[0]
    labels = ["a chess piece", "a map", "a flag", "an ornament"]
    for form in (json.dumps(labels), ", ".join(labels)):
        r = requests.post(f"{server.url}/api/classify", files={"image": (path.name, path.read_bytes())},
                          data={"labels": form}, timeout=30)
        assert r.status_code == 200, r.text
        got = r.json()["labels"]
        classifier = build_classifier(model, tokenizer, labels, TEMPLATES, progress=False)
        expected = probabilities(model, classifier, preprocess(load_image(path))[None])[0]
        assert sorted(x["label"] for x in got) == sorted(labels)
        probs = [x["prob"] for x in got]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)
        for x in got:
            assert x["prob"] == pytest.approx(float(expected[labels.index(x["label"])]), abs=1e-5)
    # The model's temperature, not a hard-coded 100: scale it and the probabilities follow.
    scale = model.logit_scale.exp().item()
    cos = np.array([x["score"] for x in got])
    np.testing.assert_allclose(probs, np.exp(scale * cos) / np.exp(scale * cos).sum(), atol=1e-5)


def test_thumbnails_of_indexed_items(server, index_dir):
    index = SearchIndex(index_dir)
    for row in (0, 9):
        r = requests.get(f"{server.url}/api/thumb/{row}", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        thumb = Image.open(io.BytesIO(r.content))
        original = Image.open(index.paths[row])
        assert max(thumb.size) <= 192 and thumb.size[0] / thumb.size[1] == pytest.approx(
            original.size[0] / original.size[1], rel=0.1)


# ---- bad input: 4xx naming the problem, and the server keeps serving ------------------------------------


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def test_bad_queries(server):
    url = f"{server.url}/api/search"
    cases = [
        ({}, "missing_query", "exactly one of"),
        ({"q": "   "}, "bad_parameter", "empty"),
        ({"q": "x" * 5000}, "bad_parameter", "limit"),
        ({"q": "cat", "k": "0"}, "bad_parameter", "k must be between"),
        ({"q": "cat", "k": "1001"}, "bad_parameter", "k must be between"),
        ({"q": "cat", "k": "ten"}, "bad_parameter", "k must be an integer"),
        ({"q": "cat", "k": "--3"}, "bad_parameter", "k must be an integer"),
        ({"q": "cat", "k": "-3"}, "bad_parameter", "k must be between"),
        ({"q": "cat", "k": "9" * 30}, "bad_parameter", "k must be an integer"),
        ({"q": "cat", "limit": "3"}, "unknown_parameter", "'limit'"),
        ({"q": "cat", "id": "2"}, "missing_query", "exactly one of"),
        ({"id": "two"}, "bad_id", "item number"),
        ({"id": "-1"}, "bad_id", "item number"),
    ]
    for params, code, words in cases:
        _error(requests.get(url, params=params, timeout=10), 400, code, words)
    _error(requests.get(url, params={"id": "10"}, timeout=10), 404, "no_such_item", "no item 10")
    _error(requests.get(f"{url}?q=a&q=b", timeout=10), 400, "bad_parameter", "more than once")
    _error(requests.get(f"{server.url}/api/health?verbose=1", timeout=10), 400, "unknown_parameter", "'verbose'")
    _error(requests.get(f"{server.url}/api/nothing", timeout=10), 404, "not_found", "/api/nothing")
    _error(requests.delete(url, timeout=10), 405, "method_not_allowed", "DELETE")
    _error(requests.get(f"{server.url}/api/classify", timeout=10), 405, "method_not_allowed")
    _ok(server)


def test_bad_uploads(server, folder):
    url = f"{server.url}/api/search"
    real = _images(folder)[4].read_bytes()  # a 1500x1500 PNG
    bomb = io.BytesIO()
    Image.new("1", (2500, 2500)).save(bomb, "PNG")  # 6.25 Mpx in a few kB: over the test limit of 4 Mpx
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    cases = [
        ({"image": ("notes.txt", b"hello, not an image")}, {}, 400, "not_an_image", "not an image"),
        ({"image": ("cut.png", real[: len(real) // 2])}, {}, 400, "truncated", "truncated"),
        ({"image": ("bomb.png", bomb.getvalue())}, {}, 413, "decompression_bomb", "max_pixels"),
        ({"image": ("empty.png", b"")}, {}, 400, "empty", "empty"),
        ({"image": ("drawing.eps", eps)}, {}, 400, "not_an_image", "PNG, JPEG"),
        ({}, {}, 400, "missing_image", "exactly one of"),
        ({"image": ("a.png", real)}, {"colour": "red"}, 400, "unknown_parameter", "'colour'"),
        ({"image": ("a.png", real)}, {"k": "many"}, 400, "bad_parameter", "k must be an integer"),
        ({"image": ("a.png", real), "k": ("k.txt", b"3")}, {}, 400, "bad_parameter", "must be text"),
        ({}, {"image": "not a file"}, 400, "bad_parameter", "file upload"),
    ]
    assert len(bomb.getvalue()) < LIMITS.max_upload_bytes
    for files, data, status, code, words in cases:
        _error(requests.post(url, files=files or None, data=data or None, timeout=30), status, code, words)
        _ok(server)
    _error(requests.post(url, json={"image": "x"}, timeout=10), 415, "unsupported_media_type", "multipart/form-data")
    _error(requests.post(url, data=b"this is not multipart at all", headers={"Content-Type": "multipart/form-data; boundary=x"},
                         timeout=10), 400, "bad_form")
    _ok(server)


def test_upload_over_the_limit_is_413(server):
    url = f"{server.url}/api/search"
    too_big = _png((10, 10)) + b"\0" * (LIMITS.max_upload_bytes + 70_000)
    _error(requests.post(url, files={"image": ("big.png", too_big)}, timeout=30), 413, "too_large", "upload limit")

    def chunks():  # no Content-Length: counted while reading
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n\r\n"
        for _ in range(40):
            yield b"\0" * 10_000
        yield b"\r\n--b--\r\n"

    r = requests.post(url, data=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=30)
    _error(r, 413, "too_large", "upload limit")
    # Just under the limit is fine (and then it is simply not a valid image).
    _error(requests.post(url, files={"image": ("ok.png", b"\0" * (LIMITS.max_upload_bytes - 1000))}, timeout=30),
           400, "not_an_image")
    _ok(server)


def test_bad_labels(server, folder):
    url = f"{server.url}/api/classify"
    image = {"image": ("a.png", _images(folder)[0].read_bytes())}
    cases = [
        ({}, "bad_labels", "missing"),
        ({"labels": " , ,"}, "bad_labels", "no labels"),
        ({"labels": "[1, 2]"}, "bad_labels", "list of strings"),
        ({"labels": "[\"cat\""}, "bad_labels", "not a valid JSON list"),
        ({"labels": "cat, dog, cat"}, "bad_labels", "duplicate"),
        ({"labels": ",".join(f"l{i}" for i in range(201))}, "bad_labels", "limit of 200"),
        ({"labels": "cat", "top": "3"}, "unknown_parameter", "'top'"),
    ]
    for data, code, words in cases:
        _error(requests.post(url, files=image, data=data, timeout=30), 400, code, words)
    _error(requests.post(url, data={"labels": "cat,dog"}, timeout=30), 400, "missing_image")
    _ok(server)


def test_parse_labels():
    assert parse_labels('["a cat", " a dog "]', LIMITS) == ["a cat", "a dog"]
    assert parse_labels("a cat, a dog,,", LIMITS) == ["a cat", "a dog"]
    assert parse_labels("just one", LIMITS) == ["just one"]
    with pytest.raises(ApiError, match="longer than"):
        parse_labels("x" * 201, LIMITS)


# ---- traversal: thumbnails by item number only, no client path is ever opened -----------------------------


def _raw_get(server: LiveServer, target: str, headers: dict | None = None) -> tuple[int, bytes]:
    """GET exactly `target` (no client-side normalisation of ../ or %2F)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_host=True)
        conn.putheader("Host", f"127.0.0.1:{server.port}")
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("target", [
    "/api/thumb/../../../../etc/passwd",
    "/api/thumb/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/thumb/%2Fetc%2Fpasswd",
    "/api/thumb//etc/passwd",
    "/api/thumb/~root",
    "/api/thumb/-1",
    "/api/thumb/1e3",
    "/api/thumb/0x1",
    "/api/thumb/1.0",
    "/api/thumb/%201",
    "/api/thumb/%EF%BC%91",  # a full-width digit one: isdigit() is True for it, the check is not fooled
    "/api/thumb/99999999999999999999",
    "/api/thumb/10",
    "/api/thumb/1?path=/etc/passwd",
    "/api/thumb/1?size=5000",
    "/static/../serve/app.py",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/app.js/../../../etc/passwd",
    "/..%2f..%2fetc%2fpasswd",
])
def test_thumb_traversal_is_refused(server, target, monkeypatch):
    import builtins

    opened = []
    real_open = builtins.open

    def watching_open(file, *args, **kwargs):  # noqa: ANN001
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", watching_open)
    status, body = _raw_get(server, target)
    assert 400 <= status < 500, (target, status, body[:200])
    assert b"root:" not in body and b"import" not in body
    assert "error" in json.loads(body)
    assert not [f for f in opened if "passwd" in f or f.endswith("app.py")], opened
    _ok(server)


# ---- the bearer token, the Host check, starting safely -----------------------------------------------


def test_token_is_required_on_every_api_call(authed):
    api = ["/api/health", "/api/search?q=cat", "/api/thumb/0"]
    for path in api:
        r = requests.get(authed.url + path, timeout=10)
        _error(r, 401, "unauthorized", "Bearer", "missing")
        assert r.headers["www-authenticate"].startswith("Bearer")
        for header in (f"Bearer {TOKEN[:-1]}x", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:8]}"):
            _error(requests.get(authed.url + path, headers={"Authorization": header}, timeout=10), 401, "unauthorized")
        r = requests.get(authed.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert r.status_code == 200, r.text
    r = requests.post(f"{authed.url}/api/classify", files={"image": ("a.png", _png((8, 8)))}, data={"labels": "a"},
                      timeout=10)
    _error(r, 401, "unauthorized")
    # The page itself holds no data: it loads without the token and asks for it.
    assert requests.get(authed.url + "/", timeout=10).status_code == 200


def test_host_header_must_name_this_server(server):
    # A page on another site that rebinds its DNS name to 127.0.0.1 sends its own name as Host.
    for host in ("evil.example", "evil.example:80", f"attacker.test:{server.port}", "127.0.0.1.nip.io"):
        status, body = _raw_get_host(server, "/api/health", host)
        assert status == 400 and json.loads(body)["code"] == "bad_host", (host, body)
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", f"[::1]:{server.port}", "localhost"):
        status, _ = _raw_get_host(server, "/api/health", host)
        assert status == 200, host


def _raw_get_host(server: LiveServer, target: str, host: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_non_loopback_host_needs_a_token():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, None)
        assert is_loopback_host(host)
    for host in ("0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "8.8.8.8"):
        assert not is_loopback_host(host)
        with pytest.raises(ServeError, match="without --token"):
            check_bind(host, None)
        check_bind(host, TOKEN)
    with pytest.raises(ServeError, match="at least 16"):
        check_bind("0.0.0.0", "short")
    with pytest.raises(ServeError, match="without spaces"):
        check_bind("0.0.0.0", "a token with spaces in it")


def test_cli_refuses_a_public_host_without_token(index_dir, capsys, monkeypatch):
    monkeypatch.delenv("CLIPFORGE_SERVE_TOKEN", raising=False)
    code, out, err = _cli(["serve", index_dir, "--host", "0.0.0.0"], capsys)
    assert code == 1 and "refusing to listen on '0.0.0.0' without --token" in err and not out


def test_missing_extra_gives_a_one_line_hint(monkeypatch):
    for name in [m for m in sys.modules if m == "clipforge.serve.app" or m.startswith("starlette")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "starlette", None)
    with pytest.raises(ServeError, match=re.escape("pip install 'clipforge[serve]'")):
        import clipforge.serve.app  # noqa: F401


def test_only_the_serve_app_imports_the_http_libraries():
    code = ("import sys, clipforge.cli.main as m; m.build_parser(); import clipforge.tasks.search, clipforge.serve, "
            "clipforge.serve.service, clipforge.serve.urls; "
            "print(sorted(x for x in ('starlette', 'uvicorn', 'multipart', 'fastapi') if x in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- SSRF: image_url ------------------------------------------------------------------------------------


def test_public_address_policy():
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700::1111", "1.1.1.1"):
        assert is_public_address(address), address
    for address in ("127.0.0.1", "127.1.2.3", "::1", "0.0.0.0", "::", "10.1.2.3", "172.16.0.1", "192.168.0.1",
                    "169.254.169.254", "fe80::1", "fc00::1", "fd12::1", "100.64.0.1", "224.0.0.1", "ff02::1",
                    "255.255.255.255", "240.0.0.1", "192.0.0.1", "198.18.0.1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
                    "::127.0.0.1", "2002:7f00:1::", "64:ff9b::7f00:1", "192.88.99.1", "fe80::1%1"):
        assert not is_public_address(address.split("%")[0] if "%" in address else address), address


def _resolver(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise ApiError(400, f"cannot resolve host {host!r}", "url_refused")
        return table[host]
    return resolve


def test_check_url_refuses_what_is_not_public_http():
    policy = UrlPolicy(resolve=_resolver({
        "images.example": ["93.184.216.34"], "both.example": ["93.184.216.34", "10.0.0.7"],
        "rebind.example": ["127.0.0.1"], "v6local.example": ["::1"], "metadata.example": ["169.254.169.254"],
        "xn--bcher-kva.example": ["93.184.216.35"],
    }))
    ok = check_url("https://images.example/cat.png?size=2", policy)
    assert (ok.scheme, ok.host, ok.port, ok.address, ok.target) == ("https", "images.example", 443, "93.184.216.34",
                                                                     "/cat.png?size=2")
    assert check_url("http://93.184.216.34:8080/x", policy).port == 8080
    assert check_url("http://bücher.example/", policy).address == "93.184.216.35"  # IDNA
    refused = {
        "http://127.0.0.1/": "loopback", "http://127.0.0.1:8765/api/health": "loopback", "http://[::1]/": "loopback",
        "http://169.254.169.254/latest/meta-data/": "link-local", "http://[fe80::1]/": "link-local",
        "http://10.0.0.1/": "private", "http://192.168.1.1/": "private", "http://0.0.0.0/": "unspecified",
        "http://[::ffff:127.0.0.1]/": "embeds IPv4", "http://rebind.example/": "resolves to 127.0.0.1",
        "http://v6local.example/": "resolves to ::1", "http://metadata.example/": "169.254.169.254",
        "http://both.example/": "10.0.0.7", "file:///etc/passwd": "only http and https",
        "ftp://images.example/x": "only http and https", "gopher://images.example/": "only http and https",
        "//images.example/x": "without a scheme", "http://user:pw@images.example/": "credentials",
        "http:///x": "no host", "http://images.example:99999/": "not a valid URL",
        "http://images.example/a b": "control characters", "http://unknown.example/": "cannot resolve",
    }
    for url, words in refused.items():
        with pytest.raises(ApiError, match=re.escape(words)) as e:
            check_url(url, policy)
        assert e.value.status == 400 and e.value.code == "url_refused", url


def test_check_url_resolves_numeric_forms_of_loopback():
    # The real resolver: inet_aton's shorthand and decimal forms of 127.0.0.1 are still loopback.
    for url in ("http://127.1/", "http://2130706433/", "http://0x7f000001/", "http://localhost/"):
        with pytest.raises(ApiError, match="not a public address"):
            check_url(url)


class _Site(http.server.BaseHTTPRequestHandler):
    """A local web server for the fetch tests; `hits` counts the requests it got."""

    hits: list[str] = []
    image = b""

    def do_GET(self) -> None:  # noqa: N802
        _Site.hits.append(self.path)
        port = self.server.server_address[1]
        routes = {
            "/cat.png": (200, {"Content-Type": "image/png"}, _Site.image),
            "/to-cat": (302, {"Location": "/cat.png"}, b""),
            "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
            "/to-private": (301, {"Location": "http://10.0.0.1/"}, b""),
            "/to-v6-loopback": (307, {"Location": f"http://[::1]:{port}/cat.png"}, b""),
            "/to-file": (302, {"Location": "file:///etc/passwd"}, b""),
            "/loop": (302, {"Location": "/loop"}, b""),
            "/big": (200, {"Content-Type": "image/png", "Content-Length": str(10**7)}, b"\0" * 1000),
            "/big-unannounced": (200, {"Content-Type": "image/png", "Content-Length": None}, b"\0" * 300_000),
            "/missing": (404, {}, b"no"),
        }
        if self.path == "/slow":
            self.send_response(200)
            self.end_headers()
            for _ in range(50):
                try:
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)
            return
        status, headers, body = routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for k, v in headers.items():
            if v is not None:  # None: no Content-Length, the body ends when the connection closes
                self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


@pytest.fixture(scope="module")
def site(folder):
    _Site.image = _images(folder)[1].read_bytes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _local_policy(**kwargs) -> UrlPolicy:
    """The real policy, except that this one loopback address counts as 'public' (a stand-in for a web site)."""
    return UrlPolicy(allow_address=lambda ip: str(ip) == "127.0.0.1" or is_public_address(ip), **kwargs)


def test_fetch_rechecks_every_redirect(site):
    policy = _local_policy(max_bytes=200_000, timeout=3)
    assert fetch_url(f"{site}/cat.png", policy) == _Site.image
    assert fetch_url(f"{site}/to-cat", policy) == _Site.image
    cases = {
        "/to-metadata": (400, "169.254.169.254"), "/to-private": (400, "10.0.0.1"), "/to-v6-loopback": (400, "::1"),
        "/to-file": (400, "only http and https"), "/loop": (400, "more than 3 redirects"),
        "/big": (413, "limit"), "/big-unannounced": (413, "limit"), "/missing": (502, "HTTP 404"),
    }
    for path, (status, words) in cases.items():
        started = time.monotonic()
        with pytest.raises(ApiError, match=re.escape(words)) as e:
            fetch_url(site + path, policy)
        assert e.value.status == status, (path, e.value.message)
        assert time.monotonic() - started < 2, path  # refused before any connection to the refused address
    started = time.monotonic()
    with pytest.raises(ApiError, match="longer than 1 s") as e:
        fetch_url(f"{site}/slow", _local_policy(timeout=1))
    assert e.value.status == 504 and time.monotonic() - started < 2.5


def test_image_url_is_refused_unless_allowed(server, site):
    _Site.hits.clear()
    for method in ("get", "post"):
        kwargs = {"params": {"image_url": f"{site}/cat.png"}} if method == "get" else {"data": {"image_url": f"{site}/cat.png"}}
        _error(getattr(requests, method)(f"{server.url}/api/search", timeout=10, **kwargs), 400, "urls_not_allowed",
               "--allow-urls")
    _error(requests.post(f"{server.url}/api/classify", data={"image_url": f"{site}/cat.png", "labels": "a,b"},
                         timeout=10), 400, "urls_not_allowed")
    assert _Site.hits == []  # nothing was fetched


def test_allow_urls_still_refuses_local_addresses(service, site):
    port = site.rsplit(":", 1)[1]
    with LiveServer(create_app(service, ServeOptions(allow_urls=True))) as live:
        _Site.hits.clear()
        for url in (f"{site}/cat.png", f"http://localhost:{port}/cat.png", f"http://[::1]:{port}/cat.png",
                    f"http://127.1:{port}/cat.png", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x.png",
                    "http://[fd00::1]/x.png", "file:///etc/passwd", f"http://{live.url[7:]}/api/health"):
            r = requests.get(f"{live.url}/api/search", params={"image_url": url}, timeout=10)
            _error(r, 400, "url_refused", "refused")
            r = requests.post(f"{live.url}/api/search", data={"image_url": url}, timeout=10)
            _error(r, 400, "url_refused")
        assert _Site.hits == []
        _ok(live)


def test_allowed_image_url_searches_like_an_upload(service, site, server):
    # With a policy that treats the local test site as public, image_url gives the upload's results.
    with LiveServer(create_app(service, ServeOptions(allow_urls=True, url_policy=_local_policy(max_bytes=200_000)))) as live:
        by_url = requests.post(f"{live.url}/api/search", data={"image_url": f"{site}/to-cat", "k": "4"}, timeout=30)
        by_upload = requests.post(f"{server.url}/api/search", files={"image": ("cat.png", _Site.image)}, data={"k": "4"},
                                  timeout=30)
        assert by_url.status_code == 200, by_url.text
        assert [x["id"] for x in by_url.json()["results"]] == [x["id"] for x in by_upload.json()["results"]]
        np.testing.assert_allclose([x["score"] for x in by_url.json()["results"]],
                                   [x["score"] for x in by_upload.json()["results"]], atol=1e-6)
        r = requests.post(f"{live.url}/api/classify", data={"image_url": f"{site}/cat.png", "labels": "a,b"}, timeout=30)
        assert r.status_code == 200 and len(r.json()["labels"]) == 2
        _error(requests.get(f"{live.url}/api/search", params={"image_url": f"{site}/big"}, timeout=30), 413, "too_large")
        r = requests.post(f"{live.url}/api/search", files={"image": ("a.png", _Site.image)},
                          data={"image_url": f"{site}/cat.png"}, timeout=30)
        _error(r, 400, "missing_image", "exactly one of")


# ---- time limit, overload, micro-batches, 200 concurrent requests --------------------------------------------


def test_request_time_limit_answers_504_and_skips_the_work(service):
    with LiveServer(create_app(service, ServeOptions(timeout=0.5))) as live:
        blocker = service.encoder.call(lambda: time.sleep(2.0))  # the model is busy for 2 s
        time.sleep(0.1)  # ... in a batch of its own
        skipped = service.encoder.stats()["skipped"]
        started = time.monotonic()
        r = requests.get(f"{live.url}/api/search", params={"q": "a red car"}, timeout=10)
        _error(r, 504, "timeout", "0.5 s limit")
        assert time.monotonic() - started < 1.5
        blocker.result(10)
        _ok(live)
        time.sleep(0.1)
        assert service.encoder.stats()["skipped"] == skipped + 1  # the abandoned query was never encoded
        assert requests.get(f"{live.url}/api/search", params={"q": "a red car"}, timeout=10).status_code == 200


def test_full_queue_is_503(loaded):
    model, _, tokenizer = loaded
    encoder = BatchingEncoder(model, tokenizer, max_queue=2)
    gate = threading.Event()
    try:
        encoder.call(gate.wait)
        time.sleep(0.2)  # the worker holds the gate job; the queue is empty again
        encoder.encode_text("a")
        encoder.encode_text("b")
        with pytest.raises(EncoderBusy, match="2 requests are already waiting"):
            encoder.encode_text("c")
    finally:
        gate.set()
        encoder.close()


def test_micro_batches_give_the_same_vectors(loaded):
    from clipforge.encoding import encode_texts

    model, _, tokenizer = loaded
    texts = [f"text number {i} " * (i % 5 + 1) for i in range(40)]
    with BatchingEncoder(model, tokenizer, max_batch=16, max_wait=0.05) as encoder:
        gate = threading.Event()
        encoder.call(gate.wait)
        time.sleep(0.2)  # the worker now waits on the gate, in a batch of its own
        futures = [encoder.encode_text(t) for t in texts]  # queued behind the gate: batches of 16, 16, 8
        gate.set()
        vectors = np.stack([f.result(30) for f in futures])
        stats = encoder.stats()
    assert stats["items"] == 40 and stats["batches"] == 3 and stats["largest_batch"] == 16
    alone = np.concatenate([encode_texts(model, tokenizer, [t]).numpy() for t in texts])
    np.testing.assert_allclose(vectors, alone, atol=1e-5)


def test_200_concurrent_requests_without_error(server, folder, service):
    images = [p.read_bytes() for p in _images(folder)]
    before = service.encoder.stats()
    barrier = threading.Barrier(200, timeout=60)

    def one(i: int) -> tuple[int, str]:
        session = requests.Session()
        barrier.wait()
        kind = i % 4
        if kind == 0:
            r = session.get(f"{server.url}/api/search", params={"q": QUERIES[i % len(QUERIES)], "k": 5}, timeout=120)
        elif kind == 1:
            r = session.post(f"{server.url}/api/search", files={"image": ("q.png", images[i % len(images)])},
                             data={"k": "5"}, timeout=120)
        elif kind == 2:
            r = session.post(f"{server.url}/api/classify", files={"image": ("q.png", images[i % len(images)])},
                             data={"labels": "a map, a flag, chess"}, timeout=120)
        else:
            r = session.get(f"{server.url}/api/thumb/{i % 10}", timeout=120)
        return r.status_code, r.text[:200] if r.status_code != 200 else ""

    with ThreadPoolExecutor(200) as pool:
        answers = list(pool.map(one, range(200)))
    errors = [a for a in answers if a[0] != 200]
    assert errors == [], errors[:5]
    after = service.encoder.stats()
    encoded = after["items"] - before["items"]
    assert encoded == 150  # 50 texts + 100 images
    assert after["batches"] - before["batches"] < encoded  # encoded in micro-batches, not one by one
    _ok(server)


def test_cli_hands_its_options_to_the_server(index_dir, model_file, tmp_path, capsys, monkeypatch):
    import clipforge.serve.app as app_module

    captured = {}

    def fake_run_server(service, host, port, options, *, log_level, on_ready):
        captured.update(service=service, host=host, port=port, options=options, log_level=log_level)
        on_ready(f"http://{host}:{port}/")
        service.close()

    monkeypatch.setattr(app_module, "run_server", fake_run_server)
    token_file = tmp_path / "token.txt"
    token_file.write_text(TOKEN + "\n")
    code, out, _ = _cli(["serve", index_dir, "--host", "0.0.0.0", "--port", 9999, "--token-file", token_file,
                         "--max-upload-mb", "1.5", "--timeout", "7", "--allow-urls", "--templates", "simple",
                         "--max-batch", "4", "--log-level", "warning"], capsys)
    assert code == 0 and "10 items" in out and "http://0.0.0.0:9999/" in out and TOKEN not in out
    service, options = captured["service"], captured["options"]
    assert (captured["host"], captured["port"], captured["log_level"]) == ("0.0.0.0", 9999, "warning")
    assert options.token == TOKEN and options.timeout == 7 and options.allow_urls
    assert service.limits.max_upload_bytes == int(1.5 * 1024 * 1024) and service.encoder.max_batch == 4
    assert service.model_name == str(model_file) and len(service.templates) == 7
    # The token can also come from the environment (kept out of the process list).
    monkeypatch.setenv("CLIPFORGE_SERVE_TOKEN", TOKEN)
    code, out, _ = _cli(["serve", index_dir, "--host", "0.0.0.0"], capsys)
    assert code == 0 and captured["options"].token == TOKEN and not captured["options"].allow_urls
    # The index's model is checked as `clipforge search` checks it.
    torch.manual_seed(1)
    other = clipforge.save(clipforge.ClipModel(TINY), tmp_path / "other.safetensors")
    code, _, err = _cli(["serve", index_dir, "--model", other], capsys)
    assert code == 1 and "was built with model" in err
