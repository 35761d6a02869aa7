"""OpenClipArt captions: the Dublin Core metadata of an SVG -> cleaned title, description, keywords
-> a caption, the category prefix, and the phrasings a training run draws from (see docs/data.md)."""

from __future__ import annotations

import hashlib
import html
import os
import random
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

__all__ = ["SvgMetadata", "read_svg_metadata", "make_caption", "with_category", "caption_variants", "caption_parts",
           "class_name", "CLASS_NAMES", "EXCLUDED_CATEGORIES"]

PathLike = Union[str, "os.PathLike[str]"]

MAX_CAPTION_CHARS = 200
MAX_DESCRIPTION_CHARS = 150
MAX_KEYWORDS = 6
# Training records also carry `captions`: this many phrasings of the same metadata (the full caption
# first), from which a run draws one per epoch (data.caption_column = "captions").
N_CAPTION_VARIANTS = 6
# How the variants name the category. The evaluation templates are not among them, except the
# "clip art of" that starts every full caption, so zero-shot still tests phrasings not trained on.
CATEGORY_PHRASES = ("clip art of {}", "{} clip art", "a picture of {}", "an image of {}", "a sketch of {}", "{}")

# Readable class names for the package's top-level directories (what the images mostly show).
CLASS_NAMES = {
    "animals": "animals",
    "buildings": "buildings",
    "buttons": "buttons",
    "computer": "computer icons",
    "containers": "containers",
    "decorations": "decorations",
    "education": "education",
    "electronics": "electronics",
    "food": "food and drink",
    "geography": "maps and geography",
    "logos": "logos",
    "office": "office supplies",
    "people": "people",
    "plants": "plants",
    "recreation": "games and recreation",
    "science": "science",
    "shapes": "shapes",
    "signs_and_symbols": "signs and symbols",
    "special": "patterns and gradients",
    "tools": "tools",
    "transportation": "transportation",
}
# "unsorted" is a bin, not a subject: never a class.
EXCLUDED_CATEGORIES = frozenset({"unsorted"})

_NS = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "cc": "http://web.resource.org/cc/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
}
_WORK = f"{{{_NS['cc']}}}Work"

@dataclass
class SvgMetadata:
    """The cc:Work record of an OpenClipArt SVG (empty strings where absent)."""

    title: str = ""
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    creator: str = ""
    license: str = ""


def read_svg_metadata(path: PathLike) -> SvgMetadata:
    """Parse the <cc:Work> block of an SVG. Stops reading as soon as it ends (it comes first, in <metadata>).

    Raises ET.ParseError / OSError for unreadable files; an SVG without the block gives empty metadata.
    """
    with open(path, "rb") as f:
        for _, elem in ET.iterparse(f, events=("end",)):
            if elem.tag != _WORK:
                continue

            def text(el: Optional[ET.Element]) -> str:
                return (el.text or "").strip() if el is not None else ""

            license_el = elem.find("cc:license", _NS)
            return SvgMetadata(
                title=text(elem.find("dc:title", _NS)),
                description=text(elem.find("dc:description", _NS)),
                keywords=[text(li) for li in elem.findall("dc:subject/rdf:Bag/rdf:li", _NS) if text(li)],
                creator=text(elem.find("dc:creator/cc:Agent/dc:title", _NS)),
                license=license_el.get(f"{{{_NS['rdf']}}}resource", "") if license_el is not None else "",
            )
    return SvgMetadata()


# Titles that name the collection or the uploader's batch rather than the drawing.
_BOILERPLATE = re.compile(
    r"collection|theme|icon ?set|s[iu]bmission|\bicons$|^various|^untitled|^new document|^image$|^drawing$",
    re.IGNORECASE,
)
_CLIPART_WORD = re.compile(r"\s*\bclip ?arts?\b\s*", re.IGNORECASE)  # "Homes Clipart" -> "Homes"
_PERL_REF = re.compile(r"hash\(0x[0-9a-f]+\)", re.IGNORECASE)  # "HASH(0x8677e2c)": a stringified Perl reference
_CLIPART_BY = re.compile(r"^clip ?art by [^-]+ - ", re.IGNORECASE)  # "Clipart by Nicu Buculei - arrow08_4"
_FILE_NAME = re.compile(r"[\w.\-]+")
_FILE_NAME_HINT = re.compile(r"[a-z]\d|\d[a-z]|_\d|\d_|\.(svg|png)$", re.IGNORECASE)
_URL_OR_EMAIL = re.compile(r"https?://|www\.|\S@\S", re.IGNORECASE)
_HEXISH = re.compile(r"(0x)?[0-9a-f]*\d[0-9a-f]*")
_STOP_KEYWORDS = frozenset(
    {"", "none", "hash", "unsorted", "magick", "mapsym", "clipart", "clip art", "openclipart", "svg",
     "public domain", "image", "picture", "special"}
)


def _clean(text: str) -> str:
    # Some metadata is escaped twice ("&amp;quot;"): the XML parser undoes one level, html.unescape the other.
    return " ".join(_PERL_REF.sub(" ", html.unescape(text)).split())


def _clean_title(title: str) -> str:
    title = _CLIPART_BY.sub("", _clean(title))
    title = _CLIPART_WORD.sub(" ", re.sub(r"\bSVG\b\s*", "", title)).strip(" -.,;:")
    if not title or _BOILERPLATE.search(title):
        return ""
    if _FILE_NAME.fullmatch(title) and _FILE_NAME_HINT.search(title):  # "jigsaw_red_10", "fc23": a file name
        return ""
    return " ".join(title.replace("_", " ").split())


def _clean_description(description: str, title: str) -> str:
    """The first sentence, if it is short, says something the title does not, and is not a URL or address."""
    description = _clean(description)
    if not description or _URL_OR_EMAIL.search(description) or _BOILERPLATE.search(description):
        return ""
    description = description.split(". ")[0].strip(" .")
    if len(description) > MAX_DESCRIPTION_CHARS:  # a cut-off fragment reads worse than no description
        return ""
    words = re.findall(r"[^\W\d_]+", description.lower())
    title_words = set(re.findall(r"[^\W\d_]+", title.lower()))
    if not words or sum(w in title_words for w in words) >= 0.8 * len(words):  # "Bull" / "Bull."
        return ""
    return description


def _clean_keywords(keywords: Sequence[str], already: str, creator: str) -> list[str]:
    seen_words = {w.rstrip("s") for w in re.findall(r"\w+", already.lower())}  # plural-insensitive
    kept: list[str] = []
    stems: set[str] = set()
    for raw in keywords:
        k = " ".join(_clean(raw).lower().replace("_", " ").replace("-", " ").split())
        stem = k.rstrip("s")
        if (
            k in _STOP_KEYWORDS
            or _HEXISH.fullmatch(k.replace(" ", ""))
            or "theme" in k
            or "architetto" in k  # an author's name used as a tag on hundreds of drawings
            or (creator and k == creator.lower())
            or stem in stems
            or {w.rstrip("s") for w in re.findall(r"\w+", k)} <= seen_words
        ):
            continue
        kept.append(k)
        stems.add(stem)
        if len(kept) == MAX_KEYWORDS:
            break
    return kept


def caption_parts(meta: SvgMetadata) -> dict[str, Any]:
    """The cleaned pieces a caption is made of: {"title", "description", "keywords"} (see make_caption)."""
    title = _clean_title(meta.title)
    description = _clean_description(meta.description, title)
    return {"title": title, "description": description,
            "keywords": _clean_keywords(meta.keywords, f"{title} {description}", meta.creator)}


def make_caption(meta: SvgMetadata, category: str = "") -> str:
    """`"<title>. <description>. <keyword>, <keyword>, ..."` from cleaned metadata, at most MAX_CAPTION_CHARS.

    Cleaning drops collection names used as titles ("Part of the Flat Icon Collection ..."), titles
    that are file names ("jigsaw_red_10"), descriptions that are URLs or e-mail addresses, and
    keywords that are noise ("hash", hex ids, theme names, the author) or repeat the title.
    Keywords are dropped from the end until the caption fits. With nothing left, the category
    path ("signs and symbols, flags") is the caption; "" when there is none (or it is "unsorted").
    """
    parts_ = caption_parts(meta)
    title, description, keywords = parts_["title"], parts_["description"], list(parts_["keywords"])
    parts = [p for p in (title, description) if p]
    while True:
        caption = _sentences(parts + ([", ".join(keywords)] if keywords else []))
        if len(caption) <= MAX_CAPTION_CHARS or not keywords:
            break
        keywords.pop()
    if len(caption) > MAX_CAPTION_CHARS:
        caption = caption[:MAX_CAPTION_CHARS].rsplit(" ", 1)[0].rstrip(" ,.;:")
    if not caption and category and category.split("/")[0] not in EXCLUDED_CATEGORIES:
        caption = ", ".join(part.replace("_", " ").replace("-", " ") for part in category.split("/"))
    return caption


def with_category(caption: str, category: str) -> str:
    """Prefix the package's category path, a piece of metadata every image has: "clip art of animals,
    mammals. Armadillo. animal". Titles and keywords rarely name the category, so without it the text
    tower never learns the benchmark's class names (zero-shot stayed at chance in a trial run); first,
    so that truncation to a short context never cuts it off.
    """
    parts = [p for p in category.split("/") if p] if category else []
    if not parts or parts[0] in EXCLUDED_CATEGORIES:
        return caption
    readable = [p.replace("_", " ").replace("-", " ") for p in parts]
    prefix = "clip art of " + ", ".join([class_name(parts[0])] + readable[1:])
    # make_caption falls back to the bare category path when an image has no other metadata.
    if not caption or caption == ", ".join(readable):
        return prefix
    full = _sentences([prefix, caption])
    return full if len(full) <= MAX_CAPTION_CHARS else full[:MAX_CAPTION_CHARS].rsplit(" ", 1)[0].rstrip(" ,.;:")


def caption_variants(caption: str, parts: dict[str, Any], category: str, key: str, n: int = N_CAPTION_VARIANTS) -> list[str]:
    """`n` phrasings of one drawing's metadata for training, the full caption first, deterministic per `key`.

    The others mix the category (phrased several ways, with or without its sub-directories) with the
    title, the description or a shuffled subset of the keywords, so that a model learns the category
    names and the words apart from one fixed sentence, and identical captions (the 1,125 "gramastar"
    stars) stop being identical strings in a batch.
    """
    rng = random.Random(hashlib.sha1(f"variants:{key}".encode("utf-8")).hexdigest())
    path = [p for p in category.split("/") if p] if category else []
    named = bool(path) and path[0] not in EXCLUDED_CATEGORIES
    readable = [p.replace("_", " ").replace("-", " ") for p in path]
    variants = [caption]
    for _ in range(8 * n):
        if len(variants) == n:
            break
        pieces: list[str] = []
        if named:
            names = [class_name(path[0])] + (readable[1:] if rng.random() < 0.5 else [])
            pieces.append(rng.choice(CATEGORY_PHRASES).format(", ".join(names)))
        words = [w for w in (parts.get("title"), parts.get("description")) if w and rng.random() < 0.6]
        keywords = list(parts.get("keywords") or [])
        rng.shuffle(keywords)
        keywords = keywords[: rng.randint(0, len(keywords))]
        pieces += words + ([", ".join(keywords)] if keywords else [])
        if not named:
            pieces = pieces or [caption]
        if len(pieces) > 1 and rng.random() < 0.3:  # the category last, sometimes
            pieces = pieces[1:] + pieces[:1]
        text = _sentences(pieces)[:MAX_CAPTION_CHARS]
        if text and text not in variants:
            variants.append(text)
    return variants


def _sentences(parts: Sequence[str]) -> str:
    # "Mhooo!" + "mammal, cow" -> "Mhooo! mammal, cow", not "Mhooo!. mammal, cow".
    out = ""
    for part in parts:
        out += part if not out else (" " if out[-1] in ".!?" else ". ") + part
    return out


def class_name(category: str) -> str:
    return CLASS_NAMES.get(category, category.replace("_", " ").replace("-", " "))
