"""`SourceItem`: one image and/or caption, wherever it came from (a file, a table row, a tar member)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from clipforge.errors import InvalidInputError

if TYPE_CHECKING:
    from clipforge.image.files import ImageSource

__all__ = ["SourceItem", "TAR_SEPARATOR", "items_digest", "json_dumps"]

# An image inside a tar shard is named "<shard path>::<member name>".
TAR_SEPARATOR = "::"


@dataclass(frozen=True)
class SourceItem:
    """One unit of work: an image (a file or a tar member) and/or a caption.

    `caption` is one string, or several (a JSONL list: training draws one per epoch). `problem`
    says why an item cannot be used (a malformed table row, a sample with neither image nor
    caption); such items are reported and skipped, never silently dropped. `fields` holds a table
    row's other columns (label, category, ...); `where` is "file:line" for table rows.
    """

    path: Optional[str] = None
    caption: Union[str, tuple[str, ...], None] = None
    # For members of uncompressed tars: where the bytes are, so they are decoded straight from the shard.
    tar_offset: Optional[int] = None
    tar_size: Optional[int] = None
    # For members of compressed tars (no byte offsets exist): the bytes themselves.
    image_data: Optional[bytes] = field(default=None, repr=False, compare=False)
    problem: Optional[str] = None
    problem_code: str = "bad_item"  # a short name for the kind of problem: bad_row, bad_shard, no_image
    fields: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    where: Optional[str] = None

    @property
    def name(self) -> str:
        """What messages call the item: its image path, else where it was read."""
        return self.path or self.where or "<item>"

    @property
    def has_image(self) -> bool:
        return self.path is not None and self.problem is None

    def image_source(self) -> "ImageSource":
        """What `clipforge.image.load_image` takes for this item's image: a path or an ImageRef."""
        from clipforge.image.files import ImageRef

        if self.path is None:
            raise InvalidInputError(f"{self.name}: the item has no image")
        if self.image_data is not None:
            return ImageRef(self.path, data=self.image_data)
        if self.tar_offset is not None:
            shard = self.path.split(TAR_SEPARATOR, 1)[0]
            return ImageRef(self.path, path=shard, offset=self.tar_offset, size=self.tar_size)
        return self.path


def items_digest(items: Sequence[SourceItem]) -> str:
    """A hash of the item list: a resumed run must see the very same items in the same order."""
    h = hashlib.sha256()
    for item in items:
        caption = list(item.caption) if isinstance(item.caption, tuple) else item.caption
        # surrogatepass: a file name that is not valid UTF-8 (lone surrogates) still hashes
        h.update(json.dumps([item.path, caption], ensure_ascii=False).encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()


def json_dumps(data: Any, **kwargs: Any) -> str:
    """`json.dumps(data, ensure_ascii=False)` that always encodes as UTF-8: a file name that is not
    valid UTF-8 holds lone surrogates (os.fsdecode), written as \\udcXX escapes, which json.loads
    reads back to the same string (and os.fsencode to the same bytes)."""
    text = json.dumps(data, ensure_ascii=False, **kwargs)
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return "".join(f"\\u{ord(ch):04x}" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
