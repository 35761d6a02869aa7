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
"""

from __future__ import annotations

import ast
import collections
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from .errors import CheckpointError

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


@dataclass(frozen=True)
class StorageRef:
    """One storage of the file: its key in the file, element dtype and element count."""

    key: str
    dtype: torch.dtype
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """A strided view of a storage, as the pickle describes it; no bytes read yet."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: torch.dtype


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
    # Bounds are checked here, before any bytes are read, so a crafted view cannot read past its storage.
    if all(s > 0 for s in size_t):
        last = storage_offset + sum((s - 1) * st for s, st in zip(size_t, stride_t))
        if last >= storage.numel:
            raise CheckpointError(
                f"tensor of size {size_t} (stride {stride_t}, offset {storage_offset}) reaches past "
                f"its storage of {storage.numel} elements"
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
    except CheckpointError:
        raise
    except Exception as exc:  # a truncated or malformed pickle: say so, do not guess
        raise CheckpointError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from exc


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
        """Replace every TensorRef in plain containers by a tensor read from the file."""
        if isinstance(obj, TensorRef):
            return self.tensor(obj)
        if isinstance(obj, dict):
            return {k: self.materialize(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.materialize(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self.materialize(v) for v in obj)
        return obj

    def script_state_dict(self) -> dict[str, TensorRef]:
        """Parameters and buffers of a TorchScript module tree, keyed as `Module.state_dict()` keys them."""
        if not isinstance(self.obj, ScriptObject):
            raise CheckpointError("the archive's data.pkl does not hold a TorchScript module")
        out: dict[str, TensorRef] = {}
        self._walk(self.obj, "", out, set())
        return out

    def _walk(self, record: ScriptObject, prefix: str, out: dict[str, TensorRef], active: set[int]) -> None:
        if id(record) in active:
            raise CheckpointError(f"TorchScript module tree has a cycle at '{prefix}'")
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


def _script_declarations(zf: zipfile.ZipFile, root: str) -> dict[str, tuple[list[str], list[str]] | None]:
    """Parameter and buffer names per TorchScript class, read as text from `<root>/code/**.py`."""
    out: dict[str, tuple[list[str], list[str]] | None] = {}
    code_dir = f"{root}/code/"
    for name in zf.namelist():
        if not (name.startswith(code_dir) and name.endswith(".py")):
            continue
        module = name[len(code_dir):-3].replace("/", ".")
        text = zf.read(name).decode("utf-8", errors="replace")
        starts = [(m.start(), m.group(1)) for m in _CLASS_RE.finditer(text)]
        for i, (start, cls) in enumerate(starts):
            body = text[start: starts[i + 1][0] if i + 1 < len(starts) else len(text)]
            decl = {m.group(1): m.group(2) for m in _DECL_RE.finditer(body)}
            if "__parameters__" in decl and "__buffers__" in decl:
                # literal_eval only parses literals; nothing from the file is executed.
                out[f"{module}.{cls}"] = (ast.literal_eval(decl["__parameters__"]), ast.literal_eval(decl["__buffers__"]))
            else:
                out[f"{module}.{cls}"] = None
    return out


def _zip_root(zf: zipfile.ZipFile, source: str) -> str:
    roots = {n.split("/")[0] for n in zf.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")}
    if len(roots) != 1:
        found = "several" if roots else "no"
        raise CheckpointError(
            f"{source}: a zip file but not a PyTorch archive ({found} '<root>/data.pkl' entries); "
            "only torch.save and TorchScript archives are read."
        )
    return roots.pop()


def _open_zip(path: Path, source: str) -> TorchFile:
    zf = zipfile.ZipFile(path)
    root = _zip_root(zf, source)
    names = set(zf.namelist())
    if f"{root}/byteorder" in names and zf.read(f"{root}/byteorder").strip() != b"little":
        raise CheckpointError(f"{source}: big-endian archives are not supported. {CONVERT_HINT}")
    is_script = any(n.startswith(f"{root}/code/") for n in names)
    with zf.open(f"{root}/data.pkl") as f:
        obj, _ = _unpickle(f, source, allow_script_objects=is_script)

    def read_storage(ref: StorageRef) -> torch.Tensor:
        entry = f"{root}/data/{ref.key}"
        if entry not in names:
            raise CheckpointError(f"{source}: storage entry {entry!r} is missing")
        return _flat_tensor(zf.read(entry), ref, source)

    declarations = _script_declarations(zf, root) if is_script else None
    return TorchFile(obj, is_script, read_storage, declarations)


def _open_legacy(path: Path, source: str) -> TorchFile:
    with open(path, "rb") as f:
        magic, _ = _unpickle(f, source)
        if magic != _LEGACY_MAGIC:
            raise CheckpointError(
                f"{source}: not a PyTorch file (no torch.save magic number); plain pickles are not read. "
                + CONVERT_HINT
            )
        protocol, _ = _unpickle(f, source)
        if protocol != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{source}: unsupported legacy torch.save protocol {protocol!r}")
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
            offsets[key] = f.tell()
            f.seek(numel * torch.empty((), dtype=ref.dtype).element_size(), 1)

    def read_storage(ref: StorageRef) -> torch.Tensor:
        if ref.key not in offsets:
            raise CheckpointError(f"{source}: storage {ref.key!r} is missing")
        with open(path, "rb") as fh:
            fh.seek(offsets[ref.key])
            return _flat_tensor(fh.read(ref.numel * torch.empty((), dtype=ref.dtype).element_size()), ref, source)

    return TorchFile(obj, False, read_storage)


def open_torch_file(path: str | Path) -> TorchFile:
    """Open a torch.save file (zip or legacy) or a TorchScript archive without executing it."""
    path = Path(path)
    source = str(path)
    if zipfile.is_zipfile(path):
        return _open_zip(path, source)
    return _open_legacy(path, source)
