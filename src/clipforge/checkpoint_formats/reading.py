"""Read any supported checkpoint file or directory into a raw state dict plus what is known about it.

Resolution for a path:
  directory   -> transformers layout (config.json + model.safetensors / pytorch_model.bin, possibly
                 sharded via *.index.json), or open_clip's hub layout (open_clip_config.json +
                 open_clip_model.safetensors / open_clip_pytorch_model.bin)
  file        -> safetensors (by header), else a zip PyTorch archive (torch.save or TorchScript),
                 else a legacy torch.save file. Pickles go through `safe_pickle`, never `pickle.load`.

Nothing a file declares is trusted: JSON is parsed with size and depth limits, a safetensors
header's length and offsets are checked against the file before any tensor is read, and symlink
loops, dangling links and FIFOs are named as such (see `limits` and docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch

from ..configs import ARCHITECTURE_CONFIGS, ClipConfig, ModelRecord, PreprocessConfig, TokenizerConfig
from .errors import CheckpointError
from .families import (
    check_config_limits,
    detect_family,
    family_layout,
    hf_config_to_config,
    hf_family,
    open_clip_family,
)
from .limits import (
    MAX_SAFETENSORS_HEADER_BYTES,
    MAX_TENSOR_DIMS,
    MAX_TENSORS,
    MAX_TOKENIZER_MODEL_BYTES,
    optional_file,
    parse_json,
    path_kind,
    read_json,
)
from .safe_pickle import TensorRef, open_torch_file
from .towers import skip_for_tower

Format = Literal["openai", "open_clip", "hf", "clipforge"]
Skip = Optional[Callable[[str], bool]]  # keys a reader may leave unread (their tensors come back on "meta")

CLIPFORGE_CONFIG_KEY = "clipforge_config"  # files written before records: the ClipConfig alone
CLIPFORGE_RECORD_KEY = "clipforge_record"  # the whole ModelRecord (configs.py), as JSON
CLIPFORGE_TOKENIZER_KEY = "clipforge_tokenizer_model"  # the tokenizer model file's bytes, base64 (sentencepiece kinds)
END_OF_TEXT = "<|endoftext|>"


@dataclass
class Checkpoint:
    """Tensors as named in the file, the layout they follow, and whatever numerics it states about itself.

    Tensors a one-tower read left unread are on the "meta" device: shape and dtype only.
    """

    state_dict: dict[str, torch.Tensor]
    format: Format
    hf_config: Optional[dict[str, Any]]
    source: str
    # The config stored with the weights: a "clipforge" file's metadata, or an open_clip hub
    # directory's open_clip_config.json. (An HF directory's config is `hf_config`.)
    clipforge_config: Optional[Any] = None
    record: Optional[ModelRecord] = None  # a clipforge file's whole record
    preprocess: Optional[PreprocessConfig] = None  # preprocessor_config.json, or open_clip's preprocess_cfg
    pad_token_id: Optional[int] = None  # from a transformers directory's tokenizer_config.json
    torchscript: bool = False  # OpenAI's own release format: its numerics are OpenAI's
    family: str = "clip"  # configs.ARCHITECTURE_CONFIGS / families.FAMILY_LAYOUTS name
    tokenizer: Optional[TokenizerConfig] = None  # a transformers directory's tokenizer files, where its family reads them


def _safetensors_kind(path: Path) -> Literal["safetensors", "not", "damaged"]:
    """Whether a file is a safetensors file, by its first bytes.

    A safetensors file starts with a little-endian u64 header length, then a JSON object. A file
    that starts like one ('{' at byte 8, not a zip) but whose header length cannot fit is "damaged".
    """
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{" or head.startswith(b"PK"):
        return "not"
    (n,) = struct.unpack("<Q", head[:8])
    return "safetensors" if 0 < n <= path.stat().st_size - 8 else "damaged"


# safetensors dtype names and their element sizes in bytes.
_SAFETENSORS_ITEMSIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U64": 8, "U32": 4, "U16": 2, "C64": 8, "F8_E4M3": 1, "F8_E4M3FNUZ": 1, "F8_E5M2": 1, "F8_E5M2FNUZ": 1,
}


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


def _meta_tensor(name: str, dtype: Any, shape: list[int], source: str) -> torch.Tensor:
    """An unread tensor: its shape and dtype on the meta device (no memory)."""
    torch_dtype = _SAFETENSORS_DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if torch_dtype is None:
        raise CheckpointError(f"{source}: tensor {name!r} has dtype {dtype!r}, which clipforge does not read")
    return torch.empty(shape, dtype=torch_dtype, device="meta")


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The checked JSON header of a safetensors file: every offset inside the file, every size exact."""
    source = str(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_SAFETENSORS_HEADER_BYTES or n > size - 8:
            raise CheckpointError(
                f"{source}: safetensors header length {n:,} bytes does not fit in the file ({size:,} bytes) "
                f"or exceeds {MAX_SAFETENSORS_HEADER_BYTES:,}; damaged or not a safetensors file"
            )
        raw = f.read(n)
    header = parse_json(raw, f"{source} (safetensors header)")
    if not isinstance(header, dict):
        raise CheckpointError(f"{source}: safetensors header is not a JSON object")
    if len(header) > MAX_TENSORS + 1:
        raise CheckpointError(f"{source}: {len(header) - 1:,} tensors, more than the {MAX_TENSORS:,} allowed")
    data_size = size - 8 - n
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise CheckpointError(f"{source}: safetensors __metadata__ must map names to strings")
            continue
        where = f"{source}: tensor {name!r}"
        if not isinstance(info, dict):
            raise CheckpointError(f"{where}: its header entry is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        itemsize = _SAFETENSORS_ITEMSIZE.get(dtype) if isinstance(dtype, str) else None
        if itemsize is None:
            raise CheckpointError(f"{where}: unsupported dtype {dtype!r}")
        if (not isinstance(shape, list) or len(shape) > MAX_TENSOR_DIMS
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise CheckpointError(f"{where}: shape {str(shape)[:80]} is not a list of at most "
                                  f"{MAX_TENSOR_DIMS} non-negative ints")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
            raise CheckpointError(f"{where}: data_offsets {str(offsets)[:80]} are not [begin, end] with 0 <= begin <= end")
        if offsets[1] > data_size:
            raise CheckpointError(
                f"{where}: data_offsets {offsets} reach past the end of the file's data ({data_size:,} bytes); "
                "the file is truncated or damaged"
            )
        nbytes = math.prod(shape) * itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise CheckpointError(
                f"{where}: shape {shape} of {dtype} needs {nbytes:,} bytes but data_offsets {offsets} "
                f"give {offsets[1] - offsets[0]:,}"
            )
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise CheckpointError(f"{source}: tensors {a!r} and {b!r} overlap in the file")
    return header


def _read_safetensors(path: Path, skip: Skip = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    header = _safetensors_header(path)  # checked first: safetensors' own errors name neither file nor reason well
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {
                k: (_meta_tensor(k, header[k]["dtype"], header[k]["shape"], str(path)) if skip is not None and skip(k)
                    else f.get_tensor(k))
                for k in f.keys()
            }
    except Exception as exc:  # noqa: BLE001 - SafetensorError and friends, named
        raise CheckpointError(f"{path}: unreadable safetensors file ({type(exc).__name__}: {exc})") from exc
    if len(tensors) != len(header) - ("__metadata__" in header):
        raise CheckpointError(f"{path}: safetensors header and contents disagree")
    return tensors, metadata


def _check_tensors(obj: Any, source: str) -> dict[str, TensorRef]:
    """A flat dict of named tensor descriptions, checked before any tensor is read."""
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{source}: expected a non-empty dict of tensors, got {type(obj).__name__}")
    if len(obj) > MAX_TENSORS:
        raise CheckpointError(f"{source}: {len(obj):,} entries, more than the {MAX_TENSORS:,} tensors allowed")
    bad = [k if isinstance(k, str) else repr(k)[:40] for k, v in obj.items()
           if not isinstance(k, str) or not isinstance(v, TensorRef)]
    if bad:
        raise CheckpointError(
            f"{source}: entries that are not named tensors: {bad[:10]}; expected a state dict or an "
            "open_clip training checkpoint ({'state_dict': ..., 'epoch': ...})"
        )
    return dict(obj)


# What held a torch file's tensors (besides a plain state dict): _read_torch's second value.
PLAIN, WRAPPED, TORCHSCRIPT = "plain", "wrapped", "torchscript"


def _read_torch(path: Path, skip: Skip = None) -> tuple[dict[str, torch.Tensor], str]:
    """State dict of a torch file, and what held it: PLAIN, WRAPPED (an open_clip training checkpoint)
    or TORCHSCRIPT (OpenAI's own release archives)."""
    source = str(path)
    tf = open_torch_file(path)

    def read(refs: dict[str, TensorRef]) -> dict[str, torch.Tensor]:
        return {k: (_meta_tensor(k, v.storage.dtype, list(v.size), source) if skip is not None and skip(k)
                    else tf.tensor(v)) for k, v in refs.items()}

    if tf.is_torchscript:
        refs = _check_tensors(tf.script_state_dict(), source)  # layout: by keys
        return read(refs), TORCHSCRIPT
    obj = tf.obj
    holder = PLAIN
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        # open_clip training checkpoint: {"epoch", "name", "state_dict", "optimizer", ...}.
        # Only the state dict's tensors are read; the optimizer state stays on disk.
        obj, holder = obj["state_dict"], WRAPPED
    # Checked flat before anything is read: nested containers are never walked.
    refs = _check_tensors(obj, source)
    return read(refs), holder


def _read_weights_file(path: Path, skip: Skip = None) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    """Tensors, safetensors metadata and what held them (PLAIN, WRAPPED or TORCHSCRIPT).

    Every refusal names the file: messages raised deeper down without it get it prefixed here.
    """
    try:
        return _read_weights(path, skip)
    except CheckpointError as exc:
        if str(path) in str(exc):
            raise
        raise CheckpointError(f"{path}: {exc}") from None


def _read_weights(path: Path, skip: Skip = None) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    if path_kind(path) != "file":
        raise CheckpointError(f"{path}: a directory where a weights file was expected")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: an empty file")
    kind = _safetensors_kind(path)
    if kind == "safetensors" or (kind == "damaged" and path.suffix == ".safetensors"):
        tensors, metadata = _read_safetensors(path, skip)  # a damaged header is named there
        return tensors, metadata, PLAIN
    if kind == "damaged":
        _safetensors_header(path)  # raises: it starts like a safetensors file but cannot be one
    if path.suffix == ".safetensors":
        raise CheckpointError(f"{path}: named .safetensors but its header is not a safetensors header")
    tensors, holder = _read_torch(path, skip)
    return tensors, {}, holder


def _read_sharded(index_path: Path, skip: Skip = None) -> dict[str, torch.Tensor]:
    index = read_json(index_path, "shard index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_path}: no 'weight_map' in the shard index")
    if not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_path}: the shard index's weight_map must map tensor names to file names")
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if shard_path.parent != index_path.parent or shard in ("", ".", ".."):
            raise CheckpointError(f"{index_path}: shard {shard!r} lies outside the checkpoint directory")
        if skip is not None and all(skip(k) for k, v in weight_map.items() if v == shard):
            # Nothing wanted from this shard: its header (checked) gives the shapes, no tensor is read.
            tensors = _unread_safetensors(shard_path) if _safetensors_kind(shard_path) == "safetensors" else \
                _read_weights_file(shard_path, skip)[0]
        else:
            tensors, _, _ = _read_weights_file(shard_path, skip)
        duplicated = sorted(set(tensors) & set(out))
        if duplicated:
            raise CheckpointError(f"{shard_path}: tensors also found in another shard: {duplicated[:10]}")
        out.update(tensors)
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise CheckpointError(f"{index_path}: tensors listed in the index but absent from the shards: {missing[:10]}")
    return out


def _unread_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file as a meta tensor, from its checked header alone."""
    try:
        header = _safetensors_header(path)
    except CheckpointError as exc:
        raise exc if str(path) in str(exc) else CheckpointError(f"{path}: {exc}") from None
    return {k: _meta_tensor(k, v["dtype"], v["shape"], str(path)) for k, v in header.items() if k != "__metadata__"}


_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _read_directory(path: Path, skip: Skip = None) -> Checkpoint:
    source = str(path)
    if optional_file(path / "config.json"):
        hf_config = read_json(path / "config.json", "config.json")
        if not isinstance(hf_config, dict):
            raise CheckpointError(f"{path / 'config.json'}: a transformers config must be a JSON object")
        try:
            family = hf_family(hf_config)
        except CheckpointError as exc:
            raise CheckpointError(f"{path / 'config.json'}: {exc}") from None
        for name in _HF_WEIGHTS:
            weights = path / name
            if optional_file(weights):
                if name.endswith(".index.json"):
                    tensors = _read_sharded(weights, skip)
                else:
                    tensors, _, _ = _read_weights_file(weights, skip)
                read_tokenizer = family_layout(family).read_hf_tokenizer
                return Checkpoint(tensors, "hf", hf_config, source, preprocess=hf_preprocess_config(path),
                                  pad_token_id=hf_pad_token_id(path) if family == "clip" else None, family=family,
                                  tokenizer=read_tokenizer(path) if read_tokenizer is not None else None)
        raise CheckpointError(f"{source}: has config.json but none of {list(_HF_WEIGHTS)}")
    for name in _OPEN_CLIP_WEIGHTS:
        weights = path / name
        if optional_file(weights):
            tensors, _, _ = _read_weights_file(weights, skip)
            cfg, preprocess, family = None, None, None
            config_path = path / "open_clip_config.json"
            if optional_file(config_path):
                # open_clip's hub layout: {"model_cfg": {...}, "preprocess_cfg": {...}}
                oc_config = read_json(config_path, "open_clip config")
                model_cfg = oc_config.get("model_cfg") if isinstance(oc_config, dict) else None
                if isinstance(model_cfg, dict):
                    family = open_clip_family(model_cfg)
                    convert = family_layout(family).open_clip_config_to_config
                    if convert is None:
                        raise CheckpointError(f"{config_path}: clipforge reads no open_clip config of the {family} family")
                    cfg = _config_from(config_path, convert, model_cfg)
                preprocess_cfg = oc_config.get("preprocess_cfg") if isinstance(oc_config, dict) else None
                if isinstance(preprocess_cfg, dict) and cfg is not None:
                    preprocess = _open_clip_preprocess(config_path, preprocess_cfg, cfg.image_size)
            if family is None:
                family, _ = detect_family(list(tensors))
            # Tokenizer files saved next to the weights (open_clip's hub directories of HF-text-tower models).
            read_tokenizer = family_layout(family).read_hf_tokenizer
            return Checkpoint(tensors, "open_clip", None, source, cfg, preprocess=preprocess, family=family,
                              tokenizer=read_tokenizer(path) if read_tokenizer is not None else None)
    raise CheckpointError(
        f"{source}: a directory without a transformers config.json + weights or open_clip weights "
        f"(looked for {list(_HF_WEIGHTS) + list(_OPEN_CLIP_WEIGHTS)})"
    )


def read_checkpoint(path: str | Path, tower: str = "both") -> Checkpoint:
    """Read a checkpoint file or directory without executing anything stored in it.

    Keys are returned as stored (wrapper prefixes such as `module.` included); `to_canonical`
    maps them onto the canonical layout. Raises `CheckpointError` for anything unsupported.

    tower: "image" or "text" reads only that tower's tensors (and the shared logit scale / bias);
    the other tower's come back as "meta" tensors, shape and dtype from the file's header, never
    read into memory (`towers.key_tower` says which key is which).
    """
    if tower not in ("both", "image", "text"):
        raise CheckpointError(f"tower must be 'both', 'image' or 'text', got {tower!r}")
    skip = skip_for_tower(tower)
    path = Path(path)
    if path_kind(path) == "dir":  # names symlink loops, broken links and FIFOs
        return _read_directory(path, skip)
    tensors, metadata, holder = _read_weights_file(path, skip)
    if CLIPFORGE_RECORD_KEY in metadata:
        where = f"{path} ('{CLIPFORGE_RECORD_KEY}' metadata)"
        tokenizer_model = _tokenizer_model_from(path, metadata.get(CLIPFORGE_TOKENIZER_KEY))
        record = _record_from(where, parse_json(metadata[CLIPFORGE_RECORD_KEY], where), tokenizer_model)
        return Checkpoint(tensors, "clipforge", None, str(path), record.architecture, record=record,
                          family=record.family)
    if CLIPFORGE_CONFIG_KEY in metadata:
        where = f"{path} ('{CLIPFORGE_CONFIG_KEY}' metadata)"
        cfg = _config_from(where, ClipConfig.from_dict, parse_json(metadata[CLIPFORGE_CONFIG_KEY], where))
        return Checkpoint(tensors, "clipforge", None, str(path), cfg)
    family, fmt = detect_family(list(tensors))
    if holder == WRAPPED and fmt == "openai":
        fmt = "open_clip"  # a training-checkpoint wrapper is open_clip's, whatever the keys
    return Checkpoint(tensors, fmt, None, str(path), torchscript=holder == TORCHSCRIPT, family=family)  # type: ignore[arg-type]


def _tokenizer_model_from(path: Path, encoded: Optional[str]) -> Optional[bytes]:
    """The tokenizer model bytes a clipforge file keeps (base64 in its metadata), size-checked first."""
    if encoded is None:
        return None
    if len(encoded) > MAX_TOKENIZER_MODEL_BYTES * 4 // 3 + 4:
        raise CheckpointError(f"{path}: a tokenizer model of over {MAX_TOKENIZER_MODEL_BYTES:,} bytes; refused")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError(f"{path}: '{CLIPFORGE_TOKENIZER_KEY}' metadata is not base64 ({exc})") from None


def _record_from(where: str, raw: Any, tokenizer_model: Optional[bytes] = None) -> ModelRecord:
    """A stored ModelRecord as a checked record, or a CheckpointError naming `where` and the reason."""
    try:
        record = ModelRecord.from_dict(raw, tokenizer_model=tokenizer_model)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{where}: not a usable model record ({type(exc).__name__}: {exc})") from None
    check_config_limits(record.architecture, where)
    return record


def hf_preprocess_config(directory: Path) -> Optional[PreprocessConfig]:
    """Image size and mean/std from transformers' image-processor config, when the directory has one.

    `CLIPImageProcessor.save_pretrained` writes preprocessor_config.json; transformers 5's
    `CLIPProcessor.save_pretrained` nests the same fields under "image_processor" in processor_config.json.
    """
    if not directory.is_dir():
        return None
    raw: Optional[dict] = None
    path = directory / "preprocessor_config.json"
    if optional_file(path):
        raw = read_json(path, "image-processor config")
    elif optional_file(path := directory / "processor_config.json"):
        raw = read_json(path, "processor config")
        raw = raw.get("image_processor") if isinstance(raw, dict) else None
    if not raw:
        return None
    try:
        resize = raw.get("size")
        squash = (raw.get("do_center_crop", "crop_size" in raw) is False and isinstance(resize, dict)
                  and "height" in resize and "width" in resize)
        if squash:
            # SiglipImageProcessor: resize to height x width, no crop.
            if resize["height"] != resize["width"]:
                raise CheckpointError(f"{path}: a non-square resize {resize} is not supported")
            size = resize["height"]
        else:
            crop = raw.get("crop_size", 224)
            size = crop.get("height", 224) if isinstance(crop, dict) else int(crop)
        cfg = PreprocessConfig(
            image_size=size,
            mean=tuple(float(x) for x in raw.get("image_mean", PreprocessConfig.mean)),
            std=tuple(float(x) for x in raw.get("image_std", PreprocessConfig.std)),
            interpolation="bilinear" if raw.get("resample") == 2 else "bicubic",
            mode="hf",
            resize_mode="squash" if squash else "shortest",
        )
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise CheckpointError(f"{path}: not a usable image-processor config ({type(exc).__name__}: {exc})") from None
    if (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 2**14 or len(cfg.mean) != 3
            or len(cfg.std) != 3 or not all(0 < s < 1e6 for s in cfg.std)
            or not all(abs(m) < 1e6 for m in cfg.mean)):
        raise CheckpointError(
            f"{path}: image size {str(size)[:20]}, mean {str(cfg.mean)[:60]} or std {str(cfg.std)[:60]} out of range; refused"
        )
    return cfg


def hf_pad_token_id(directory: Path) -> Optional[int]:
    """0 or 49407: what transformers' tokenizer of this directory pads with (tokenizer_config.json)."""
    if not optional_file(directory / "tokenizer_config.json"):
        return None
    raw = read_json(directory / "tokenizer_config.json", "tokenizer_config.json")
    pad = raw.get("pad_token") if isinstance(raw, dict) else None
    pad = pad.get("content") if isinstance(pad, dict) else pad
    if pad is None:
        return None
    return 49407 if pad == END_OF_TEXT else 0  # LAION's repos pad with "!", id 0


def _open_clip_preprocess(where: Path, raw: dict[str, Any], image_size: int) -> PreprocessConfig:
    """open_clip's preprocess_cfg ({"mean", "std", "interpolation", "resize_mode", "size"}) -> PreprocessConfig."""
    resize_mode = raw.get("resize_mode", "shortest")
    if resize_mode not in ("shortest", "squash"):
        raise CheckpointError(f"{where}: preprocess_cfg resize_mode {resize_mode!r} is not supported "
                              "(only 'shortest' and 'squash')")
    try:
        size = raw.get("size", image_size)
        size = int(size[0] if isinstance(size, (list, tuple)) else size)
        return PreprocessConfig(
            image_size=size,
            mean=tuple(float(v) for v in raw.get("mean", PreprocessConfig.mean)),
            std=tuple(float(v) for v in raw.get("std", PreprocessConfig.std)),
            interpolation=raw.get("interpolation", "bicubic"),
            mode="openai",
            resize_mode=resize_mode,
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: unusable preprocess_cfg ({type(exc).__name__}: {exc})") from None


def _config_from(where: str | Path, convert: Any, raw: Any) -> Any:
    """`convert(raw)` as a sane architecture config, or a CheckpointError naming `where` and the reason."""
    try:
        cfg = convert(raw)
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as exc:
        raise CheckpointError(f"{where}: not a usable CLIP config ({type(exc).__name__}: {exc})") from None
    if not isinstance(cfg, tuple(ARCHITECTURE_CONFIGS.values())):
        raise CheckpointError(f"{where}: not a usable CLIP config")
    check_config_limits(cfg, str(where))
    return cfg


def declared_config(checkpoint: Checkpoint) -> Optional[Any]:
    """The config a checkpoint states about itself (clipforge metadata, open_clip_config.json or a
    transformers config.json, of any family), checked against sane limits; None when it states none."""
    if checkpoint.clipforge_config is not None:
        return checkpoint.clipforge_config
    if checkpoint.hf_config is not None:
        return _config_from(Path(checkpoint.source) / "config.json", hf_config_to_config, checkpoint.hf_config)
    return None
