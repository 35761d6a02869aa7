"""Weights resolution and download, against a fake Hugging Face cache and loopback HTTP servers.

Nothing leaves the machine: servers bind 127.0.0.1 on a free port, serve from a thread that stops
itself after a deadline, and offline tests make any socket use fail loudly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

import pytest

from clipforge import hub_cache
from clipforge.hub_cache import (
    ChecksumMismatchError,
    DownloadError,
    WeightsNotFoundError,
    hf_repo_weight_files,
    resolve_hf_repo_dir,
    resolve_weights_file,
    verified_download,
)
from clipforge.model_zoo import WeightsRecord, get_weights

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PAYLOAD = bytes(range(256)) * 1000  # 256 kB, several read chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


# ---- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An isolated environment: HOME, HF and clipforge caches under tmp_path, online, no mirrors."""
    for var in (
        "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CLIPFORGE_OFFLINE", "HF_ENDPOINT", "HF_HOME",
        "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME", "CLIPFORGE_CACHE",
    ):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    paths = {"home": tmp_path / "home", "hf": tmp_path / "hf-hub", "cf": tmp_path / "clipforge"}
    monkeypatch.setenv("HOME", str(paths["home"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(paths["hf"]))
    monkeypatch.setenv("CLIPFORGE_CACHE", str(paths["cf"]))
    return paths


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every attempt to open a connection or resolve a name is recorded and fails."""
    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args[:2]))
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; a developer's shell must not flip these tests.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def make_hf_cache(root: Path, hub_id: str, files: dict[str, bytes], *, symlinks: bool = True) -> Path:
    """Lay files out as huggingface_hub does: blobs/<etag>, snapshots/<commit>/<name> -> blob, refs/main."""
    repo = root / ("models--" + hub_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for name, data in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if symlinks:
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            target.symlink_to(blob)
        else:
            target.write_bytes(data)
    return snapshot


Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


@contextmanager
def loopback_server(handle: Handler, *, lifetime_s: float = 20.0) -> Iterator[str]:
    """Serve `handle` for GET and HEAD on 127.0.0.1; yields the base URL; stops at exit or after lifetime_s."""

    class _Handler(http.server.BaseHTTPRequestHandler):
        timeout = 5  # a stuck client cannot hold a handler thread forever

        def do_GET(self) -> None:
            handle(self)

        def do_HEAD(self) -> None:
            handle(self)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    watchdog = threading.Timer(lifetime_s, server.shutdown)  # stops by itself if a test hangs
    watchdog.daemon = True
    thread.start()
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve_bytes(data: bytes, *, cut_after: Optional[int] = None) -> Handler:
    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command == "GET":
            h.wfile.write(data if cut_after is None else data[:cut_after])
            h.wfile.flush()
        h.close_connection = True  # with cut_after: the client sees EOF before Content-Length

    return handle


def fake_hub(repos: dict[str, dict[str, bytes]]) -> Handler:
    """The few endpoints huggingface_hub uses to fetch files: resolve, revision info, tree listing."""

    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        parts = h.path.split("?")[0].strip("/").split("/")
        body: Optional[bytes] = None
        headers = {"X-Repo-Commit": COMMIT}
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
            files = repos.get("/".join(parts[2:4]), {})
            tree = [
                {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                for name, data in files.items()
            ]
            body = json.dumps(tree).encode()
        elif parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "revision":
            repo = "/".join(parts[2:4])
            siblings = [{"rfilename": n} for n in repos.get(repo, {})]
            body = json.dumps({"id": repo, "sha": COMMIT, "siblings": siblings}).encode()
        elif len(parts) >= 5 and parts[2] == "resolve":
            body = repos.get("/".join(parts[:2]), {}).get("/".join(parts[4:]))
            if body is not None:
                headers["ETag"] = f'"{hashlib.sha256(body).hexdigest()}"'
        if body is None:
            h.send_response(404)
            headers["X-Error-Code"] = "EntryNotFound"
            body = b""
        else:
            h.send_response(200)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            h.send_header(key, value)
        h.end_headers()
        if h.command == "GET":
            h.wfile.write(body)

    return handle


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def url_record(url: str, sha256: Optional[str]) -> WeightsRecord:
    """OpenAI's ViT-B-32 record pointed at a loopback URL, without a hub repo."""
    return dataclasses.replace(get_weights("ViT-B-32", "openai"), url=url, sha256=sha256, hf_hub_id=None)


# ---- environment -----------------------------------------------------------------------------------


def test_offline_and_cache_dirs_follow_env(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    assert not hub_cache.is_offline()
    for var in ("HF_HUB_OFFLINE", "CLIPFORGE_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
        assert hub_cache.is_offline()
        monkeypatch.delenv(var)
    assert hub_cache.default_cache_dir() == env["cf"]
    assert hub_cache.hf_hub_cache_dir() == env["hf"]
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(env["home"] / "hfhome"))
    assert hub_cache.hf_hub_cache_dir() == env["home"] / "hfhome" / "hub"


# ---- resolution from caches ------------------------------------------------------------------------


@pytest.mark.parametrize("symlinks", [True, False])
def test_resolves_from_fake_hf_cache_offline(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, no_network: list[str], symlinks: bool
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    record = get_weights("ViT-B-32", "laion2b_s34b_b79k")
    make_hf_cache(env["hf"], record.hf_hub_id, {"open_clip_pytorch_model.bin": b"pickle"}, symlinks=symlinks)
    path = resolve_weights_file(record)
    assert path.read_bytes() == b"pickle" and COMMIT in str(path)
    # The safetensors file is preferred once it is there too.
    make_hf_cache(env["hf"], record.hf_hub_id, {"open_clip_model.safetensors": b"safe"}, symlinks=symlinks)
    assert resolve_weights_file(record).name == "open_clip_model.safetensors"
    assert no_network == []


def test_hf_home_is_honoured(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, no_network: list[str]) -> None:
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(env["home"] / "hf-home"))
    record = get_weights("ViT-H-14", "laion2b_s32b_b79k")
    make_hf_cache(env["home"] / "hf-home" / "hub", record.hf_hub_id, {"open_clip_model.safetensors": b"h14"})
    assert resolve_weights_file(record, offline=True).read_bytes() == b"h14"
    assert no_network == []


def test_offline_nothing_cached_is_one_clear_error(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    record = get_weights("ViT-L-14", "openai")
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights_file(record)
    error = info.value
    message = str(error)
    assert isinstance(error, FileNotFoundError)
    for needle in (
        "ViT-L-14-quickgelu", "'openai'", "timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors",
        "ViT-L-14.pt", record.sha256, "HF_HOME", "HF_HUB_OFFLINE=1", "clipforge.load", "hf download",
        str(env["cf"] / "ViT-L-14.pt"), str(env["home"] / ".cache" / "clip" / "ViT-L-14.pt"),
        str(env["hf"] / "models--timm--vit_large_patch14_clip_224.openai"),
    ):  # fmt: skip
        assert needle in message, needle
    assert "Traceback" not in message
    assert error.__cause__ is None and error.__context__ is None
    assert no_network == []


def test_clipforge_cache_file_is_verified_and_stamped(env: dict[str, Path], no_network: list[str]) -> None:
    record = url_record("http://127.0.0.1:9/models/ViT-B-32.pt", PAYLOAD_SHA)
    good = env["cf"] / "ViT-B-32.pt"
    good.parent.mkdir(parents=True)
    good.write_bytes(PAYLOAD)
    assert resolve_weights_file(record, offline=True) == good
    assert (env["cf"] / "ViT-B-32.pt.verified").read_text().split()[0] == PAYLOAD_SHA
    assert resolve_weights_file(record, offline=True) == good  # second time: the stamp, not a re-hash

    good.write_bytes(b"corrupt")  # new size/mtime: the stamp no longer applies
    with pytest.warns(UserWarning, match="sha256"), pytest.raises(WeightsNotFoundError):
        resolve_weights_file(record, offline=True)
    assert no_network == []


def test_explicit_cache_dir_and_openai_download_dir(env: dict[str, Path], no_network: list[str]) -> None:
    record = url_record("http://127.0.0.1:9/models/ViT-B-32.pt", PAYLOAD_SHA)
    legacy = env["home"] / ".cache" / "clip" / "ViT-B-32.pt"  # where clip.load() / open_clip put it
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(PAYLOAD)
    assert resolve_weights_file(record, offline=True) == legacy
    mine = env["home"] / "mine"
    with pytest.raises(WeightsNotFoundError, match=str(mine / "ViT-B-32.pt")):
        resolve_weights_file(record, cache_dir=mine, offline=True)


# ---- verified_download -----------------------------------------------------------------------------


def test_verified_download_correct_sha(tmp_path: Path) -> None:
    dest = tmp_path / "dl" / "model.pt"
    with loopback_server(serve_bytes(PAYLOAD)) as base:
        assert verified_download(f"{base}/model.pt", dest, PAYLOAD_SHA, timeout=5, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.pt"]  # no temporary left


def test_verified_download_wrong_sha_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "model.pt"
    with loopback_server(serve_bytes(PAYLOAD)) as base, pytest.raises(ChecksumMismatchError) as info:
        verified_download(f"{base}/model.pt", dest, "ab" * 32, timeout=5, progress=False)
    assert "ab" * 32 in str(info.value) and PAYLOAD_SHA in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_leaves_no_partial_file(tmp_path: Path) -> None:
    dest = tmp_path / "model.pt"
    with loopback_server(serve_bytes(PAYLOAD, cut_after=10_000)) as base:
        with pytest.raises(DownloadError, match="10000 of 256000"):
            verified_download(f"{base}/model.pt", dest, PAYLOAD_SHA, timeout=5, progress=False)
        assert list(tmp_path.iterdir()) == []
        # An existing file is only ever replaced by a complete, verified one.
        dest.write_bytes(b"previous")
        with pytest.raises(DownloadError):
            verified_download(f"{base}/model.pt", dest, None, timeout=5, progress=False)
    assert dest.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [dest]


# ---- downloading through resolve_weights_file ------------------------------------------------------


def test_resolve_downloads_from_url_then_finds_it_offline(env: dict[str, Path]) -> None:
    with loopback_server(serve_bytes(PAYLOAD)) as base:
        record = url_record(f"{base}/clip/models/{PAYLOAD_SHA}/ViT-B-32.pt", PAYLOAD_SHA)
        path = resolve_weights_file(record, offline=False)
    assert path == env["cf"] / "ViT-B-32.pt" and path.read_bytes() == PAYLOAD
    assert resolve_weights_file(record, offline=True) == path


def test_resolve_download_checksum_mismatch_is_raised(env: dict[str, Path]) -> None:
    with loopback_server(serve_bytes(PAYLOAD)) as base:
        record = url_record(f"{base}/ViT-B-32.pt", "cd" * 32)
        with pytest.raises(ChecksumMismatchError, match="cd" * 32):
            resolve_weights_file(record, offline=False)
    assert not (env["cf"] / "ViT-B-32.pt").exists()


def test_unreachable_url_is_one_clear_error(env: dict[str, Path]) -> None:
    url = f"http://127.0.0.1:{free_port()}/ViT-B-32.pt"
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights_file(url_record(url, PAYLOAD_SHA), offline=False)
    message = str(info.value)
    # One short probe finds the server unreachable: no retries, the reason and how to provide the file.
    host = url.split("/")[2]
    assert f"cannot reach {host}" in message and "nothing was downloaded" in message
    assert url in message and "\n  - download `curl -L -o" in message


def test_a_failing_download_is_named(env: dict[str, Path]) -> None:
    def not_found(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_error(404)

    with loopback_server(not_found) as base:
        url = f"{base}/ViT-B-32.pt"
        with pytest.raises(WeightsNotFoundError) as info:
            resolve_weights_file(url_record(url, PAYLOAD_SHA), offline=False)
    message = str(info.value)
    assert "Downloading failed" in message and url in message and "404" in message


def test_resolve_downloads_from_fake_hub(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, hub_online: None
) -> None:
    record = get_weights("ViT-B-32", "laion2b_s34b_b79k")
    # Only the pickle is on this "hub": the safetensors 404 must fall through to it.
    with loopback_server(fake_hub({record.hf_hub_id: {"open_clip_pytorch_model.bin": PAYLOAD}})) as base:
        monkeypatch.setenv("HF_ENDPOINT", base)
        path = resolve_weights_file(record, offline=False)
    assert path.read_bytes() == PAYLOAD and str(path).startswith(str(env["hf"]))
    assert resolve_weights_file(record, offline=True) == path


# ---- transformers-format repos ---------------------------------------------------------------------


def test_hf_repo_dir_from_cache(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, no_network: list[str]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_id = "openai/clip-vit-large-patch14"
    snapshot = make_hf_cache(env["hf"], hub_id, {"config.json": b"{}", "model.safetensors": b"w"})
    assert resolve_hf_repo_dir(hub_id) == snapshot
    assert hf_repo_weight_files(snapshot) == [snapshot / "model.safetensors"]
    assert no_network == []


def test_hf_repo_dir_sharded(env: dict[str, Path]) -> None:
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    files = {"config.json": b"{}", "model.safetensors.index.json": json.dumps(index).encode()}
    hub_id = "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"
    snapshot = make_hf_cache(env["hf"], hub_id, files)
    assert hf_repo_weight_files(snapshot) == []  # shards missing
    make_hf_cache(env["hf"], hub_id, {name: b"s" for name in index["weight_map"].values()})
    assert [p.name for p in hf_repo_weight_files(snapshot)] == sorted(index["weight_map"].values())
    assert resolve_hf_repo_dir(hub_id, offline=True) == snapshot


def test_hf_repo_dir_missing_weights_says_what_and_where(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    monkeypatch.setenv("CLIPFORGE_OFFLINE", "1")
    hub_id = "openai/clip-vit-large-patch14"
    snapshot = make_hf_cache(env["hf"], hub_id, {"config.json": b"{}", "tokenizer.json": b"{}"})
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_hf_repo_dir(hub_id)
    message = str(info.value)
    for needle in (hub_id, "model.safetensors", str(snapshot), "HF_HOME", "CLIPFORGE_OFFLINE=1", "hf download"):
        assert needle in message, needle
    assert "missing config.json" not in message  # it is there; only the weights are missing
    with pytest.raises(WeightsNotFoundError, match="missing config.json and model.safetensors"):
        resolve_hf_repo_dir("openai/clip-vit-base-patch32")
    assert no_network == []


def test_hf_repo_dir_downloads_only_what_clip_needs(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, hub_online: None
) -> None:
    hub_id = "openai/clip-vit-base-patch32"
    files = {"config.json": b"{}", "model.safetensors": b"w", "tf_model.h5": b"tf", "flax_model.msgpack": b"jax"}
    with loopback_server(fake_hub({hub_id: files})) as base:
        monkeypatch.setenv("HF_ENDPOINT", base)
        snapshot = resolve_hf_repo_dir(hub_id, offline=False)
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors"]
    assert resolve_hf_repo_dir(hub_id, offline=True) == snapshot


def test_open_clip_format_repo_loads_by_hub_id_offline(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, no_network: list[str], tmp_path: Path
) -> None:
    """A repo in open_clip's own layout (open_clip_config.json + open_clip_model.safetensors, no
    config.json), as laion/*, timm/* and apple/*-OpenCLIP repos are: `load(hub_id)` reads it."""
    import torch
    from tiny_models import TINY

    import clipforge

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    source = clipforge.save(clipforge.ClipModel(TINY), tmp_path / "repo", format="open_clip")
    files = {p.name: p.read_bytes() for p in Path(source).iterdir()}
    assert "config.json" not in files
    hub_id = "someone/tiny-open-clip"
    snapshot = make_hf_cache(env["hf"], hub_id, files)
    assert resolve_hf_repo_dir(hub_id) == snapshot
    model, _, tokenizer = clipforge.load(hub_id)
    original, _, _ = clipforge.load(source)
    tokens = tokenizer(["a red square", "two owls"])
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), original.encode_text(tokens))
    assert model.record.provenance.source_format == "open_clip"
    assert no_network == []


def test_hf_repo_download_takes_sentencepiece_and_open_clip_files(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, hub_online: None
) -> None:
    files = {"open_clip_config.json": b"{}", "open_clip_model.safetensors": b"w", "spiece.model": b"sp",
             "open_clip_pytorch_model.bin": b"pickle", "tf_model.h5": b"tf"}
    hub_id = "timm/some-siglip"
    with loopback_server(fake_hub({hub_id: files})) as base:
        monkeypatch.setenv("HF_ENDPOINT", base)
        snapshot = resolve_hf_repo_dir(hub_id, offline=False)
    # the safetensors weights, not the pickle as well; the tokenizer model; nothing of other frameworks
    assert sorted(p.name for p in snapshot.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors", "spiece.model"]


def test_hf_repo_dir_unreachable_hub(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, hub_online: None) -> None:
    # A hub that answers 404 to everything: the repo is "not found", reported without a raw traceback.
    def not_found(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(404)
        h.send_header("Content-Length", "0")
        h.end_headers()

    with loopback_server(not_found) as base:
        monkeypatch.setenv("HF_ENDPOINT", base)
        started = time.monotonic()
        with pytest.raises(WeightsNotFoundError) as info:
            resolve_hf_repo_dir("openai/clip-vit-base-patch32", offline=False)
    assert time.monotonic() - started < 20
    assert "Downloading failed" in str(info.value) and "openai/clip-vit-base-patch32" in str(info.value)
