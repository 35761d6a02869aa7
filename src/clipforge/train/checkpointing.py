"""Training checkpoints: atomic, pruned to the newest N, loaded without arbitrary pickles.

A checkpoint is one file `out_dir/checkpoints/step_XXXXXXXX.pt` written by `torch.save` and read
back with `torch.load(weights_only=True)`, which only rebuilds tensors and plain containers
(dict/list/tuple/str/int/float/bool/None): no code runs on load. Everything in it is kept in
those types (the numpy RNG state as a tensor, the config as a JSON string).

Writes are atomic: temp file in the same folder, flush + fsync, `os.replace`, fsync of the folder.
A crash at any moment leaves either the previous set of checkpoints or the new one, never a
truncated file under a checkpoint name; older files are deleted only after the new one is in place.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from clipforge.atomic_files import atomic_write
from clipforge.errors import InvalidInputError

FORMAT = "clipforge-train-checkpoint"
VERSION = 1
_NAME = re.compile(r"^step_(\d+)\.pt$")


def atomic_save(obj: Any, path: Union[str, Path]) -> Path:
    """torch.save `obj` to `path` atomically (temp file `.NAME.tmpPID`, fsync, os.replace)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def checkpoint_path(directory: Union[str, Path], step: int) -> Path:
    return Path(directory) / f"step_{step:08d}.pt"


def list_checkpoints(directory: Union[str, Path]) -> list[Path]:
    """Complete checkpoints in `directory`, oldest first (temp files never match the name pattern)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: Union[str, Path]) -> Optional[Path]:
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(directory: Union[str, Path], step: int, state: dict[str, Any], keep: int) -> Path:
    """Write `state` as the checkpoint for `step`, then delete all but the newest `keep`."""
    state = {"format": FORMAT, "version": VERSION, "step": step, **state}
    path = atomic_save(state, checkpoint_path(directory, step))
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    for stale in Path(directory).glob(".step_*.tmp*"):  # left by a run killed mid-write
        if not stale.name.endswith(f".tmp{os.getpid()}"):
            stale.unlink(missing_ok=True)
    return path


class CheckpointUnreadableError(InvalidInputError):
    """A training checkpoint that cannot be read back (truncated, empty, not a clipforge checkpoint)."""


def load_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """Read a training checkpoint safely (weights_only=True) onto the CPU; `CheckpointUnreadableError`
    names the file and the reason when it cannot be."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise CheckpointUnreadableError(f"{path}: the checkpoint is empty (0 bytes)")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointUnreadableError:
        raise
    except (OSError, RuntimeError, EOFError, ValueError) as e:  # truncated zip, bad pickle, I/O error
        raise CheckpointUnreadableError(f"{path}: cannot read the checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointUnreadableError(f"{path} is not a clipforge training checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointUnreadableError(f"{path}: checkpoint version {state.get('version')} is not supported (expected {VERSION})")
    return state


def load_latest_checkpoint(directory: Union[str, Path], warn: Any = None) -> Optional[tuple[Path, dict[str, Any]]]:
    """The newest checkpoint in `directory` that can be read, with its state; None when there is none.

    A newer one that cannot be read (a truncated copy, a disk that filled up) is skipped with a
    warning through `warn(message)` — the run resumes from the one before instead of stopping.
    """
    for path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path)
        except CheckpointUnreadableError as e:
            if warn is not None:
                warn(f"{e}; resuming from the checkpoint before it")
    return None


# ---- RNG state ----------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states, in weights_only-loadable types."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),  # (version, tuple of 625 ints, None)
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
        "has_gauss": n["has_gauss"],
        "gauss": n["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
