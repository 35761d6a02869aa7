"""`clipforge serve INDEX`: a local web page and HTTP API over an index made by `clipforge index`.

Thin: parse, load the index and its model (as `clipforge search` does), hand them to
`clipforge.serve`. The HTTP libraries are imported inside `run`, so `clipforge --help` stays fast
and a missing extra gives a one-line hint.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from clipforge.cli.common import (
    add_model_arguments,
    index_model_reference,
    load_index_model,
    printable,
    templates_option,
)
from clipforge.errors import InvalidInputError

EPILOG = """examples:
  clipforge serve photos.index                      # http://127.0.0.1:8765/, this machine only
  clipforge serve photos.index --port 9000 --templates simple
  clipforge serve photos.index --host 0.0.0.0 --token-file token.txt   # other machines, with a bearer token

Safe by default: it listens on 127.0.0.1; another --host needs --token (or --token-file), and then
every /api request needs 'Authorization: Bearer TOKEN'. It never fetches a URL unless --allow-urls
(then public http(s) addresses only). API and security model: docs/serve.md.
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="a local search-and-classify web page and HTTP API over an index",
        description="Serve INDEX (made by `clipforge index`): a web page to search it by text or image and "
                    "classify images against labels, and the JSON API behind it.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("index", metavar="INDEX", help="index directory made by `clipforge index`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    token = p.add_mutually_exclusive_group()
    token.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on /api requests (needed for a non-loopback --host)")
    token.add_argument("--token-file", metavar="FILE", help="read the token from FILE (keeps it out of the process list)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload accepted, in MB (default 20)")
    p.add_argument("--max-pixels", type=int, default=50_000_000,
                   help="largest decoded upload, width x height (default 50,000,000)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request time limit in seconds (default 30)")
    p.add_argument("--allow-urls", action="store_true",
                   help="accept image_url: fetch public http(s) addresses only (never loopback, private, link-local)")
    p.add_argument("--templates", default=None, metavar="openai|simple|chinese|none|FILE",
                   help="prompt templates for /api/classify (default: the model's own, OpenAI's 80 for CLIP; "
                        "as `clipforge classify`)")
    p.add_argument("--backend", choices=("exact", "faiss-ivf", "faiss-hnsw"), default="exact",
                   help="search backend (default exact; FAISS needs faiss-cpu)")
    p.add_argument("--max-batch", type=int, default=32, help="most queries the model encodes at once (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long the model worker waits to fill a batch, in ms (default 5)")
    p.add_argument("--threads", type=int, default=4, help="threads for decoding uploads, search and thumbnails (default 4)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    add_model_arguments(p, default_note=" (default: the model the index records)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clipforge.serve.app import ServeOptions, check_bind, run_server
    from clipforge.serve.service import Limits, SearchService
    from clipforge.tasks.search import SearchIndex
    from clipforge.tasks.zero_shot import model_templates

    token = args.token
    if args.token_file is not None:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    if token is None:
        token = os.environ.get("CLIPFORGE_SERVE_TOKEN") or None
    check_bind(args.host, token)  # before loading anything
    if not 0 < args.port < 65536:
        raise InvalidInputError(f"--port must be between 1 and 65535, got {args.port}")
    for name in ("max_upload_mb", "timeout", "max_batch", "threads", "max_pixels"):
        if getattr(args, name) <= 0:
            raise InvalidInputError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")

    index = SearchIndex(args.index)
    reference = index_model_reference(args, index)
    model, preprocess, tokenizer = load_index_model(args, index)
    name = str(reference["name_or_path"]) + (f" ({reference['weights']})" if reference.get("weights") else "")
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels)
    templates = templates_option(args.templates if args.templates is not None else model_templates(model))
    service = SearchService(index, model, preprocess, tokenizer, model_name=name, templates=templates,
                            backend=args.backend, limits=limits, max_batch=args.max_batch,
                            max_wait=args.max_wait_ms / 1000)
    options = ServeOptions(token=token, timeout=args.timeout, allow_urls=args.allow_urls, threads=args.threads)

    def ready(url: str) -> None:
        print(f"clipforge serve: {len(index)} items, model {printable(name)}; open {url}"
              + (" (the page asks for the token, or add #token=TOKEN to the address)" if token else ""))
        sys.stdout.flush()

    run_server(service, args.host, args.port, options, log_level=args.log_level, on_ready=ready)
    return 0
