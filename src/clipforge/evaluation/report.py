"""A small markdown report of evaluation metrics, with PNG plots of training curves.

The curves come from a JSONL log (the trainer's metrics.jsonl), one object per line with a "step".
Training lines carry "loss", "lr", "logit_scale" (and may say "type": "train"); evaluation lines
say "type": "eval", or carry none of the training fields, and hold metric names, plain or prefixed
("zero_shot_top1", "val/image_to_text_R@1"). Counts ("n_images", "val/zero_shot_n_classes") and
bookkeeping ("epoch", "samples_per_s") are not plotted. matplotlib (the optional `plot` extra) is
imported only when there are curves to draw, through its object API with the Agg canvas, so
neither pyplot's global state nor the process's backend is touched.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["write_report", "read_curves"]

PathLike = Union[str, "os.PathLike[str]"]

_TRAIN_KEYS = ("loss", "lr", "logit_scale")

# Display order and headings for the report table; unknown keys go under "other".
_SECTIONS = (
    ("Zero-shot classification", ("zero_shot_top1", "zero_shot_top5", "zero_shot_mean_per_class_top1",
                                  "zero_shot_chance", "zero_shot_chance_uniform", "zero_shot_chance_majority",
                                  "zero_shot_n_images", "zero_shot_n_classes")),
    ("Image → text retrieval", ("image_to_text_R@1", "image_to_text_R@5", "image_to_text_R@10")),
    ("Text → image retrieval", ("text_to_image_R@1", "text_to_image_R@5", "text_to_image_R@10")),
    ("Counts", ("n_images", "n_image_errors", "n_texts")),
)


def read_curves(curves_jsonl: PathLike) -> tuple[list[dict[str, float]], list[dict[str, float]], int]:
    """(training records, evaluation records, lines skipped as unreadable); numeric fields only.

    A log being written while it is read often ends in half a line: such lines are counted, not fatal.
    """
    train, evals, bad = [], [], 0
    with open(curves_jsonl, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if not isinstance(raw, dict) or not _is_number(raw.get("step")):
                bad += 1
                continue
            record = {k: float(v) for k, v in raw.items() if _is_number(v)}
            kind = raw.get("type")
            is_eval = kind == "eval" or (kind is None and not any(k in raw for k in _TRAIN_KEYS))
            (evals if is_eval else train).append(record)
    return train, evals, bad


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.startswith("n_") or "_n_" in name


def write_report(metrics: dict[str, float], out_dir: PathLike, *, curves_jsonl: Optional[PathLike] = None) -> Path:
    """Write out_dir/report.md (a metrics table; plots of the curves when `curves_jsonl` is given). Returns its path.

    Plots written next to it: loss.png, lr.png, logit_scale.png (those present in the log) and
    eval_metrics.png (every other numeric field, against step).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# clipforge evaluation report", ""]
    lines += _metrics_table(metrics)

    if curves_jsonl is not None:
        train, evals, bad = read_curves(curves_jsonl)
        lines += ["## Training curves", "", f"From `{curves_jsonl}`: {len(train)} training and {len(evals)} evaluation "
                  "records" + (f" ({bad} unreadable lines skipped)" if bad else "") + ".", ""]
        try:
            drawn = _plot_curves(train, evals, out)
        except ImportError:  # matplotlib is an optional extra: say so in the report, keep the numbers
            drawn = []
            lines += ["(No plots: they need matplotlib, `pip install 'clipforge[plot]'`.)", ""]
        for name in drawn:
            lines += [f"![{name}]({name}.png)", ""]
        last = [(k, r) for k, r in (("training", train[-1] if train else None), ("evaluation", evals[-1] if evals else None)) if r]
        if last:
            lines += ["Last logged values:", "", "| record | field | step | value |", "|---|---|---:|---:|"]
            for kind, record in last:
                fields = [k for k in record if k != "step"]
                lines += [f"| {kind} | {k} | {int(record['step'])} | {_fmt(record[k], k)} |" for k in fields]
            lines.append("")

    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _metrics_table(metrics: dict[str, float]) -> list[str]:
    if not metrics:
        return ["No metrics.", ""]
    lines: list[str] = []
    shown: set[str] = set()
    for title, keys in _SECTIONS:
        present = [k for k in keys if k in metrics]
        if present:
            lines += [f"## {title}", "", "| metric | value |", "|---|---:|"]
            lines += [f"| {k} | {_fmt(metrics[k], k)} |" for k in present]
            lines.append("")
            shown.update(present)
    other = [k for k in metrics if k not in shown]
    if other:
        lines += ["## Other", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(metrics[k], k)} |" for k in other]
        lines.append("")
    return lines


def _fmt(value: Any, key: str = "") -> str:
    if _is_count(key):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _series(records: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in records if key in r and math.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


def _eval_keys(records: list[dict[str, float]]) -> list[str]:
    keys: list[str] = []
    for r in records:
        for k in r:
            if k not in ("step", "epoch") and not _is_count(k) and k not in keys:
                keys.append(k)
    return keys


def _plot_curves(train: list[dict[str, float]], evals: list[dict[str, float]], out: Path) -> list[str]:
    """Draw one PNG per training field present and one for all eval metrics; return the names drawn."""
    plots: list[tuple[str, list[dict[str, float]], list[str], bool]] = []  # (file name, records, fields, log y)
    for key in _TRAIN_KEYS:
        if any(key in r for r in train):
            plots.append((key, train, [key], key == "lr" and all(v > 0 for v in _series(train, key)[1])))
    eval_keys = _eval_keys(evals)
    if eval_keys:
        plots.append(("eval_metrics", evals, eval_keys, False))
    if not plots:
        return []

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for name, records, keys, log_y in plots:
        fig = Figure(figsize=(7, 4) if len(keys) > 1 else (6, 3.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for key in keys:
            steps, values = _series(records, key)
            # Eval metrics come every N steps: markers make a handful of points readable;
            # chance levels are references, drawn dashed.
            style = "--" if "chance" in key else "-"
            ax.plot(steps, values, style, label=key, marker="o" if name == "eval_metrics" else None, markersize=3)
        ax.set_xlabel("step")
        ax.set_ylabel(name.replace("_", " "))
        if log_y:
            ax.set_yscale("log")
        if len(keys) > 1:
            ax.legend(fontsize="x-small", ncol=2)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png")
    return [name for name, _, _, _ in plots]
