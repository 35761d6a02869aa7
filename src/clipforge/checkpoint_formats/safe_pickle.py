"""Read PyTorch pickles (torch.save zip files, legacy torch.save files, TorchScript archives)
without running any code from them.

`pickle` runs code by design: a GLOBAL opcode names any importable callable and REDUCE calls it.
`torch.jit.load` goes further and runs the archive's TorchScript. Here every global a file asks
for is looked up in a small allowlist of our *own* inert functions (tensor rebuilding, plain
containers); anything else stops the read with a `CheckpointError` naming the global. Tensors
come back as `TensorRef` descriptions and are read from the file only when asked for, so the
optimizer state in a training checkpoint is never loaded.

TorchScript archives (OpenAI's released `.pt` files) pickle their module tree as instances of
`__torch__.*` classes. Each such class is replaced by an inert `ScriptObject` that only records
its attributes; which attributes are parameters and buffers is read, as text, from the
`__parameters__` / `__buffers__` lines of the archive's `code/` files (never executed).

Sizes are checked before bytes are read: a zip member's declared size against its compressed
size and the storage the pickle declares (deflate bombs are refused from the zip directory, before
inflating), a legacy file's storages against the bytes left in the file, a tensor view against its
storage (no view may show more elements than its storage holds). See `limits`.
"""

from __future__ import annotations

import ast
import collections
import io
import math
import os
import pickle
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from .errors import CheckpointError
from .limits import (
    ARCHIVE_EXPANSION,
    ARCHIVE_SLACK_BYTES,
    MAX_MEMBER_RATIO,
    MAX_PICKLE_BYTES,
    MAX_SCRIPT_CODE_BYTES,
    MAX_SCRIPT_DEPTH,
    MAX_SCRIPT_MODULES,
    MAX_TENSOR_DIMS,
    SMALL_MEMBER_BYTES,
)

CONVERT_HINT = (
    "If you trust the file, convert it once with the library that wrote it and re-save only the "
    "tensors, e.g. `safetensors.torch.save_file({k: v.contiguous() for k, v in state_dict.items()}, "
    "'model.safetensors')`; clipforge reads the result without any pickle."
)

# torch.<Name>Storage globals name the dtype of a storage in every torch pickle format.
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}

# dtype objects sometimes appear as plain values in checkpoint metadata; they are inert.
_DTYPE_NAMES = (
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
    "complex64", "complex128",
)

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class _Sealed:
    """pickle's BUILD opcode would overwrite a checked object's fields (a TensorRef's size after its
    bounds were checked, say); these objects refuse it."""

    def __setstate__(self, state: Any) -> None:
        raise CheckpointError(f"the pickle tries to modify a {type(self).__name__} after creating it; refused")


@dataclass(frozen=True)
class StorageRef(_Sealed):
    """One storage of the file: its key in the file, element dtype and element count."""

    key: str
    dtype: torch.dtype
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * _itemsize(self.dtype)


@dataclass(frozen=True)
class TensorRef(_Sealed):
    """A strided view of a storage, as the pickle describes it; no bytes read yet."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass(frozen=True)
class _StorageType(_Sealed):
    name: str
    dtype: torch.dtype


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


class ScriptObject:
    """Inert stand-in for an instance of a TorchScript class (`__torch__.*`).

    It can only be created empty (pickle's NEWOBJ) and filled with a dict of attributes (BUILD);
    it has no behaviour. `type_name` is the qualified TorchScript class name.
    """

    type_name: ClassVar[str] = "__torch__"
    attributes: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # TorchScript archives create objects with NEWOBJ, which skips __init__; a call means a
        # hand-made pickle trying to pass arguments to a class.
        raise CheckpointError(f"TorchScript object {self.type_name} is constructed by a call; refused.")

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise CheckpointError(
                f"TorchScript object {self.type_name} restores itself with a custom __setstate__ "
                "(its state is not a plain attribute dict); reading it would need its code. " + CONVERT_HINT
            )
        self.attributes = state


# ---------------------------------------------------------------------------------------------
# The allowlist: each entry is our own function, never the library function the file names.


def _as_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) and v >= 0 for v in value):
        return tuple(value)
    raise CheckpointError(f"tensor {what} must be a tuple of non-negative ints, got {value!r}")


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise CheckpointError(f"tensor rebuilt from {type(storage).__name__}, expected a storage")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise CheckpointError(f"tensor storage offset must be a non-negative int, got {storage_offset!r}")
    size_t, stride_t = _as_int_tuple(size, "size"), _as_int_tuple(stride, "stride")
    if len(size_t) != len(stride_t):
        raise CheckpointError(f"tensor size {size_t} and stride {stride_t} differ in length")
    if len(size_t) > MAX_TENSOR_DIMS:
        raise CheckpointError(f"tensor with {len(size_t)} dimensions (at most {MAX_TENSOR_DIMS} are read)")
    # Bounds are checked here, before any bytes are read, so a crafted view cannot read past its storage.
    if all(s > 0 for s in size_t):
        last = storage_offset + sum((s - 1) * st for s, st in zip(size_t, stride_t))
        if last >= storage.numel:
            raise CheckpointError(
                f"tensor of size {size_t} (stride {stride_t}, offset {storage_offset}) reaches past "
                f"its storage of {storage.numel} elements"
            )
        # A view with zero (or overlapping) strides can show far more elements than its storage
        # holds: 4 bytes on disk, terabytes once made contiguous. No real checkpoint needs that.
        numel = math.prod(size_t)
        if numel > storage.numel:
            raise CheckpointError(
                f"tensor of size {size_t} (stride {stride_t}) shows {numel:,} elements of a storage of "
                f"{storage.numel:,}: an overlapping view that would expand in memory; refused. " + CONVERT_HINT
            )
    return TensorRef(storage, storage_offset, size_t, stride_t)


def _rebuild_tensor_v2(
    storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
    backward_hooks: Any = None, metadata: Any = None,
) -> TensorRef:
    if metadata:
        raise CheckpointError(f"tensor with conj/neg metadata {metadata!r} is not supported. " + CONVERT_HINT)
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, state: Any = None) -> Any:
    return data  # a Parameter is just its data for a state dict


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    # Protocol-2 pickles spell `bytes` as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError(f"_codecs.encode called with {type(text).__name__}, {encoding!r}; refused")
    return text.encode("latin1")


def _identity_tag(value: Any, type_str: Any = None) -> Any:
    return value  # torch.jit._pickle.restore_type_tag only re-attaches a static type


def _as_list(value: Any) -> list:
    if not isinstance(value, list):
        raise CheckpointError(f"expected a list, got {type(value).__name__}")
    return list(value)


def _as_size(value: Any = ()) -> tuple[int, ...]:
    return _as_int_tuple(value, "torch.Size")


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_bytes,
    ("torch", "Size"): _as_size,
    ("torch.jit._pickle", "restore_type_tag"): _identity_tag,
    ("torch.jit._pickle", "build_intlist"): _as_list,
    ("torch.jit._pickle", "build_doublelist"): _as_list,
    ("torch.jit._pickle", "build_boollist"): _as_list,
    ("torch.jit._pickle", "build_tensorlist"): _as_list,
}
_SAFE_GLOBALS.update({("torch", n): _StorageType(n, d) for n, d in _STORAGE_DTYPES.items()})
_SAFE_GLOBALS.update({("torch", n): getattr(torch, n) for n in _DTYPE_NAMES})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: str, allow_script_objects: bool) -> None:
        super().__init__(file, encoding="utf-8")
        self._source = source
        self._allow_script_objects = allow_script_objects
        self._script_classes: dict[str, type] = {}
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is not None:
            return safe
        if (
            self._allow_script_objects
            and (module == "__torch__" or module.startswith("__torch__."))
            and not module.startswith("__torch__.torch.classes")  # C++ classes restore via their own code
        ):
            qualname = f"{module}.{name}"
            cls = self._script_classes.get(qualname)
            if cls is None:
                cls = type(name, (ScriptObject,), {"type_name": qualname})
                self._script_classes[qualname] = cls
            return cls
        why = (
            "TorchScript classes are only expected inside a TorchScript archive"
            if module.startswith("__torch__")
            else "only tensors and plain containers are allowed; any other global could run code"
        )
        raise CheckpointError(
            f"{self._source}: refusing to load global '{module}.{name}': {why}. {CONVERT_HINT}"
        )

    def persistent_load(self, pid: Any) -> StorageRef:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CheckpointError(f"{self._source}: unsupported persistent id {str(pid)[:80]!r}")
        if len(pid) == 5:
            _, storage_type, key, _location, numel = pid
        elif len(pid) == 6:  # legacy format: trailing view metadata
            _, storage_type, key, _location, numel, view = pid
            if view is not None:
                raise CheckpointError(f"{self._source}: legacy storage views are not supported. {CONVERT_HINT}")
        else:
            raise CheckpointError(f"{self._source}: malformed storage id {pid!r}")
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(
                f"{self._source}: storage of type {storage_type!r} is not supported (only typed storages "
                f"of {sorted(_STORAGE_DTYPES)}). {CONVERT_HINT}"
            )
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self._source}: malformed storage id {pid!r}")
        ref = StorageRef(key, storage_type.dtype, numel)
        seen = self.storages.setdefault(key, ref)
        if seen != ref:
            raise CheckpointError(f"{self._source}: storage {key!r} is declared twice as {seen} and {ref}")
        return ref


def _unpickle(file: Any, source: str, allow_script_objects: bool = False) -> tuple[Any, _RestrictedUnpickler]:
    unpickler = _RestrictedUnpickler(file, source, allow_script_objects)
    try:
        return unpickler.load(), unpickler
    except CheckpointError as exc:
        message = str(exc)
        if source in message:
            raise
        raise CheckpointError(f"{source}: {message}") from None
    except Exception as exc:  # noqa: BLE001 - a truncated or malformed pickle (or MemoryError): say so
        raise CheckpointError(f"{source}: not a readable pickle ({type(exc).__name__}: {str(exc)[:200]})") from None


# ---------------------------------------------------------------------------------------------
# Files


class TorchFile:
    """An opened torch pickle: `obj` holds `TensorRef`s (and `ScriptObject`s for TorchScript)."""

    def __init__(self, obj: Any, is_torchscript: bool, read_storage: Callable[[StorageRef], torch.Tensor],
                 declarations: dict[str, tuple[list[str], list[str]] | None] | None = None) -> None:
        self.obj = obj
        self.is_torchscript = is_torchscript
        self._read_storage = read_storage
        self._declarations = declarations or {}
        self._cache: dict[str, torch.Tensor] = {}

    def tensor(self, ref: TensorRef) -> torch.Tensor:
        flat = self._cache.get(ref.storage.key)
        if flat is None:
            flat = self._read_storage(ref.storage)
            self._cache[ref.storage.key] = flat
        return flat.as_strided(ref.size, ref.stride, ref.offset)

    def materialize(self, obj: Any) -> Any:
        """Replace every TensorRef in plain containers by a tensor read from the file.

        For trusted structures (tests, tools): `read_checkpoint` never walks a file's containers,
        it checks a flat dict of tensors first.
        """
        try:
            return self._materialize(obj)
        except RecursionError:
            raise CheckpointError("containers nested too deeply to read") from None

    def _materialize(self, obj: Any) -> Any:
        if isinstance(obj, TensorRef):
            return self.tensor(obj)
        if isinstance(obj, dict):
            return {k: self._materialize(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self._materialize(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self._materialize(v) for v in obj)
        return obj

    def script_state_dict(self) -> dict[str, TensorRef]:
        """Parameters and buffers of a TorchScript module tree, keyed as `Module.state_dict()` keys them."""
        if not isinstance(self.obj, ScriptObject):
            raise CheckpointError("the archive's data.pkl does not hold a TorchScript module")
        out: dict[str, TensorRef] = {}
        self._visited = 0
        self._walk(self.obj, "", out, set())
        return out

    def _walk(self, record: ScriptObject, prefix: str, out: dict[str, TensorRef], active: set[int]) -> None:
        if id(record) in active:
            raise CheckpointError(f"TorchScript module tree has a cycle at '{prefix}'")
        # Shared submodules make the tree a DAG that a walk could visit exponentially often.
        self._visited += 1
        if self._visited > MAX_SCRIPT_MODULES or len(active) >= MAX_SCRIPT_DEPTH:
            raise CheckpointError(
                f"TorchScript module tree with more than {MAX_SCRIPT_MODULES:,} modules or deeper than "
                f"{MAX_SCRIPT_DEPTH} levels (at '{prefix[:80]}'); refused"
            )
        attributes = getattr(record, "attributes", None)
        if not isinstance(attributes, dict):
            raise CheckpointError(f"TorchScript object {record.type_name} at '{prefix}' has no attributes")
        declared = self._declarations.get(record.type_name)
        # With the class's declarations, plain tensor attributes (not parameters or buffers) are left
        # out, as state_dict() leaves them out; without, every tensor attribute counts.
        state_names = None if declared is None else set(declared[0]) | set(declared[1])
        children = []
        for name, value in attributes.items():
            if isinstance(value, TensorRef):
                if state_names is None or name in state_names:
                    out[prefix + name] = value
            elif isinstance(value, ScriptObject):
                children.append((name, value))
        active.add(id(record))
        for name, child in children:
            self._walk(child, f"{prefix}{name}.", out, active)
        active.discard(id(record))


def _flat_tensor(data: bytes | bytearray, ref: StorageRef, source: str) -> torch.Tensor:
    """The storage's bytes as a flat tensor; a bytearray is used in place (no copy)."""
    itemsize = torch.empty((), dtype=ref.dtype).element_size()
    if len(data) != ref.numel * itemsize:
        raise CheckpointError(
            f"{source}: storage {ref.key!r} holds {len(data)} bytes, expected {ref.numel} x {itemsize}"
        )
    if ref.numel == 0:
        return torch.empty(0, dtype=ref.dtype)
    return torch.frombuffer(bytearray(data) if isinstance(data, bytes) else data, dtype=ref.dtype)


_CLASS_RE = re.compile(r"^class\s+(\w+)\s*\(", re.MULTILINE)
_DECL_RE = re.compile(r"^\s+(__parameters__|__buffers__)\s*=\s*(\[[^\]]*\])", re.MULTILINE)


def _name_list(literal: str, where: str) -> list[str]:
    # literal_eval only parses literals; nothing from the file is executed.
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise CheckpointError(f"{where}: unreadable declaration {literal[:60]!r} ({type(exc).__name__})") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CheckpointError(f"{where}: declaration {literal[:60]!r} is not a list of names")
    return value


class _ZipReader:
    """Members of a torch zip archive, each size checked against the directory and the limits before
    it is read, and all reads together bounded by the archive's size (see `limits`)."""

    def __init__(self, path: Path, source: str) -> None:
        self.source = source
        self.archive_bytes = os.path.getsize(path)
        self.budget = ARCHIVE_EXPANSION * self.archive_bytes + ARCHIVE_SLACK_BYTES
        try:
            self.zf = zipfile.ZipFile(path)
            infos = self.zf.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise CheckpointError(f"{source}: a damaged zip archive ({type(exc).__name__}: {exc})") from None
        self.infos = {info.filename: info for info in infos}

    def size(self, name: str) -> int:
        return self.infos[name].file_size

    def read(self, name: str, limit: int, what: str) -> bytearray:
        info = self.infos[name]
        where = f"{self.source}: {what} '{name}'"
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{where} is encrypted; refused")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(f"{where} uses zip compression method {info.compress_type}; only stored "
                                  "(as torch.save writes) and deflated members are read")
        if info.file_size > limit:
            raise CheckpointError(f"{where} declares {info.file_size:,} bytes, more than the {limit:,} allowed")
        if info.file_size > SMALL_MEMBER_BYTES and info.file_size > MAX_MEMBER_RATIO * max(info.compress_size, 1):
            raise CheckpointError(
                f"{where} would inflate {info.compress_size:,} compressed bytes to {info.file_size:,} "
                f"(more than {MAX_MEMBER_RATIO}:1): a deflate bomb? Refused before inflating; torch.save "
                "stores members uncompressed"
            )
        if info.file_size > self.budget:
            raise CheckpointError(
                f"{where} declares {info.file_size:,} bytes; with what was read before, more than "
                f"{ARCHIVE_EXPANSION} x the archive's {self.archive_bytes:,} bytes (overlapping or inflating members?); refused"
            )
        self.budget -= info.file_size
        buffer = bytearray(info.file_size)  # read in place: one copy of the bytes, writable for torch
        try:
            with self.zf.open(info) as f:
                view, filled = memoryview(buffer), 0
                while filled < len(buffer):
                    n = f.readinto(view[filled:])
                    if not n:
                        raise EOFError(f"member ends after {filled:,} of {len(buffer):,} bytes")
                    filled += n
                if f.read(1):
                    raise zipfile.BadZipFile("member longer than its declared size")
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{where} cannot be read: {type(exc).__name__}: {exc}") from None
        return buffer


def _script_declarations(zr: _ZipReader, root: str) -> dict[str, tuple[list[str], list[str]] | None]:
    """Parameter and buffer names per TorchScript class, read as text from `<root>/code/**.py`."""
    out: dict[str, tuple[list[str], list[str]] | None] = {}
    code_dir = f"{root}/code/"
    names = [n for n in zr.infos if n.startswith(code_dir) and n.endswith(".py")]
    total = sum(zr.size(n) for n in names)
    if total > MAX_SCRIPT_CODE_BYTES:
        raise CheckpointError(f"{zr.source}: {total:,} bytes of TorchScript code, more than the "
                              f"{MAX_SCRIPT_CODE_BYTES:,} allowed; refused before reading")
    for name in names:
        module = name[len(code_dir):-3].replace("/", ".")
        text = zr.read(name, MAX_SCRIPT_CODE_BYTES, "TorchScript code").decode("utf-8", errors="replace")
        starts = [(m.start(), m.group(1)) for m in _CLASS_RE.finditer(text)]
        for i, (start, cls) in enumerate(starts):
            body = text[start: starts[i + 1][0] if i + 1 < len(starts) else len(text)]
            decl = {m.group(1): m.group(2) for m in _DECL_RE.finditer(body)}
            if "__parameters__" in decl and "__buffers__" in decl:
                where = f"{zr.source}: {name}, class {cls}"
                out[f"{module}.{cls}"] = (_name_list(decl["__parameters__"], where), _name_list(decl["__buffers__"], where))
            else:
                out[f"{module}.{cls}"] = None
    return out


def _zip_root(names: Any, source: str) -> str:
    roots = {n.split("/")[0] for n in names if n.count("/") == 1 and n.endswith("/data.pkl")}
    if len(roots) != 1:
        found = "several" if roots else "no"
        raise CheckpointError(
            f"{source}: a zip file but not a PyTorch archive ({found} '<root>/data.pkl' entries); "
            "only torch.save and TorchScript archives are read."
        )
    return roots.pop()


def _open_zip(path: Path, source: str) -> TorchFile:
    zr = _ZipReader(path, source)
    names = zr.infos
    root = _zip_root(names, source)
    if f"{root}/byteorder" in names and zr.read(f"{root}/byteorder", 64, "member").strip() != b"little":
        raise CheckpointError(f"{source}: big-endian archives are not supported. {CONVERT_HINT}")
    is_script = any(n.startswith(f"{root}/code/") for n in names)
    data = zr.read(f"{root}/data.pkl", MAX_PICKLE_BYTES, "pickle")
    obj, _ = _unpickle(io.BytesIO(data), source, allow_script_objects=is_script)
    del data

    def read_storage(ref: StorageRef) -> torch.Tensor:
        entry = f"{root}/data/{ref.key}"
        if entry not in names:
            raise CheckpointError(f"{source}: storage entry {entry!r} is missing")
        # The pickle's declared size must be exactly the member's size, checked before reading.
        if zr.size(entry) != ref.nbytes:
            raise CheckpointError(
                f"{source}: storage {ref.key!r} holds {zr.size(entry)} bytes, expected {ref.numel} x "
                f"{_itemsize(ref.dtype)} ({ref.dtype})"
            )
        return _flat_tensor(zr.read(entry, ref.nbytes, "storage"), ref, source)

    try:
        declarations = _script_declarations(zr, root) if is_script else None
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure of a TorchScript archive, named
        raise CheckpointError(f"{source}: unreadable TorchScript archive ({type(exc).__name__}: {exc})") from None
    return TorchFile(obj, is_script, read_storage, declarations)


def _open_legacy(path: Path, source: str) -> TorchFile:
    file_bytes = os.path.getsize(path)
    with open(path, "rb") as f:
        magic, _ = _unpickle(f, source)
        if magic != _LEGACY_MAGIC:
            raise CheckpointError(
                f"{source}: not a PyTorch file (no torch.save magic number); plain pickles are not read. "
                + CONVERT_HINT
            )
        protocol, _ = _unpickle(f, source)
        if protocol != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{source}: unsupported legacy torch.save protocol {str(protocol)[:40]!r}")
        sys_info, _ = _unpickle(f, source)
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
            raise CheckpointError(f"{source}: big-endian legacy files are not supported. {CONVERT_HINT}")
        obj, unpickler = _unpickle(f, source)
        keys, _ = _unpickle(f, source)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise CheckpointError(f"{source}: malformed storage key list")
        # Storages follow back to back: an int64 element count, then the raw little-endian bytes.
        offsets: dict[str, int] = {}
        for key in keys:
            ref = unpickler.storages.get(key)
            if ref is None:
                raise CheckpointError(f"{source}: storage {key!r} is written but never referenced")
            header = f.read(8)
            if len(header) != 8:
                raise CheckpointError(f"{source}: file ends inside the storage data")
            (numel,) = struct.unpack("<q", header)
            if numel != ref.numel:
                raise CheckpointError(f"{source}: storage {key!r} has {numel} elements, expected {ref.numel}")
            start = f.tell()
            # The declared size must fit in what is left of the file, checked before anything is read.
            if ref.nbytes > file_bytes - start:
                raise CheckpointError(
                    f"{source}: storage {key!r} declares {numel:,} elements of {ref.dtype} ({ref.nbytes:,} bytes) "
                    f"but only {file_bytes - start:,} bytes are left in the file"
                )
            offsets[key] = start
            f.seek(ref.nbytes, 1)

    def read_storage(ref: StorageRef) -> torch.Tensor:
        if ref.key not in offsets:
            raise CheckpointError(f"{source}: storage {ref.key!r} is missing")
        with open(path, "rb") as fh:
            fh.seek(offsets[ref.key])
            return _flat_tensor(fh.read(ref.nbytes), ref, source)

    return TorchFile(obj, False, read_storage)


def open_torch_file(path: str | Path) -> TorchFile:
    """Open a torch.save file (zip or legacy) or a TorchScript archive without executing it."""
    path = Path(path)
    source = str(path)
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as exc:
        raise CheckpointError(f"{source}: cannot be read ({exc})") from None
    if is_zip:
        return _open_zip(path, source)
    with open(path, "rb") as f:
        head = f.read(16)
    if not head.startswith(b"\x80"):  # every legacy torch.save file starts with a pickle protocol opcode
        raise CheckpointError(f"{source}: not a checkpoint ({_what_it_looks_like(head)}); clipforge reads safetensors, "
                              "torch.save / TorchScript archives and transformers / open_clip / diffusers folders")
    return _open_legacy(path, source)


_MAGIC = [(b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"%PDF", "a PDF document"), (b"RIFF", "a RIFF file (WebP, WAV, ...)"), (b"\x1f\x8b", "a gzip archive"),
          (b"ustar", "a tar archive"), (b"\x7fELF", "a program"), (b"GGUF", "a GGUF model (llama.cpp)"),
          (b"{", "JSON text"), (b"<", "XML or HTML text")]


def _what_it_looks_like(head: bytes) -> str:
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return f"it looks like {what}"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "it looks like plain text"
    return "its first bytes are no known checkpoint format"
