"""Phrase tables for interrogation: the phrase lists (four shipped in label_tables/, made from WordNet; see
label_tables/PROVENANCE.md, or any the caller supplies) and the on-disk cache of their embeddings.

Table embeddings are cached (safetensors) keyed by a digest of the model (`weights_digest`) and a
digest of the table's phrases, so a changed table or another model gets its own entry. A cache file
is trusted only after checking its format, keys, phrases, shape and a checksum of its numbers; a
file failing any check is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import torch

from clipforge.errors import InvalidInputError

__all__ = [
    "DEFAULT_TABLES", "SUBJECT_TABLES", "read_table", "load_default_table", "default_tables", "provenance",
    "table_digest", "default_cache_dir", "read_cache", "write_cache", "CacheInvalid",
]

DEFAULT_TABLES = ("mediums", "movements", "subjects", "styles")
SUBJECT_TABLES = ("subjects",)

_CACHE_FORMAT = "clipforge.interrogation_table"
_CACHE_VERSION = "1"

PathLike = Union[str, "os.PathLike[str]"]


def _table_dir() -> Any:
    return resources.files("clipforge.tasks").joinpath("label_tables")


def _parse_table(text: str) -> list[str]:
    """Phrases of a table file: stripped lines, blank and '#' lines skipped, duplicates dropped (first kept)."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            seen.setdefault(line, None)
    return list(seen)


def read_table(path: PathLike) -> list[str]:
    """A user table: one phrase per line (UTF-8); blank lines and lines starting with '#' are skipped."""
    phrases = _parse_table(Path(path).read_text(encoding="utf-8"))
    if not phrases:
        raise InvalidInputError(f"label table {os.fspath(path)!r} holds no phrases")
    return phrases


def load_default_table(name: str) -> list[str]:
    """One of the shipped tables (`DEFAULT_TABLES`) by name."""
    if name not in DEFAULT_TABLES:
        raise InvalidInputError(f"no default label table {name!r}; the default tables are {', '.join(DEFAULT_TABLES)}")
    return _parse_table(_table_dir().joinpath(f"{name}.txt").read_text(encoding="utf-8"))


def default_tables(names: Iterable[str] = DEFAULT_TABLES) -> dict[str, list[str]]:
    """The shipped tables named in `names` (all four by default), as {name: phrases}."""
    return {name: load_default_table(name) for name in names}


def provenance() -> str:
    """label_tables/PROVENANCE.md: where the default tables come from, their licence, how to rebuild them."""
    return _table_dir().joinpath("PROVENANCE.md").read_text(encoding="utf-8")


# ---- cache keys -----------------------------------------------------------------------------------


def table_digest(phrases: Sequence[str]) -> str:
    """sha256 of the phrases in order (row order is part of the cached matrix)."""
    return hashlib.sha256(json.dumps(list(phrases), ensure_ascii=False).encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    """<clipforge cache>/interrogate: the one cache rule of `clipforge.hub_cache.default_cache_dir`
    ($CLIPFORGE_CACHE, else $XDG_CACHE_HOME/clipforge, else ~/.cache/clipforge; read at call time)."""
    from clipforge.hub_cache import default_cache_dir as clipforge_cache

    return clipforge_cache() / "interrogate"


class CacheInvalid(ValueError):
    pass


def _data_digest(embeddings: torch.Tensor) -> str:
    return hashlib.sha256(embeddings.contiguous().numpy().tobytes()).hexdigest()


def read_cache(path: Path, model_key: str, phrases: list[str], digest: str) -> torch.Tensor:
    """The cached [n, dim] float32 matrix, or CacheInvalid saying why the file cannot be trusted."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = set(f.keys())
            embeddings = f.get_tensor("embeddings") if names == {"embeddings"} else None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CacheInvalid(f"unreadable ({type(e).__name__}: {e})") from None
    if meta.get("format") != _CACHE_FORMAT or meta.get("version") != _CACHE_VERSION or embeddings is None:
        raise CacheInvalid("not a clipforge interrogation cache file of this version")
    if meta.get("model") != model_key or meta.get("table") != digest:
        raise CacheInvalid("made for another model or table")
    try:
        stored_phrases = json.loads(meta.get("phrases", "null"))
    except json.JSONDecodeError:
        raise CacheInvalid("its phrase list is not valid JSON") from None
    if stored_phrases != phrases:
        raise CacheInvalid("its phrases differ from the table's")
    if embeddings.dtype != torch.float32 or embeddings.dim() != 2 or embeddings.shape[0] != len(phrases):
        shape = tuple(embeddings.shape)
        raise CacheInvalid(f"embeddings of shape {shape} / {embeddings.dtype} do not fit {len(phrases)} phrases")
    if meta.get("sha256") != _data_digest(embeddings):
        raise CacheInvalid("its numbers do not match their checksum")
    return embeddings


def write_cache(path: Path, embeddings: torch.Tensor, model_key: str, name: str, phrases: list[str], digest: str) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": _CACHE_FORMAT,
        "version": _CACHE_VERSION,
        "model": model_key,
        "table": digest,
        "name": name,
        "phrases": json.dumps(phrases, ensure_ascii=False),
        "sha256": _data_digest(embeddings),
    }
    # Write then rename: a crash or a concurrent reader never sees half a file under the final name.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        save_file({"embeddings": embeddings.contiguous()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
