"""Training checkpoints that survive a crash at any moment.

Each checkpoint is a folder `step_XXXXXXXX` holding the model (safetensors), the optimizer state, the RNG states,
the data position and the trainer state. It is written under a temporary name and renamed into place, so a
folder with the final name is always complete; the newest complete one is the one resumed from. The last K are
kept. Each holds a checksum manifest (`checksums.json`): a file damaged afterwards (disk, copy, hand) is named on
load, and `--resume` falls back to the newest intact checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_dir
from ..integrity import DamagedFileError, verify_manifest, write_manifest

PREFIX = "step_"
FILES = ("model.safetensors", "optimizer.pt", "trainer_state.json")


def checkpoint_dirs(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    trainer_state: dict[str, Any],
    keep_last: int,
) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # leftovers of a write that was killed half-way (never renamed into place)
    for stale in root.glob(f".{PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    # shared storage (tied embeddings) cannot be saved twice by safetensors: clone to break the sharing
    tensors = {k: v.detach().clone().contiguous().cpu() for k, v in model_state.items()}
    with atomic_dir(root / f"{PREFIX}{step:08d}", overwrite=True, fsync=True) as tmp:
        save_file(tensors, tmp / "model.safetensors")
        torch.save({"optimizer": optimizer_state, "rng": rng_state()}, tmp / "optimizer.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
        write_manifest(tmp)
    for old in checkpoint_dirs(root)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return root / f"{PREFIX}{step:08d}"


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model state, {"optimizer", "rng"}, trainer state) of one checkpoint folder.

    Raises FileNotFoundError when a file is missing, DamagedFileError naming the file when it does not match the
    checkpoint's checksum manifest or cannot be read."""
    path = Path(path)
    missing = [n for n in FILES if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    verify_manifest(path)
    model_state = _read(path / "model.safetensors", load_file)
    extra = _read(path / "optimizer.pt", lambda f: torch.load(f, map_location="cpu", weights_only=False))
    trainer_state = _read(path / "trainer_state.json", lambda f: json.loads(f.read_text()))
    return model_state, extra, trainer_state


def _read(path: Path, reader: Callable[[Path], Any]) -> Any:
    try:
        return reader(path)
    except Exception as err:  # any failure to decode the file: name it (a manifest catches most of these first)
        raise DamagedFileError(path, f"cannot be read: {type(err).__name__}: {str(err)[:200]}") from err


def set_aside(folder: Path) -> Path:
    """Rename a damaged checkpoint `step_X` to `damaged_step_X` (kept for inspection; never resumed from)."""
    target = folder.with_name("damaged_" + folder.name)
    suffix = 1
    while target.exists():
        target, suffix = folder.with_name(f"damaged{suffix}_{folder.name}"), suffix + 1
    os.replace(folder, target)
    return target
