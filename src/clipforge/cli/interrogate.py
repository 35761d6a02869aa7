"""`clipforge interrogate IMAGE_OR_DIR... --model M`: describe images with phrases from label tables.

torch and the model code are imported inside `run`, so registering the command costs nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional

from clipforge.cli.common import add_model_arguments, json_text, load_model, printable
from clipforge.errors import InvalidInputError

# Kept here as text (not imported from the task module) so that `clipforge --help` stays torch-free.
DEFAULT_TABLES = "mediums,movements,subjects,styles"

EPILOG = """examples:
  clipforge interrogate cat.jpg --model ViT-L-14 --weights openai
  clipforge interrogate photos/ --model ViT-B-32.pt --out-dir captions/ --max-phrases 6
  clipforge interrogate art/ --model ViT-B-32.pt --tables mediums,styles --table artists=artists.txt --json

The prompt starts with the best phrase of the subject tables and greedily adds the phrase that
raises image-prompt similarity most, until nothing raises it or the next phrase would pass 77
tokens. A folder is searched recursively and each image's prompt is written to a .txt next to
it (or under --out-dir); existing .txt files are kept unless --overwrite. Single image files
are printed only, unless --out-dir is given. Unreadable images are reported and skipped.
Table embeddings are cached in $CLIPFORGE_CACHE/interrogate (~/.cache/clipforge/interrogate).
"""


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `clipforge interrogate`."""
    p = subparsers.add_parser(
        "interrogate",
        help="describe images with phrases from label tables (mediums, movements, subjects, styles)",
        description="Rank label-table phrases by similarity to each image and build a prompt from the best.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files, folders (searched recursively), glob patterns or list files")
    p.add_argument("--tables", default=DEFAULT_TABLES, metavar="NAMES",
                   help=f"default tables to use, comma-separated (default {DEFAULT_TABLES}; 'none' for only --table ones)")
    p.add_argument("--table", action="append", default=[], metavar="NAME=FILE",
                   help="a table of your own, one phrase per line (repeatable; replaces a default table of that name)")
    p.add_argument("--subject-tables", default="subjects", metavar="NAMES",
                   help="tables the prompt's first phrase comes from (default subjects; all tables if none of these is used)")
    p.add_argument("--max-phrases", type=int, default=None,
                   help="most phrases in a prompt, the subject included (default: no cap)")
    p.add_argument("--candidates", type=int, default=16, help="best phrases per table that compete for the prompt (default 16)")
    p.add_argument("--top-k", type=int, default=5, help="best phrases per table reported with --json (default 5)")
    p.add_argument("--out-dir", metavar="DIR", help="write the .txt files here instead of next to the images")
    p.add_argument("--overwrite", action="store_true", help="replace .txt files that already exist")
    p.add_argument("--json", action="store_true", help="print one JSON document with prompts, scores and per-table phrases")
    p.add_argument("--cache-dir", metavar="DIR", help="where table embeddings are cached (default $CLIPFORGE_CACHE/interrogate)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the table-embedding cache")
    p.add_argument("--batch-size", type=int, default=16, help="images decoded and encoded per batch (default 16)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_arguments(p)
    p.set_defaults(func=run)


def parse_tables(tables: str, extra: list[str]) -> dict[str, list[str]]:
    """--tables names and --table NAME=FILE entries -> {name: phrases} (a user table replaces a default one)."""
    from clipforge.tasks.interrogation import DEFAULT_TABLES as NAMES
    from clipforge.tasks.interrogation import load_default_table, read_table

    names = [n.strip() for n in tables.split(",") if n.strip()]
    if names == ["none"]:
        names = []
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise InvalidInputError(f"--tables: unknown table(s) {', '.join(unknown)}; the default tables are {', '.join(NAMES)} "
                         "(use --table NAME=FILE for your own)")
    result = {name: load_default_table(name) for name in names}
    for entry in extra:
        name, sep, file = entry.partition("=")
        if not sep or not name.strip() or not file:
            raise InvalidInputError(f"--table wants NAME=FILE, got {entry!r}")
        result[name.strip()] = read_table(file)
    if not result:
        raise InvalidInputError("no label tables: give --tables and/or --table NAME=FILE")
    return result


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from clipforge.tasks.interrogation import Interrogator, interrogate_files

    if args.max_phrases is not None and args.max_phrases < 1:
        raise InvalidInputError(f"--max-phrases must be >= 1, got {args.max_phrases}")
    if args.top_k < 1 or args.candidates < 1 or args.batch_size < 1:
        raise InvalidInputError("--top-k, --candidates and --batch-size must be >= 1")
    tables = parse_tables(args.tables, args.table)
    subject_tables = [t.strip() for t in args.subject_tables.split(",") if t.strip()]
    progress = not args.no_progress and sys.stderr.isatty()

    model, preprocess, tokenizer = load_model(args)
    interrogator = Interrogator(
        model, preprocess, tokenizer, tables, cache_dir=args.cache_dir, batch_size=256,
        cache=not args.no_cache, subject_tables=subject_tables, candidates_per_table=args.candidates, progress=progress,
    )
    for name in interrogator.tables:  # encode (or load) every table before the per-image bar starts
        interrogator.table_embeddings(name)

    has_folder = any(os.path.isdir(p) for p in args.inputs)
    write = has_folder or args.out_dir is not None
    single = len(args.inputs) == 1 and not has_folder

    def on_error(path: str, code: str, reason: str) -> None:
        tqdm.write(f"clipforge interrogate: skipped {printable(path)}: {printable(reason)} [{code}]", file=sys.stderr)

    def on_result(path: str, result: Any) -> None:
        if not args.json:
            tqdm.write(result.prompt if single else f"{printable(path)}\t{result.prompt}", file=sys.stdout)

    report = interrogate_files(
        interrogator, args.inputs, args.out_dir, write=write, overwrite=args.overwrite, max_phrases=args.max_phrases,
        top_k=args.top_k, batch_size=args.batch_size, progress=progress, on_error=on_error, on_result=on_result,
    )

    if args.json:
        entries: list[dict[str, Any]] = []
        for path, result in report.results.items():
            entry: dict[str, Any] = {"path": path, **result.to_dict()}
            if path in report.written:
                entry["txt"] = report.written[path]
            entries.append(entry)
        entries += [{"path": p, "error": {"code": c, "message": m}} for p, c, m in report.errors]
        print(json_text({"results": entries, "n_interrogated": len(report.results), "n_errors": len(report.errors),
                         "n_existing": len(report.existing)}))
    summary = _summary(report, write)
    if summary and not single:
        print(f"clipforge interrogate: {summary}", file=sys.stderr)
    if report.results or report.existing:  # some image has its prompt (now or from an earlier run)
        return 0
    if not report.errors and not report.existing:
        print("clipforge interrogate: no images found", file=sys.stderr)
    return 1


def _summary(report: Any, write: bool) -> Optional[str]:
    parts = [f"{len(report.results)} images interrogated"]
    if write:
        parts.append(f"{len(report.written)} .txt files written")
    if report.errors:
        parts.append(f"{len(report.errors)} unreadable images skipped")
    if report.existing:
        parts.append(f"{len(report.existing)} already captioned (kept; --overwrite replaces them)")
    return ", ".join(parts)
