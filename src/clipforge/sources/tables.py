"""CSV / TSV / JSONL tables of image paths and captions: the one column rule, and no row lost to another.

Columns (names matched case-insensitively, first present wins):
* image: `image`, `path`, `filepath`;
* caption: `caption`, `text` — or the column named by `caption_column`. In JSONL a caption may be
  a list of strings (several captions per image: a training run draws one per epoch).
Every other column is kept in `SourceItem.fields` (labels, categories, ...).

Relative image paths resolve against `image_root`, default the table's own folder, so a data set
and its table can move together.

A row that cannot be used becomes an item with `problem` set, naming the file and line, and every
other row is still read: a line that is not JSON, bytes that are not UTF-8, a NUL byte, a quote that
is never closed (the record is dropped and reading resumes on the next line, instead of the
rest of the file becoming one caption). Only a table with no usable column at all is an error.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from clipforge.errors import ClipforgeError
from clipforge.sources.items import SourceItem

__all__ = ["IMAGE_COLUMNS", "CAPTION_COLUMNS", "TableError", "read_table", "is_table"]

IMAGE_COLUMNS = ("image", "path", "filepath")
CAPTION_COLUMNS = ("caption", "text")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")

PathLike = Union[str, "os.PathLike[str]"]


class TableError(ClipforgeError, ValueError):
    """A table clipforge cannot read at all (no image or caption column, not a file)."""


def is_table(path: str) -> bool:
    return path.lower().endswith(TABLE_SUFFIXES)


def _pick(names: Sequence[str], wanted: Sequence[str]) -> Optional[str]:
    lower = {str(n).strip().lower(): n for n in names if n is not None}
    return next((lower[w.lower()] for w in wanted if w.lower() in lower), None)


def _has_surrogates(value: Any) -> bool:
    if isinstance(value, str):
        return any("\udc80" <= c <= "\udcff" for c in value)
    if isinstance(value, (list, tuple)):
        return any(_has_surrogates(v) for v in value)
    return False


def _caption(value: Any) -> Union[str, tuple[str, ...], None]:
    """A caption cell: a string, or (JSONL) a list of strings; empty is no caption."""
    if value is None:
        return None
    if isinstance(value, list):
        captions = tuple(str(v) for v in value if v is not None and str(v).strip())
        return captions or None
    text = str(value)
    return text if text.strip() else None


class _Table:
    def __init__(self, path: Path, image_root: Optional[PathLike], caption_column: Optional[str]) -> None:
        self.path = path
        self.root = os.path.abspath(os.fspath(image_root) if image_root is not None else path.parent)
        self.caption_columns = (caption_column,) if caption_column else CAPTION_COLUMNS

    def resolve(self, value: Any) -> Optional[str]:
        if value is None or str(value).strip() == "":
            return None
        p = os.path.expanduser(str(value).strip())
        return os.path.normpath(p if os.path.isabs(p) else os.path.join(self.root, p))

    def bad(self, line: int, reason: str) -> SourceItem:
        return SourceItem(problem=f"{self.path}:{line}: {reason}", problem_code="bad_row", where=f"{self.path}:{line}")

    def item(self, row: dict, line: int) -> SourceItem:
        if _has_surrogates(list(row.values())) or _has_surrogates(list(row)):
            return self.bad(line, "the row is not valid UTF-8")
        image_col, caption_col = _pick(list(row), IMAGE_COLUMNS), _pick(list(row), self.caption_columns)
        path = self.resolve(row.get(image_col)) if image_col else None
        caption = _caption(row.get(caption_col)) if caption_col else None
        if path is None and caption is None:
            return self.bad(line, "the row has neither an image path nor a caption")
        fields = {k: v for k, v in row.items() if k not in (image_col, caption_col)}
        return SourceItem(path=path, caption=caption, fields=fields, where=f"{self.path}:{line}")


def read_table(
    path: PathLike, *, image_root: Optional[PathLike] = None, caption_column: Optional[str] = None,
    separator: Optional[str] = None,
) -> list[SourceItem]:
    """All rows of a CSV/TSV/JSONL table as `SourceItem`s, in file order (see the module docstring)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise TableError(f"{path}: is a folder, not a table") from None
    except OSError as e:
        raise TableError(f"{path}: cannot read ({e.strerror or e})") from None
    # Undecodable bytes become lone surrogates: the rows holding them are reported, the rest read.
    text = raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    table = _Table(path, image_root, caption_column)
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        items = list(_jsonl_items(table, text))
        columns = {k for item in items for k in item.fields} | {"image" if i.path else "" for i in items}
    else:
        sep = separator or ("\t" if path.suffix.lower() == ".tsv" else ",")
        header, rows = _csv_rows(text, sep)
        columns = set(header)
        if _pick(header, IMAGE_COLUMNS) is None and _pick(header, table.caption_columns) is None:
            raise TableError(
                f"{path}: found columns {header}; need an image column ({'/'.join(IMAGE_COLUMNS)}) "
                f"and/or a caption column ({'/'.join(table.caption_columns)})"
            )
        # Missing trailing cells are empty and extra ones ignored, as with csv.DictReader.
        items = [
            table.bad(line, problem) if problem else table.item(dict(zip(header, values)), line)
            for line, values, problem in rows
        ]
    if items and all(item.problem for item in items):
        reasons = {item.problem.split(": ", 2)[-1] for item in items if item.problem}
        if reasons == {"the row has neither an image path nor a caption"}:
            raise TableError(
                f"{path}: found columns {sorted(c for c in columns if c)}; need an image column "
                f"({'/'.join(IMAGE_COLUMNS)}) and/or a caption column ({'/'.join(table.caption_columns)})"
            )
    return items


def _jsonl_items(table: _Table, text: str) -> Iterator[SourceItem]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            yield table.bad(number, f"not valid JSON ({e})")
            continue
        except RecursionError:
            yield table.bad(number, "not a row: JSON nested too deeply")
            continue
        if not isinstance(row, dict):
            yield table.bad(number, f"expected a JSON object, got {type(row).__name__}")
            continue
        yield table.item(row, number)


def _csv_rows(text: str, separator: str) -> tuple[list[str], list[tuple[int, list[str], Optional[str]]]]:
    """(header, [(line number, cells, problem)]): a record the csv module refuses (an unclosed quote,
    a NUL byte) is reported at the line it starts on, and parsing resumes on the next line."""
    lines = text.splitlines(keepends=True)
    if not lines:
        return [], []
    try:
        header = next(csv.reader([lines[0]], delimiter=separator, strict=True))
    except (csv.Error, StopIteration):
        header = []
    rows: list[tuple[int, list[str], Optional[str]]] = []
    start = 1  # index into `lines` of the next record's first line
    while start < len(lines):
        reader = csv.reader(iter(lines[start:]), delimiter=separator, strict=True)
        consumed = 0
        try:
            for values in reader:
                line = start + consumed + 1
                consumed = reader.line_num
                if values and any(v.strip() for v in values):
                    rows.append((line, values, None))
            break
        except csv.Error as e:
            line = start + consumed + 1
            reason = "the line holds a NUL byte" if "NUL" in str(e) else f"malformed CSV ({e}); a quote is never closed?"
            rows.append((line, [], reason))
            start = start + consumed + 1
    return header, rows
