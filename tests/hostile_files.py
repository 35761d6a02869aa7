"""The catalogue of hostile checkpoint files, generated on demand (never committed as binaries).

Each `Case` builds one file (or directory) that claims or does something a real checkpoint never
does: a deflate bomb, sizes past the end of the file, a config claiming a million layers, a symlink
loop, NaN weights, ... and says what clipforge must answer: the exception class (a
`CheckpointError`) and a regular expression for the reason, which the message must give along
with the path. `tests/test_hostile_checkpoints.py` checks every case in a forked worker that
measures wall time and peak memory growth; docs/security.md lists the same catalogue.

    python tests/hostile_files.py                 # the table of figures, with this checkout's src/
    python tests/hostile_files.py --src OTHER/src # the same files against another checkout

Builders use only the standard library, torch (for pickling tensor descriptions the way
torch.save does) and safetensors; nothing here imports clipforge's model code.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
import types
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

MiB = 2**20

# ----------------------------------------------------------------------------------------------
# A tiny model's canonical tensors (no model class needed: shapes come from the config).

TINY_CONFIG = {
    "embed_dim": 16,
    "vision": {"kind": "vit", "image_size": 16, "patch_size": 8, "width": 32, "layers": 2, "heads": 2, "mlp_ratio": 4.0},
    "text": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 2, "mlp_ratio": 4.0,
             "sot_token_id": 62, "eot_token_id": 63, "pad_token_id": 0},
    "activation": "quick_gelu", "layer_norm_eps": 1e-5, "init_logit_scale": 2.6592600929051215, "max_logit_scale": 100.0,
}


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    from clipforge.checkpoint_formats import expected_shapes
    from clipforge.configs import ClipConfig

    g = torch.Generator().manual_seed(seed)
    shapes = expected_shapes(ClipConfig.from_dict(json.loads(json.dumps(TINY_CONFIG))))
    return {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}


def _clipforge_file(path: Path, state: dict[str, torch.Tensor], config: object, raw_config: str | None = None) -> Path:
    from safetensors.torch import save_file

    meta = {"format": "pt", "clipforge_config": raw_config if raw_config is not None else json.dumps(config)}
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=meta)
    return path


def _hf_dir(d: Path, config_text: str | None = None, **config_changes: object) -> Path:
    from safetensors.torch import save_file

    from clipforge.checkpoint_formats import clip_config_to_hf_config, from_canonical
    from clipforge.configs import ClipConfig

    cfg = ClipConfig.from_dict(json.loads(json.dumps(TINY_CONFIG)))
    d.mkdir()
    hf = clip_config_to_hf_config(cfg)
    for key, value in config_changes.items():  # "text_config.hidden_size" style keys
        target = hf
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    (d / "config.json").write_text(config_text if config_text is not None else json.dumps(hf))
    save_file({k: v.contiguous() for k, v in from_canonical(tiny_state_dict(), "hf").items()}, str(d / "model.safetensors"))
    return d


# ----------------------------------------------------------------------------------------------
# Pickles as torch.save writes them, with the sizes and views we choose.


class _Storage:
    def __init__(self, key: str, numel: int, storage_type: object = torch.FloatStorage) -> None:
        self.key, self.numel, self.storage_type = key, numel, storage_type


class _Tensor:
    def __init__(self, storage: _Storage, size: tuple, stride: tuple, offset: int = 0, state: object = None) -> None:
        self.storage, self.size, self.stride, self.offset, self.state = storage, size, stride, offset, state

    def __reduce__(self):
        args = (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())
        if self.state is None:
            return (torch._utils._rebuild_tensor_v2, args)
        return (torch._utils._rebuild_tensor_v2, args, self.state)  # BUILD after the rebuild


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: object):
        if isinstance(obj, _Storage):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def _pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None,
               extra: dict[str, bytes] | None = None) -> Path:
    root = path.stem
    with zipfile.ZipFile(path, "w") as zf:  # stored members, as torch.save writes them
        zf.writestr(f"{root}/data.pkl", data_pkl)
        zf.writestr(f"{root}/byteorder", b"little")
        for key, data in (storages or {}).items():
            zf.writestr(f"{root}/data/{key}", data)
        for name, data in (extra or {}).items():
            zf.writestr(f"{root}/{name}", data)
    return path


def _script_classes(n_modules: int = 1) -> tuple[types.ModuleType, type]:
    """A class that pickles as TorchScript's `__torch__.m.M` (a module registered while dumping)."""
    module = types.ModuleType("__torch__.m")
    cls = type("M", (), {"__module__": "__torch__.m"})
    module.M = cls
    return module, cls


def _script_pickle(root_obj: object, module: types.ModuleType) -> bytes:
    parent = types.ModuleType("__torch__")
    parent.m = module
    sys.modules.update({"__torch__": parent, "__torch__.m": module})
    try:
        return _pickle(root_obj)
    finally:
        del sys.modules["__torch__"], sys.modules["__torch__.m"]


_SCRIPT_CODE = b"class M(Module):\n  __parameters__ = []\n  __buffers__ = []\n"

# ----------------------------------------------------------------------------------------------
# Zip files written byte by byte: declared sizes and layouts zipfile would never write.


def _local_header(name: bytes, method: int, crc: int, csize: int, usize: int) -> bytes:
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, csize, usize, len(name), 0) + name


def _central_header(name: bytes, method: int, crc: int, csize: int, usize: int, offset: int) -> bytes:
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, csize, usize,
                       len(name), 0, 0, 0, 0, 0, offset) + name


def _raw_zip(path: Path, members: list[tuple[str, int, bytes, int, int]]) -> Path:
    """members: (name, method, payload as stored in the file, declared uncompressed size, crc)."""
    body, central = bytearray(), bytearray()
    for name, method, payload, usize, crc in members:
        offset = len(body)
        body += _local_header(name.encode(), method, crc, len(payload), usize) + payload
        central += _central_header(name.encode(), method, crc, len(payload), usize, offset)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(body), 0)
    path.write_bytes(bytes(body + central + eocd))
    return path


def _deflated_zeros(n_mib: int, byte: bytes = b"\0") -> tuple[bytes, int]:
    """A raw deflate stream of n_mib MiB of one byte, built in milliseconds, and its CRC-32."""
    block = byte * MiB
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    repeat = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)  # after a full flush every MiB compresses alike
    stream = first + repeat * (n_mib - 1) + c.flush()
    crc = 0
    for _ in range(n_mib):
        crc = zlib.crc32(block, crc)
    return stream, crc


def _stored(name: str, data: bytes) -> tuple[str, int, bytes, int, int]:
    return (name, zipfile.ZIP_STORED, data, len(data), zlib.crc32(data))


# ----------------------------------------------------------------------------------------------
# The catalogue


@dataclass(frozen=True)
class Case:
    name: str
    claims: str  # what the file claims or does (docs/security.md's second column)
    build: Callable[[Path], Path]
    reason: str  # regular expression the message must match
    entry: str = "read"  # "read": read_checkpoint(path); "load": clipforge.load(path)
    error: str = "CheckpointError"
    answer: str = ""  # what clipforge does (docs/security.md's third column)


def _deflate_bomb(d: Path) -> Path:
    n_mib = 512
    stream, crc = _deflated_zeros(n_mib)
    ref = _Tensor(_Storage("0", n_mib * MiB // 4), (n_mib * MiB // 4,), (1,))
    return _raw_zip(d / "bomb.pt", [
        _stored("bomb/data.pkl", _pickle({"visual.proj": ref})),
        _stored("bomb/byteorder", b"little"),
        ("bomb/data/0", zipfile.ZIP_DEFLATED, stream, n_mib * MiB, crc),
    ])


def _code_bomb(d: Path) -> Path:
    module, cls = _script_classes()
    obj = cls()
    obj.w = _Tensor(_Storage("0", 4), (4,), (1,))
    stream, crc = _deflated_zeros(512, b" ")
    return _raw_zip(d / "codebomb.pt", [
        _stored("codebomb/data.pkl", _script_pickle(obj, module)),
        _stored("codebomb/data/0", bytes(16)),
        ("codebomb/code/__torch__/m.py", zipfile.ZIP_DEFLATED, stream, 512 * MiB, crc),
    ])


def _overlapping_members(d: Path) -> Path:
    """64 stored storage members that each extend to the end of the file (each member's data
    holds the next members' headers): 16 MiB of file, 512 MiB of declared contents."""
    n, chunk = 64, 256 * 1024
    names = [f"ovl/data/{i:03d}xy".encode() for i in range(n)]  # 30 + 14 bytes: headers keep sizes a multiple of 4
    assert (30 + len(names[0])) % 4 == 0
    head = len(_local_header(names[0], 0, 0, 0, 0))
    # Member k's content: its chunk plus every later member's header and chunk.
    sizes = [(n - k) * chunk + (n - k - 1) * head for k in range(n)]
    pkl = _pickle({f"t{k}": _Tensor(_Storage(names[k].decode().split("/")[-1], sizes[k] // 4), (sizes[k] // 4,), (1,))
                   for k in range(n)})
    prefix = _local_header(b"ovl/data.pkl", 0, zlib.crc32(pkl), len(pkl), len(pkl)) + pkl
    tail = b""  # built from the last member backwards: each CRC covers all later headers
    crcs = [0] * n
    for k in reversed(range(n)):
        content = bytes(chunk) + tail
        crcs[k] = zlib.crc32(content)
        tail = _local_header(names[k], 0, crcs[k], sizes[k], sizes[k]) + content
    body = prefix + tail
    central = _central_header(b"ovl/data.pkl", 0, zlib.crc32(pkl), len(pkl), len(pkl), 0)
    offset = len(prefix)
    for k in range(n):
        central += _central_header(names[k], 0, crcs[k], sizes[k], sizes[k], offset)
        offset += head + chunk
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n + 1, n + 1, len(central), len(body), 0)
    path = d / "ovl.pt"
    path.write_bytes(body + central + eocd)
    return path


def _damaged_crc(d: Path) -> Path:
    pkl = _pickle({"visual.proj": _Tensor(_Storage("0", 4), (4,), (1,))})
    name, method, payload, usize, crc = _stored("crc/data.pkl", pkl)
    return _raw_zip(d / "crc.pt", [(name, method, payload, usize, crc ^ 0xFFFF), _stored("crc/data/0", bytes(16))])


def _legacy_file(path: Path, obj: object, storages: list[tuple[str, int, bytes]], magic_pickle: bytes | None = None) -> Path:
    out = io.BytesIO()
    out.write(magic_pickle if magic_pickle is not None else pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
    out.write(pickle.dumps(1001, protocol=2))
    out.write(pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {}}, protocol=2))
    out.write(_pickle(obj))
    out.write(pickle.dumps([key for key, _, _ in storages], protocol=2))
    for _, numel, data in storages:
        out.write(struct.pack("<q", numel) + data)
    path.write_bytes(out.getvalue())
    return path


def _legacy_huge(d: Path) -> Path:
    numel = 2**40
    ref = _Tensor(_Storage("0", numel), (numel,), (1,))
    return _legacy_file(d / "legacy.pt", {"visual.proj": ref}, [("0", numel, bytes(64))])


def _legacy_huge_string(d: Path) -> Path:
    # The magic-number pickle is a BINUNICODE8 string declaring 2**40 bytes.
    magic = b"\x80\x04\x8d" + struct.pack("<Q", 2**40) + b"abc"
    return _legacy_file(d / "legacy_str.pt", {}, [], magic_pickle=magic)


def _broadcast_view(d: Path) -> Path:
    ref = _Tensor(_Storage("0", 1), (2**20, 2**20), (0, 0))  # 4 bytes on disk, 4 TiB once contiguous
    return _torch_zip(d / "view.pt", _pickle({"visual.proj": ref}), {"0": bytes(4)})


def _many_dims(d: Path) -> Path:
    ref = _Tensor(_Storage("0", 1), (1,) * 100, (1,) * 100)
    return _torch_zip(d / "dims.pt", _pickle({"visual.proj": ref}), {"0": bytes(4)})


def _build_on_tensor(d: Path) -> Path:
    ref = _Tensor(_Storage("0", 4), (4,), (1,), state={"size": (2**40,)})
    return _torch_zip(d / "build.pt", _pickle({"visual.proj": ref}), {"0": bytes(16)})


def _pickle_dag(d: Path) -> Path:
    shared: list = [0]
    for _ in range(60):
        shared = [shared, shared]  # 2**60 paths through 61 lists ("billion laughs")
    return _torch_zip(d / "dag.pt", pickle.dumps({"visual.proj": shared}, protocol=2))


def _pickle_deep(d: Path) -> Path:
    n = 200_000
    data = b"\x80\x02}X\x0b\x00\x00\x00visual.proj" + b"]" * n + b"a" * (n - 1) + b"s."
    return _torch_zip(d / "deep.pt", data)


def _script_dag(d: Path) -> Path:
    module, cls = _script_classes()
    node = cls()
    node.w = _Tensor(_Storage("0", 4), (4,), (1,))
    for _ in range(60):
        parent = cls()
        parent.a, parent.b = node, node  # a module tree with 2**60 paths
        node = parent
    return _torch_zip(d / "scriptdag.pt", _script_pickle(node, module), {"0": bytes(16)},
                      {"code/__torch__/m.py": _SCRIPT_CODE})


def _script_bad_declaration(d: Path) -> Path:
    module, cls = _script_classes()
    obj = cls()
    obj.weight = _Tensor(_Storage("0", 4), (4,), (1,))
    code = b"class M(Module):\n  __parameters__ = [weight, ]\n  __buffers__ = []\n"
    return _torch_zip(d / "scriptdecl.pt", _script_pickle(obj, module), {"0": bytes(16)},
                      {"code/__torch__/m.py": code})


def _empty(d: Path) -> Path:
    (d / "empty.pt").write_bytes(b"")
    return d / "empty.pt"


def _safetensors_raw(path: Path, header: bytes, data: bytes = b"", declared: int | None = None) -> Path:
    path.write_bytes(struct.pack("<Q", len(header) if declared is None else declared) + header + data)
    return path


def _st_header(entries: dict[str, object]) -> bytes:
    return json.dumps(entries).encode()


def _st_length_past_end(d: Path) -> Path:
    return _safetensors_raw(d / "len.safetensors", _st_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}),
                            bytes(4), declared=2**40)


def _st_bad_json(d: Path) -> Path:
    return _safetensors_raw(d / "json.safetensors", b'{"a": {"dtype": "F32", "shape": [1], "data_off', bytes(4))


def _st_offsets_past_end(d: Path) -> Path:
    return _safetensors_raw(d / "oob.safetensors",
                            _st_header({"visual.proj": {"dtype": "F32", "shape": [2**28], "data_offsets": [0, 2**30]}}), bytes(64))


def _st_size_mismatch(d: Path) -> Path:
    return _safetensors_raw(d / "size.safetensors",
                            _st_header({"visual.proj": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 16]}}), bytes(16))


def _st_overlap(d: Path) -> Path:
    return _safetensors_raw(d / "overlap.safetensors", _st_header({
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
    }), bytes(24))


def _st_bad_dtype(d: Path) -> Path:
    return _safetensors_raw(d / "dtype.safetensors",
                            _st_header({"a": {"dtype": "F4", "shape": [8], "data_offsets": [0, 4]}}), bytes(4))


def _st_deep_header(d: Path) -> Path:
    n = 100_000
    return _safetensors_raw(d / "deep.safetensors", b'{"__metadata__": {}, "a": ' + b"[" * n + b"]" * n + b"}")


def _config_deep_metadata(d: Path) -> Path:
    n = 100_000
    return _clipforge_file(d / "deepmeta.safetensors", tiny_state_dict(), None, raw_config="[" * n + "]" * n)


def _config_million_layers(d: Path) -> Path:
    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["text"]["layers"] = 10**6
    return _clipforge_file(d / "layers.safetensors", tiny_state_dict(), cfg)


def _config_4000_layers(d: Path) -> Path:
    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["vision"]["layers"] = 4000
    return _clipforge_file(d / "layers4000.safetensors", tiny_state_dict(), cfg)


def _config_width(d: Path) -> Path:
    return _hf_dir(d / "hf_width", **{"vision_config.hidden_size": 10**9, "vision_config.intermediate_size": 4 * 10**9})


def _config_json_deep(d: Path) -> Path:
    n = 100_000
    return _hf_dir(d / "hf_deep", config_text='{"text_config": ' + "[" * n + "]" * n + "}")


def _config_json_nan(d: Path) -> Path:
    return _hf_dir(d / "hf_nan", **{"text_config.layer_norm_eps": float("nan"), "vision_config.layer_norm_eps": float("nan")})


def _config_json_list(d: Path) -> Path:
    return _hf_dir(d / "hf_list", config_text="[1, 2, 3]")


def _config_json_types(d: Path) -> Path:
    return _hf_dir(d / "hf_types", **{"text_config.num_hidden_layers": "2"})


def _config_json_loop(d: Path) -> Path:
    path = _hf_dir(d / "hf_loop")
    (path / "config.json").unlink()
    os.symlink("config.json", path / "config.json")
    return path


def _fifo_in_dir(d: Path) -> Path:
    path = _hf_dir(d / "hf_fifo")
    (path / "model.safetensors").unlink()
    os.mkfifo(path / "model.safetensors")  # reading a FIFO blocks forever
    return path


def _symlink_loop(d: Path) -> Path:
    os.symlink("loop.safetensors", d / "loop.safetensors")
    return d / "loop.safetensors"


def _dangling_symlink(d: Path) -> Path:
    os.symlink("blobs/0123abcd", d / "dangling.safetensors")
    return d / "dangling.safetensors"


def _preprocessor_deep(d: Path) -> Path:
    path = _hf_dir(d / "hf_pre")
    n = 100_000
    (path / "preprocessor_config.json").write_text('{"crop_size": ' + "[" * n + "]" * n + "}")
    return path


def _open_clip_config_types(d: Path) -> Path:
    from safetensors.torch import save_file

    path = d / "oc_types"
    path.mkdir()
    save_file(tiny_state_dict(), str(path / "open_clip_model.safetensors"))
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": "16", "vision_cfg": {}, "text_cfg": {}}}))
    return path


def _shard_map_types(d: Path) -> Path:
    path = _hf_dir(d / "hf_shards")
    (path / "model.safetensors").rename(path / "model-00001.safetensors")
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": {"nested": "x"}}}))
    return path


def _shard_escape(d: Path) -> Path:
    path = _hf_dir(d / "hf_escape")
    (path / "model.safetensors").rename(d / "outside.safetensors")
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "../outside.safetensors"}}))
    return path


def _nan_weights(d: Path) -> Path:
    state = tiny_state_dict()
    state["visual.proj"][0, :3] = float("nan")
    state["ln_final.bias"][1] = float("inf")
    return _clipforge_file(d / "nan.safetensors", state, TINY_CONFIG)


def _float64_overflow(d: Path) -> Path:
    state = tiny_state_dict()
    state["visual.proj"] = state["visual.proj"].double()
    state["visual.proj"][0, 0] = 1e300  # finite in float64, Inf once the model makes it float32
    return _clipforge_file(d / "f64.safetensors", state, TINY_CONFIG)


def _integer_weights(d: Path) -> Path:
    state = tiny_state_dict()
    state["ln_final.weight"] = torch.ones(state["ln_final.weight"].shape, dtype=torch.int32)
    return _clipforge_file(d / "int.safetensors", state, TINY_CONFIG)


CATALOGUE: list[Case] = [
    # zip archives (torch.save, TorchScript)
    Case("deflate_bomb", "0.5 MB zip whose storage member inflates to 512 MiB", _deflate_bomb, r"deflate bomb",
         answer="refused from the zip directory, before inflating (ratio > 100:1)"),
    Case("code_bomb", "TorchScript archive whose code/ file inflates to 512 MiB", _code_bomb, r"TorchScript code",
         answer="refused from the zip directory (code/ files at most 64 MiB in all)"),
    Case("overlapping_members", "16 MiB zip of 64 members overlapping each other: 520 MiB of contents",
         _overlapping_members, r"more than 2 x the archive", answer="refused once reads pass 2 x the archive + 32 MiB"),
    Case("damaged_zip_crc", "zip member with a wrong CRC-32", _damaged_crc, r"cannot be read: BadZipFile",
         answer="named (was a raw BadZipFile)"),
    Case("legacy_huge_storage", "legacy torch.save file declaring a storage of 2^40 floats", _legacy_huge,
         r"declares 1,099,511,627,776 elements.*only \d+ bytes are left", answer="refused before reading (was MemoryError)"),
    Case("legacy_huge_string", "legacy file whose first pickle declares a 2^40-byte string", _legacy_huge_string,
         r"not a readable pickle", answer="named, nothing allocated"),
    Case("broadcast_view", "4-byte storage viewed as 2^20 x 2^20 with stride 0 (4 TiB once contiguous)",
         _broadcast_view, r"overlapping view", answer="refused (a view may not show more elements than its storage)"),
    Case("too_many_dims", "tensor with 100 dimensions", _many_dims, r"100 dimensions", answer="refused (at most 32)"),
    Case("build_on_tensor", "pickle BUILD opcode rewriting a checked tensor's size to 2^40", _build_on_tensor,
         r"tries to modify a TensorRef", answer="refused (checked descriptions are sealed)"),
    Case("pickle_shared_dag", "61 lists, each holding the next twice: 2^60 paths", _pickle_dag,
         r"not named tensors", answer="refused before walking (a state dict must be flat)"),
    Case("pickle_deep_nesting", "lists nested 200,000 deep", _pickle_deep, r"not named tensors",
         answer="refused before walking (was RecursionError)"),
    Case("script_module_dag", "TorchScript module tree with 2^60 paths (shared submodules)", _script_dag,
         r"more than 100,000 modules", answer="refused after 100,000 modules"),
    Case("script_bad_declaration", "TorchScript code with `__parameters__ = [weight, ]`", _script_bad_declaration,
         r"unreadable declaration", answer="named (was a raw ValueError)"),
    Case("empty_file", "a file of 0 bytes", _empty, r"an empty file", answer="named"),
    # safetensors
    Case("safetensors_length_past_end", "header length 2^40 in a 100-byte file", _st_length_past_end,
         r"header length 1,099,511,627,776 bytes does not fit", answer="refused before reading the header"),
    Case("safetensors_bad_json", "truncated JSON header", _st_bad_json, r"not valid JSON",
         answer="named (was a raw SafetensorError)"),
    Case("safetensors_offsets_past_end", "a 1 GiB tensor in a 200-byte file", _st_offsets_past_end,
         r"reach past the end of the file", answer="refused before reading (was a raw SafetensorError)"),
    Case("safetensors_size_mismatch", "shape [1000, 1000] stored in 16 bytes", _st_size_mismatch,
         r"needs 4,000,000 bytes", answer="refused before reading"),
    Case("safetensors_overlap", "two tensors sharing bytes", _st_overlap, r"overlap", answer="refused"),
    Case("safetensors_bad_dtype", "dtype F4", _st_bad_dtype, r"unsupported dtype 'F4'", answer="refused"),
    Case("safetensors_deep_header", "header JSON nested 100,000 deep", _st_deep_header, r"nested deeper than 64",
         answer="refused"),
    # configs stored with the weights
    Case("config_deep_metadata", "clipforge_config metadata nested 100,000 deep", _config_deep_metadata,
         r"nested deeper than 64", answer="refused (was RecursionError)"),
    Case("config_million_layers", "stored config claims 10^6 text layers", _config_million_layers,
         r"text.layers=1000000 is not an int in \[1, 4,096\]", entry="load", answer="refused by the sanity limits"),
    Case("config_4000_layers", "stored config claims 4,000 vision layers, the file holds 2", _config_4000_layers,
         r"4,000 vision layers but the state dict has 2", entry="load",
         answer="refused before the key list is built (layer counts compared first)"),
    Case("config_width_1e9", "config.json claims vision hidden_size 10^9", _config_width,
         r"vision.width=1000000000 is not an int", entry="load", answer="refused by the sanity limits"),
    Case("config_json_deep", "config.json nested 100,000 deep", _config_json_deep, r"nested deeper than 64",
         answer="refused (was RecursionError)"),
    Case("config_json_nan", "config.json with layer_norm_eps NaN", _config_json_nan, r"non-JSON constant NaN",
         answer="refused (was a model answering NaN)"),
    Case("config_json_list", "config.json is a list", _config_json_list, r"must be a JSON object", answer="named"),
    Case("config_json_types", "config.json num_hidden_layers is the string \"2\"", _config_json_types,
         r"text.layers=2 is not an int", entry="load", answer="named (was a raw TypeError)"),
    Case("open_clip_config_types", "open_clip_config.json embed_dim is the string \"16\"", _open_clip_config_types,
         r"embed_dim=16 is not an int", answer="named"),
    Case("preprocessor_config_deep", "preprocessor_config.json nested 100,000 deep", _preprocessor_deep,
         r"nested deeper than 64", entry="load", answer="refused (was RecursionError)"),
    Case("shard_index_types", "shard index maps a tensor to an object", _shard_map_types,
         r"weight_map must map tensor names to file names", answer="named (was a raw TypeError)"),
    Case("shard_outside_dir", "shard index names ../outside.safetensors", _shard_escape,
         r"lies outside the checkpoint directory", answer="refused"),
    # paths
    Case("symlink_loop", "a symbolic link to itself", _symlink_loop, r"symbolic link loop", entry="load",
         answer="named (was a misleading FileNotFoundError)"),
    Case("dangling_symlink", "a symbolic link to a missing blob", _dangling_symlink, r"broken symbolic link",
         entry="load", answer="named (was a misleading FileNotFoundError)"),
    Case("config_json_symlink_loop", "config.json is a symlink loop", _config_json_loop, r"symbolic link loop",
         answer="named (was read as a directory without a config)"),
    Case("fifo_weights", "model.safetensors is a FIFO", _fifo_in_dir, r"a FIFO", answer="refused without opening it"),
    # values
    Case("nan_weights", "NaN and Inf in two tensors", _nan_weights, r"non-finite weights in 2 tensors.*visual.proj",
         entry="load", error="NonFiniteWeightsError", answer="refused unless load(..., allow_nonfinite=True)"),
    Case("float64_overflow", "float64 weight 1e300 (Inf as float32)", _float64_overflow,
         r"non-finite weights in 1 tensor", entry="load", error="NonFiniteWeightsError",
         answer="refused unless allow_nonfinite=True"),
    Case("integer_weights", "ln_final.weight stored as int32", _integer_weights, r"has dtype torch.int32",
         entry="load", answer="named (was a raw RuntimeError)"),
]

# ----------------------------------------------------------------------------------------------
# Measuring: a worker imports clipforge once, then forks one child per file. The child reports
# the exception, wall time and peak RSS growth (VmHWM at the end minus VmRSS at the start).


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _run_child(path: str, entry: str, out_fd: int) -> None:
    import clipforge
    from clipforge.checkpoint_formats import read_checkpoint

    rss0 = _status("VmRSS")
    start = time.perf_counter()
    try:
        if entry == "read":
            read_checkpoint(path)
        else:
            clipforge.load(path)
        result = {"status": "returned"}
    except BaseException as exc:  # noqa: BLE001 - reported, whatever it is
        result = {"status": "raised", "type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__],
                  "message": str(exc)}
    result["seconds"] = time.perf_counter() - start
    result["rss_growth_bytes"] = max(_status("VmHWM") - rss0, 0)
    os.write(out_fd, json.dumps(result).encode())


def serve(timeout_s: float = 60.0) -> None:
    """Worker loop: a JSON request {"path", "entry"} per stdin line, a JSON result per stdout line."""
    torch.set_num_threads(1)
    import clipforge.checkpoint_formats  # noqa: F401 - imported once, before forking
    import clipforge.loading  # noqa: F401

    for line in sys.stdin:
        request = json.loads(line)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                _run_child(request["path"], request["entry"], w)
            finally:
                os._exit(0)
        os.close(w)
        chunks, deadline = [], time.monotonic() + timeout_s
        while True:
            ready, _, _ = select.select([r], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                result = {"status": "timeout", "seconds": timeout_s}
                break
            chunk = os.read(r, 1 << 20)
            if not chunk:
                text = b"".join(chunks)
                result = json.loads(text) if text else {"status": "crashed"}
                break
            chunks.append(chunk)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if result.get("status") == "crashed":
            result["exit"] = status
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


def measure(paths: dict[str, tuple[str, str]], src: str | None = None, timeout_s: float = 60.0) -> dict[str, dict]:
    """{case name: (path, entry)} -> {case name: result} via one worker process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [src, str(Path(__file__).parent)])))
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import hostile_files; hostile_files.serve({timeout_s!r})"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(Path(__file__).parent),
    )
    out = {}
    try:
        for name, (path, entry) in paths.items():
            proc.stdin.write(json.dumps({"path": path, "entry": entry}) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the measuring worker died at {name}")
            out[name] = json.loads(line)
    finally:
        proc.stdin.close()
        proc.wait(timeout=timeout_s)
    return out


def build_all(directory: Path) -> dict[str, Path]:
    paths = {}
    for case in CATALOGUE:
        d = directory / case.name
        d.mkdir(parents=True)
        paths[case.name] = case.build(d)
    return paths


def _size(path: Path) -> int:
    if path.is_symlink() or not path.exists():
        return 0
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size if path.is_file() else 0


def main() -> None:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=str(Path(__file__).resolve().parent.parent / "src"))
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    sys.path.insert(0, args.src)
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_all(Path(tmp))
        results = measure({c.name: (str(paths[c.name]), c.entry) for c in CATALOGUE}, args.src, args.timeout)
        print("| case | file size | outcome | time (s) | peak RSS growth (MiB) |")
        print("|---|---:|---|---:|---:|")
        for case in CATALOGUE:
            r = results[case.name]
            what = r["status"] if r["status"] != "raised" else f"{r['type']}: {r['message'][:90]}"
            what = what.replace(str(paths[case.name]), "FILE").replace("|", "\\|")
            print(f"| {case.name} | {_size(paths[case.name]):,} | {what} | {r['seconds']:.3f} | "
                  f"{r.get('rss_growth_bytes', 0) / MiB:.1f} |")


if __name__ == "__main__":
    main()
