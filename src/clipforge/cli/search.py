"""`clipforge index DIR --model M --out INDEX` and `clipforge search INDEX "a red car" -k 10`.

`index` embeds a collection (reusing `embed`, so it resumes after an interruption) and records the
model; `search` loads that same model for the query and refuses another one.
Heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from clipforge.cli.common import (
    add_model_arguments,
    add_run_arguments,
    load_index_model,
    load_model,
    model_reference,
    storage_dtype,
)
from clipforge.errors import InvalidInputError

BACKEND_CHOICES = ("exact", "faiss-ivf", "faiss-hnsw")

INDEX_EPILOG = """examples:
  clipforge index photos/ --model ViT-B-32 --weights openai --out photos.index
  clipforge index photos/ --model model.safetensors --out photos.index --backend faiss-hnsw
"""

SEARCH_EPILOG = """examples:
  clipforge search photos.index "a red car" -k 10
  clipforge search photos.index --image query.jpg --html results.html
  clipforge search photos.index "a red car" --backend faiss-ivf --check-recall
"""


def _run_index(args: argparse.Namespace) -> int:
    from clipforge.tasks.search import SearchIndex, build_index

    reference = model_reference(args)
    model, preprocess, tokenizer = load_model(args, reference)
    summary = build_index(
        model, preprocess, tokenizer, args.folder, args.out, model_reference=reference,
        batch_size=args.batch_size, num_workers=args.workers, dtype=storage_dtype(args.precision),
        shard_size=args.shard_size, progress=not args.no_progress,
    )
    print(summary.format())
    if args.backend != "exact" and summary.world_size > 1:
        # Other ranks may still be running; the FAISS index is built by the first search instead.
        print(f"{args.backend}: not built under torchrun; `clipforge search --backend {args.backend}` builds it")
    elif args.backend != "exact":
        built = SearchIndex(args.out).faiss_index(args.backend)
        print(f"built {args.backend} index {built.params}; calibrated recall@10 vs exact: {built.calibrated_recall:.3f}")
    return 0


def _run_search(args: argparse.Namespace) -> int:
    from clipforge.tasks.search import (
        SearchIndex,
        embed_image_queries,
        embed_text_queries,
        exact_search,
        recall_at_k,
    )

    if (args.query is None) == (args.image is None):
        raise InvalidInputError("give either a text QUERY or --image FILE (one of them)")
    if args.k < 1:
        raise InvalidInputError(f"-k must be >= 1, got {args.k}")
    index = SearchIndex(args.index)
    model, preprocess, tokenizer = load_index_model(args, index)

    if args.image is not None:
        queries, description = embed_image_queries(model, preprocess, [args.image]), f"image {args.image}"
    else:
        queries, description = embed_text_queries(model, tokenizer, [args.query]), args.query
    results = index.search(queries, args.k, args.backend)
    hits = [(int(i), float(s)) for i, s in zip(results.ids[0], results.scores[0]) if i >= 0]

    print(f"top {len(hits)} of {len(index)} for {description!r} ({args.backend}):")
    for rank, (row, score) in enumerate(hits, 1):
        print(f"{rank:4d}  {score:.4f}  {index.paths[row]}")
    if args.backend != "exact":
        built = index.faiss_index(args.backend)
        line = f"{args.backend} {built.params}: calibrated recall@10 {built.calibrated_recall:.3f}"
        if args.check_recall:
            exact = exact_search(index.vectors, queries, args.k)
            line += f"; recall@{args.k} of this query vs exact search: {recall_at_k(results.ids, exact.ids):.3f}"
        print(line)
    if args.html:
        from clipforge.tasks.search_page import write_results_page

        write_results_page(args.html, description, [index.paths[r] for r, _ in hits], [s for _, s in hits],
                           query_image=args.image)
        print(f"wrote {args.html}")
    sys.stdout.flush()
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "index", help="embed a folder into a search index (resumable)",
        description="Embed the images of DIR (or any `clipforge embed` SOURCE) into an index directory that "
                    "records the model, for `clipforge search`.",
        epilog=INDEX_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", metavar="DIR", help="folder of images (recursive), or another embed SOURCE")
    p.add_argument("--out", required=True, help="index directory to create (or resume)")
    add_model_arguments(p)
    add_run_arguments(p)
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="exact",
                   help="also build (and cache) a FAISS index now (needs faiss-cpu)")
    p.set_defaults(func=_run_index)

    p = subparsers.add_parser(
        "search", help="search an index by text or by image",
        description="Search INDEX with a text QUERY or --image. The query is embedded by the index's own "
                    "model (loaded from what the index records); another model is refused.",
        epilog=SEARCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("index", metavar="INDEX", help="index directory made by `clipforge index`")
    p.add_argument("query", nargs="?", help="text query")
    p.add_argument("--image", help="query image file instead of text")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="exact",
                   help="exact (default), or a FAISS index (faiss-cpu) for large collections")
    p.add_argument("--check-recall", action="store_true",
                   help="with a FAISS backend: also run exact search and report recall@k of this query")
    p.add_argument("--html", help="write a self-contained HTML page of thumbnails to this file")
    add_model_arguments(p, default_note=" (default: the model the index records)")
    p.set_defaults(func=_run_search)
