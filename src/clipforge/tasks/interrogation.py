"""Interrogation: which phrases describe an image best, and a prompt built from them.

Phrases come from label tables (one phrase per line): the four shipped with clipforge, made from
WordNet (`mediums`, `movements`, `subjects`, `styles`; see label_tables/PROVENANCE.md), and any the
caller supplies. `Interrogator.rank` orders a table's phrases by cosine similarity to the image.
`Interrogator.interrogate` builds a prompt greedily, in the spirit of CLIP Interrogator: start
from the best subject phrase (or a given caption), then repeatedly append (", " + phrase) the
candidate that raises image–prompt cosine similarity the most; stop when no candidate raises it,
when every candidate would push the prompt past the model's context (77 tokens including the
start and end tokens), or at `max_phrases`. Each step re-encodes the whole prompt, so the
similarity is that of the text CLIP actually sees, and it never decreases from step to step.

Table embeddings are cached on disk (label_tables.py: the tables, their provenance and the cache).

Uses only the public model API (`encode_image` / `encode_text` with normalize=True), the
tokenizer and the preprocess.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch

from clipforge.encoding import encode_pixels, encode_texts, weights_digest
from clipforge.errors import InvalidInputError
from clipforge.tasks.phrase_tables import (
    DEFAULT_TABLES,
    SUBJECT_TABLES,
    CacheInvalid,
    default_cache_dir,
    default_tables,
    load_default_table,
    provenance,
    read_cache,
    read_table,
    table_digest,
    write_cache,
)

__all__ = [
    "DEFAULT_TABLES",
    "SUBJECT_TABLES",
    "Interrogator",
    "InterrogationResult",
    "FilesReport",
    "default_tables",
    "load_default_table",
    "read_table",
    "provenance",
    "table_digest",
    "default_cache_dir",
    "caption_destinations",
    "interrogate_files",
]

SEPARATOR = ", "

PathLike = Union[str, "os.PathLike[str]"]
ImageLike = Union["Image.Image", PathLike, torch.Tensor]  # noqa: F821 (PIL imported lazily)


# ---- the interrogator ----------------------------------------------------------------------------


@dataclass
class InterrogationResult:
    prompt: str  # the phrases joined with ", "
    phrases: list[str]  # in the order they were added; phrases[0] is the subject (or the caption)
    similarity: float  # cosine between the image and the final prompt
    top: dict[str, list[tuple[str, float]]]  # per table: its best phrases with their cosine
    steps: list[float] = field(default_factory=list)  # similarity after each phrase; never decreasing

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "phrases": list(self.phrases),
            "similarity": self.similarity,
            "steps": list(self.steps),
            "top": {name: [{"phrase": p, "score": s} for p, s in ranked] for name, ranked in self.top.items()},
        }


class Interrogator:
    """Ranks label-table phrases against images and builds prompts from them (see the module docstring).

    tables: {name: phrases}; None gives the four default tables. Duplicate phrases are dropped.
    cache_dir: where table embeddings are cached (default `default_cache_dir()`); `cache=False`
        keeps them in memory only.
    batch_size: texts per forward pass when encoding tables and prompt candidates.
    subject_tables: tables the prompt's first phrase is taken from (the best phrase of all tables
        when none of them is present).
    candidates_per_table: how many of each table's best phrases compete in the greedy prompt search.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Any], torch.Tensor],
        tokenizer: Callable[..., torch.Tensor],
        tables: Optional[Mapping[str, Sequence[str]]] = None,
        cache_dir: Optional[PathLike] = None,
        batch_size: int = 256,
        *,
        cache: bool = True,
        subject_tables: Sequence[str] = SUBJECT_TABLES,
        candidates_per_table: int = 16,
        progress: bool = False,
    ) -> None:
        if batch_size < 1 or candidates_per_table < 1:
            raise InvalidInputError(f"batch_size and candidates_per_table must be >= 1, got {batch_size}, {candidates_per_table}")
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        source = default_tables() if tables is None else tables
        self.tables: dict[str, list[str]] = {}
        for name, phrases in source.items():
            if isinstance(phrases, str):
                raise TypeError(f"table {name!r} must be a list of phrases, not a str")
            unique = list(dict.fromkeys(str(p).strip() for p in phrases if str(p).strip()))
            if not unique:
                raise InvalidInputError(f"label table {name!r} is empty")
            self.tables[str(name)] = unique
        if not self.tables:
            raise InvalidInputError("no label tables given")
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.cache = cache
        self.batch_size = batch_size
        self.subject_tables = [t for t in subject_tables if t in self.tables] or list(self.tables)
        self.candidates_per_table = candidates_per_table
        self.progress = progress
        self.context_length = int(getattr(tokenizer, "context_length", 77))
        self._embeddings: dict[str, torch.Tensor] = {}
        self._model_key: Optional[str] = None

    # ---- text side ----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def model_key(self) -> str:
        if self._model_key is None:
            self._model_key = weights_digest(self.model)
        return self._model_key

    def count_tokens(self, text: str) -> int:
        """BPE tokens of `text`, without the start and end tokens."""
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None:
            raise TypeError("the tokenizer needs an `encode(text) -> ids` method to count tokens (clipforge's Tokenizer has one)")
        return len(encode(text))

    @property
    def max_prompt_tokens(self) -> int:
        return self.context_length - 2  # room for the start and end tokens

    def encode_texts(self, texts: Sequence[str], desc: Optional[str] = None) -> torch.Tensor:
        """[len(texts), embed_dim] normalized float32 text embeddings on the model's device."""
        return encode_texts(self.model, self.tokenizer, texts, batch_size=self.batch_size,
                            progress=self.progress and desc is not None, desc=desc)

    def cache_path(self, table: str) -> Path:
        return self.cache_dir / f"{self.model_key[:24]}-{table_digest(self.tables[table])[:24]}.safetensors"

    def table_embeddings(self, table: str) -> torch.Tensor:
        """[n_phrases, embed_dim] normalized float32 embeddings of a table (memory, then disk cache, then model)."""
        if table not in self.tables:
            raise KeyError(f"no label table {table!r}; this interrogator has {', '.join(self.tables)}")
        if table in self._embeddings:
            return self._embeddings[table]
        phrases = self.tables[table]
        digest = table_digest(phrases)
        embeddings = None
        path = self.cache_path(table) if self.cache else None
        if path is not None and path.exists():
            try:
                embeddings = read_cache(path, self.model_key, phrases, digest).to(self.device)
            except CacheInvalid as e:
                warnings.warn(f"ignoring interrogation cache file {path}: {e}; rebuilding it", RuntimeWarning, stacklevel=2)
        if embeddings is None:
            embeddings = self.encode_texts(phrases, desc=f"encoding table {table}")
            if path is not None:
                try:
                    write_cache(path, embeddings.cpu(), self.model_key, table, phrases, digest)
                except OSError as e:  # a read-only cache is slower, not an error
                    warnings.warn(f"cannot write interrogation cache {path}: {e}", RuntimeWarning, stacklevel=2)
        self._embeddings[table] = embeddings
        return embeddings

    # ---- image side ---------------------------------------------------------------------------

    @torch.inference_mode()
    def image_features(self, image: ImageLike) -> torch.Tensor:
        """[embed_dim] normalized float32 features of a PIL image, an image file, or pixels [3, S, S] / [1, 3, S, S]."""
        if isinstance(image, torch.Tensor):
            pixels = image
        else:
            if isinstance(image, (str, os.PathLike)):
                from clipforge.image import load_image

                image = load_image(image)
            pixels = self.preprocess(image)
        if pixels.dim() == 3:
            pixels = pixels.unsqueeze(0)
        if pixels.dim() != 4 or pixels.shape[0] != 1:
            raise InvalidInputError(f"expected one image as pixels [3, S, S] or [1, 3, S, S], got shape {tuple(pixels.shape)}")
        return encode_pixels(self.model, pixels)[0]

    def rank(self, image: ImageLike, table: str, top_k: int = 10) -> list[tuple[str, float]]:
        """The table's `top_k` phrases most similar to the image, as (phrase, cosine), best first."""
        return self.rank_features(self.image_features(image), table, top_k)

    def rank_features(self, features: torch.Tensor, table: str, top_k: int = 10) -> list[tuple[str, float]]:
        """`rank` for image features already computed (normalized, [embed_dim])."""
        if top_k < 1:
            raise InvalidInputError(f"top_k must be >= 1, got {top_k}")
        scores = self.table_embeddings(table) @ features.to(self.device, torch.float32)  # [n_phrases]
        # A stable sort: equal scores keep table order, so results do not depend on the kernel.
        order = torch.sort(scores, descending=True, stable=True).indices[:top_k].tolist()
        values = scores.tolist()
        return [(self.tables[table][i], values[i]) for i in order]

    # ---- prompts ------------------------------------------------------------------------------

    def interrogate(
        self, image: ImageLike, *, max_phrases: Optional[int] = None, top_k: int = 5, caption: Optional[str] = None
    ) -> InterrogationResult:
        """Rank every table and build a prompt greedily (see the module docstring).

        max_phrases: the most phrases the prompt may hold, the first one included (None: no cap).
        top_k: phrases per table reported in `result.top`.
        caption: start the prompt from this text instead of the best subject phrase.
        """
        return self.interrogate_features(self.image_features(image), max_phrases=max_phrases, top_k=top_k, caption=caption)

    @torch.inference_mode()
    def interrogate_features(
        self, features: torch.Tensor, *, max_phrases: Optional[int] = None, top_k: int = 5, caption: Optional[str] = None
    ) -> InterrogationResult:
        """`interrogate` for image features already computed (normalized, [embed_dim])."""
        if max_phrases is not None and max_phrases < 1:
            raise InvalidInputError(f"max_phrases must be >= 1, got {max_phrases}")
        features = features.to(self.device, torch.float32)
        pool = max(top_k, self.candidates_per_table)
        ranked = {name: self.rank_features(features, name, pool) for name in self.tables}

        if caption is not None:
            start = caption.strip()
            if not start:
                raise InvalidInputError("caption is empty")
            if self.count_tokens(start) > self.max_prompt_tokens:
                raise InvalidInputError(
                    f"the caption has {self.count_tokens(start)} tokens; the model reads at most {self.max_prompt_tokens}"
                )
        else:
            subjects = sorted(
                ((p, s) for t in self.subject_tables for p, s in ranked[t] if self.count_tokens(p) <= self.max_prompt_tokens),
                key=lambda ps: -ps[1],
            )
            if not subjects:
                raise InvalidInputError(f"no phrase of the subject tables fits in {self.max_prompt_tokens} tokens")
            start = subjects[0][0]

        candidates = list(dict.fromkeys(p for name in self.tables for p, _ in ranked[name][: self.candidates_per_table]))
        phrases, steps = self._greedy(features, start, [c for c in candidates if c != start], max_phrases)
        return InterrogationResult(
            prompt=SEPARATOR.join(phrases),
            phrases=phrases,
            similarity=steps[-1],
            top={name: ranked[name][:top_k] for name in self.tables},
            steps=steps,
        )

    def _greedy(
        self, features: torch.Tensor, start: str, candidates: list[str], max_phrases: Optional[int]
    ) -> tuple[list[str], list[float]]:
        phrases = [start]
        prompt = start
        best = float(self.encode_texts([prompt])[0] @ features)
        steps = [best]
        while candidates and (max_phrases is None or len(phrases) < max_phrases):
            texts = [prompt + SEPARATOR + c for c in candidates]
            fits = [self.count_tokens(t) <= self.max_prompt_tokens for t in texts]
            # The prompt only grows, so a candidate that does not fit now never will: drop it for good.
            candidates = [c for c, ok in zip(candidates, fits) if ok]
            texts = [t for t, ok in zip(texts, fits) if ok]
            if not texts:
                break
            scores = (self.encode_texts(texts) @ features).tolist()
            i = max(range(len(scores)), key=lambda j: (scores[j], -j))  # ties: the earlier (better-ranked) one
            if scores[i] <= best:
                break
            best = scores[i]
            prompt = texts[i]
            phrases.append(candidates.pop(i))
            steps.append(best)
        return phrases, steps


# ---- folders of images ----------------------------------------------------------------------------


@dataclass
class FilesReport:
    results: dict[str, InterrogationResult] = field(default_factory=dict)  # image path -> result, in input order
    written: dict[str, str] = field(default_factory=dict)  # image path -> .txt written
    existing: list[str] = field(default_factory=list)  # images skipped because their .txt exists
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (image path, code, reason)


def caption_destinations(inputs: Sequence[PathLike], out_dir: Optional[PathLike] = None) -> list[tuple[str, str]]:
    """(image, .txt path) for every image of `inputs` (image files, folders searched recursively, glob
    patterns, list files: `clipforge.sources`). Raises `SourceError` when there is no image at all.

    The .txt lies next to its image, or under `out_dir` (mirroring each folder's layout). When two
    images would share a .txt (cat.jpg and cat.png), each of them gets its full name + ".txt"
    instead ("cat.jpg.txt"), so no caption overwrites another.
    """
    from clipforge.sources import SourceError, read_source

    pairs: list[tuple[str, Path]] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            for source_item in read_source(item):
                image = Path(source_item.path)
                rel = image.relative_to(os.path.abspath(item))
                pairs.append((str(image), (Path(out_dir) / rel) if out_dir is not None else image))
        else:
            for source_item in read_source(item):
                if source_item.path is None:
                    continue
                image = Path(source_item.path)
                pairs.append((str(image), (Path(out_dir) / image.name) if out_dir is not None else image))
    if not pairs:
        raise SourceError(f"no images found in {', '.join(map(repr, map(os.fspath, inputs)))}")
    stems: dict[Path, int] = {}
    for _, base in pairs:
        key = base.with_suffix(".txt")
        stems[key] = stems.get(key, 0) + 1
    out: list[tuple[str, str]] = []
    for image, base in pairs:
        txt = base.with_suffix(".txt")
        out.append((image, str(txt if stems[txt] == 1 else base.with_name(base.name + ".txt"))))
    seen: dict[str, str] = {}
    for image, txt in out:
        if txt in seen and seen[txt] != image:
            raise InvalidInputError(f"{seen[txt]} and {image} would both be captioned in {txt}")
        seen[txt] = image
    return out


def interrogate_files(
    interrogator: Interrogator,
    inputs: Sequence[PathLike],
    out_dir: Optional[PathLike] = None,
    *,
    write: bool = True,
    overwrite: bool = False,
    max_phrases: Optional[int] = None,
    top_k: int = 5,
    batch_size: int = 16,
    num_workers: Optional[int] = None,
    progress: bool = True,
    on_error: Optional[Callable[[str, str, str], None]] = None,
    on_result: Optional[Callable[[str, InterrogationResult], None]] = None,
) -> FilesReport:
    """Interrogate image files and folders; with `write`, save each prompt as a .txt (see `caption_destinations`).

    A bad image is reported through `on_error(path, code, reason)`, recorded in `report.errors` and
    skipped. Without `overwrite`, an image whose .txt already exists is skipped (so a rerun
    continues an interrupted one and never clobbers hand-written captions).
    """
    from tqdm.auto import tqdm

    from clipforge.image import iter_image_batches

    report = FilesReport()
    pairs = caption_destinations(inputs, out_dir)
    todo = []
    for image, txt in pairs:
        if write and not overwrite and os.path.exists(txt):
            report.existing.append(image)
        else:
            todo.append((image, txt))
    if not todo:
        return report
    paths = [image for image, _ in todo]
    if num_workers is None and len(paths) <= batch_size:
        num_workers = 0  # one batch: starting worker processes costs more than it saves
    with tqdm(total=len(paths), unit="image", desc="interrogate", disable=not progress, file=sys.stderr) as bar:
        for batch in iter_image_batches(paths, interrogator.preprocess, batch_size=batch_size, num_workers=num_workers):
            for _, path, error in batch.errors:
                report.errors.append((path, error.code, error.reason))
                if on_error is not None:
                    on_error(path, error.code, error.reason)
            if batch.indices:
                features = encode_pixels(interrogator.model, batch.pixels)
                for row, index in enumerate(batch.indices):
                    image, txt = todo[index]
                    result = interrogator.interrogate_features(features[row], max_phrases=max_phrases, top_k=top_k)
                    report.results[image] = result
                    if write:
                        Path(txt).parent.mkdir(parents=True, exist_ok=True)
                        Path(txt).write_text(result.prompt + "\n", encoding="utf-8")
                        report.written[image] = txt
                    if on_result is not None:
                        on_result(image, result)
                    bar.update(1)
            bar.update(len(batch.errors))
    return report
