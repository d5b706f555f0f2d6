"""Training checkpoints that survive a crash at any moment.

Each checkpoint is a folder `step_XXXXXXXX` holding the model (safetensors), the optimizer state, the RNG states,
the data position and the trainer state. It is written under a temporary name and renamed into place, so a
folder with the final name is always complete; the newest complete one is the one resumed from. The last K are
kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_dir

PREFIX = "step_"


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
    for old in checkpoint_dirs(root)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return root / f"{PREFIX}{step:08d}"


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model state, {"optimizer", "rng"}, trainer state) of one checkpoint folder."""
    path = Path(path)
    missing = [n for n in ("model.safetensors", "optimizer.pt", "trainer_state.json") if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    model_state = load_file(path / "model.safetensors")
    extra = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    trainer_state = json.loads((path / "trainer_state.json").read_text())
    return model_state, extra, trainer_state
