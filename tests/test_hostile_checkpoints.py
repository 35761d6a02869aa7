"""Every hostile file of the catalogue (tests/hostile_files.py, docs/security.md) is refused with a
named error that gives the path and the reason, in bounded time and memory.

The files are generated into tmp_path; each is opened in a child process forked from one worker
that has imported clipforge, which reports the exception, the wall time and the peak RSS growth.
The bounds are loose (a busy CI machine), but each is far below what the same files cost before
they were checked: a 512 MiB deflate bomb, a 10^6-layer config (3 GB), a 2^60-path pickle (forever).
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest
import torch
from hostile_files import (
    CATALOGUE,
    TINY_CONFIG,
    _clipforge_file,
    build_all,
    measure,
    tiny_state_dict,
)

import clipforge
from clipforge.checkpoint_formats import (
    CheckpointError,
    NonFiniteWeightsError,
    read_checkpoint,
)
from clipforge.checkpoint_formats.limits import parse_json
from clipforge.errors import ClipforgeError

MAX_SECONDS = 5.0
MAX_RSS_GROWTH = 300 * 2**20


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """{case: (path, what the forked child saw)} for the whole catalogue, measured once."""
    paths = build_all(tmp_path_factory.mktemp("hostile"))
    src = str(Path(clipforge.__file__).resolve().parent.parent)
    results = measure({c.name: (str(paths[c.name]), c.entry) for c in CATALOGUE}, src=src, timeout_s=30.0)
    return {name: (paths[name], results[name]) for name in paths}


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.name for c in CATALOGUE])
def test_hostile_file_is_refused_by_name_in_bounded_time_and_memory(case, hostile):
    path, seen = hostile[case.name]
    assert seen["status"] == "raised", f"{case.name}: {seen}"
    # A clipforge error (the CLI prints it on one line), still a ValueError for older callers.
    assert case.error in seen["mro"] and {"CheckpointError", "ClipforgeError", "ValueError"} <= set(seen["mro"]), seen
    message = seen["message"]
    assert str(path) in message, message  # names the file (or the file inside the directory)
    assert re.search(case.reason, message), message
    assert "\n" not in message
    assert seen["seconds"] < MAX_SECONDS, seen
    assert seen["rss_growth_bytes"] < MAX_RSS_GROWTH, seen


def test_the_catalogue_is_documented():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text()
    missing = [c.name for c in CATALOGUE if f"`{c.name}`" not in doc]
    assert not missing, f"cases absent from docs/security.md: {missing}"


def test_the_measuring_worker_sees_time_and_memory(tmp_path):
    # The bounds above are only worth something if the worker would see a breach: a file that
    # really allocates (a valid 64 MiB torch.save archive, read into memory) must show that growth.
    path = tmp_path / "big.pt"
    torch.save({"visual.proj": torch.zeros(16 * 2**20)}, path)
    src = str(Path(clipforge.__file__).resolve().parent.parent)
    seen = measure({"big": (str(path), "read")}, src=src)["big"]
    assert seen["status"] == "returned" and 60 * 2**20 < seen["rss_growth_bytes"] < 200 * 2**20, seen


# ------------------------------------------------------------------------------ beyond the catalogue


def test_allow_nonfinite_loads_the_weights_it_names(tmp_path):
    path = tmp_path / "nan.safetensors"
    state = tiny_state_dict()
    state["visual.proj"][0, 0] = float("nan")
    _clipforge_file(path, state, TINY_CONFIG)
    with pytest.raises(NonFiniteWeightsError, match="'visual.proj' \\(1 NaN, 0 Inf of 512\\)"):
        clipforge.load(path)
    model, _, _ = clipforge.load(path, allow_nonfinite=True)
    assert torch.isnan(model.state_dict()["visual.proj"]).sum() == 1


def test_a_valid_tiny_checkpoint_still_loads(tmp_path):
    path = _clipforge_file(tmp_path / "ok.safetensors", tiny_state_dict(), TINY_CONFIG)
    model, _, _ = clipforge.load(path)
    assert model.config.text.vocab_size == 64


def test_checkpoint_error_is_a_clipforge_error_and_a_value_error():
    assert issubclass(CheckpointError, ClipforgeError) and issubclass(CheckpointError, ValueError)
    assert issubclass(NonFiniteWeightsError, CheckpointError)


def test_json_limits():
    assert parse_json('{"a": [[1]]}', "x") == {"a": [[1]]}
    with pytest.raises(CheckpointError, match="x: JSON nested deeper than 64"):
        parse_json("[" * 65 + "]" * 65, "x")  # below the recursion limit, above ours
    parse_json("[" * 64 + "]" * 64, "x")
    with pytest.raises(CheckpointError, match="non-JSON constant Infinity"):
        parse_json('{"eps": Infinity}', "x")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        parse_json('{"n": ' + "9" * 5000 + "}", "x")  # Python's int digit limit, named


def test_missing_path_is_still_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or directory"):
        read_checkpoint(tmp_path / "absent.safetensors")


def test_symlink_into_a_loop_inside_a_directory_path(tmp_path):
    os.symlink("a", tmp_path / "b")
    os.symlink("b", tmp_path / "a")
    with pytest.raises(CheckpointError, match="symbolic link loop") as info:
        clipforge.load(tmp_path / "a" / "model.safetensors")
    assert str(tmp_path / "a") in str(info.value)
    with pytest.raises(OSError) as raw:
        os.stat(tmp_path / "a" / "model.safetensors")
    assert raw.value.errno == errno.ELOOP


def test_zip_checks_pass_real_torch_archives(tmp_path):
    # torch.save's stored members pass the size checks exactly; a re-zipped (deflated) copy of the
    # same archive with ordinary compression ratios is read too.
    import zipfile

    state = tiny_state_dict(1)
    path = tmp_path / "m.pt"
    torch.save(state, path)
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    for p in (path, deflated):
        got = read_checkpoint(p).state_dict
        assert all(torch.equal(got[k], state[k]) for k in state)


def test_config_layer_counts_are_checked_before_the_key_list(tmp_path, monkeypatch):
    # The key list of a 4,000-layer config is never built: expected_shapes must not be called.
    import importlib

    infer_config = importlib.import_module("clipforge.checkpoint_formats.infer_config")

    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["text"]["layers"] = 4000
    path = _clipforge_file(tmp_path / "m.safetensors", tiny_state_dict(), cfg)
    real = infer_config.expected_shapes

    def guarded(c):
        assert c.text.layers < 100, "expected_shapes called for the claimed config"
        return real(c)

    monkeypatch.setattr(infer_config, "expected_shapes", guarded)
    with pytest.raises(CheckpointError, match="4,000 text layers but the state dict has 2"):
        clipforge.load(path)


def test_the_limits_accept_every_named_architecture():
    # The sanity limits must never refuse a real model: all of model_zoo's architectures pass.
    from clipforge import model_zoo
    from clipforge.checkpoint_formats import check_config_limits

    names = model_zoo.list_architectures()
    assert len(names) > 10
    for name in names:
        check_config_limits(model_zoo.get_architecture(name), name)
