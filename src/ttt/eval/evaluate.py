"""`ttt eval`: validation perplexity (and bits per byte with the byte tokenizer), the per-position loss curve, and
the inner-loop diagnostics, for one or several checkpoints, written as JSON, CSV and PNG."""

from __future__ import annotations

import csv
import json
import math
import shutil
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.initialization import no_init_weights

from ..data import PreparedData, load_prepared
from ..layers import TTTBase
from ..train import ConfigError, RunConfig, build_model, latest_checkpoint, load_checkpoint
from .diagnostics import inner_loss_trace, layer_inputs


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(checkpoint folder, run folder) for a run folder (its newest checkpoint) or a checkpoint folder."""
    path = Path(path)
    if (path / "trainer_state.json").is_file():
        return path, path.parent.parent
    latest = latest_checkpoint(path / "checkpoints")
    if latest is None:
        raise FileNotFoundError(f"{path} is neither a checkpoint folder nor a run folder with checkpoints/")
    return latest, path


def load_run_model(path: str | Path) -> tuple[PreTrainedModel, RunConfig, PreparedData, Path]:
    """The model of a checkpoint (or of a run's newest checkpoint), its run config and prepared data."""
    ckpt, run = resolve_checkpoint(path)
    cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    data_dir = Path(cfg.data.prepared_dir) if cfg.data.prepared_dir else run / "data"
    data = load_prepared(data_dir)
    state, _, trainer_state = load_checkpoint(ckpt)
    # no random initialisation of weights the checkpoint then overwrites (1.5 s at 125M): every persistent tensor
    # must come from the checkpoint (checked below); non-persistent buffers are computed in the constructors
    with no_init_weights():
        model = build_model(trainer_state["model_name"], data.tokenizer.vocab_size, trainer_state["model_overrides"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    # a tied lm_head is the embedding (tie_weights below); an untied one must come from the checkpoint
    tied = getattr(model.config, "tie_word_embeddings", False)
    if unexpected or [k for k in missing if not (tied and k.endswith("lm_head.weight"))]:
        raise ConfigError(
            f"checkpoint {ckpt} does not fit {trainer_state['model_name']}: {missing[:3]} {unexpected[:3]}"
        )
    model.tie_weights()
    return model.eval(), cfg, data, ckpt


@torch.no_grad()
def per_position_loss(model: nn.Module, data: PreparedData, seq_len: int, max_windows: int, batch: int = 8):
    """Mean NLL at each token index over the validation windows, the total NLL and the scored-token count."""
    windows = data.windows("val", seq_len)
    n = min(len(windows), max_windows)
    if n < 1:
        raise ConfigError(f"the validation split has no window of {seq_len + 1} tokens")
    bos = data.tokenizer.bos_id
    sums = torch.zeros(seq_len, dtype=torch.float64)
    counts = torch.zeros(seq_len, dtype=torch.float64)
    for start in range(0, n, batch):
        w = windows.batch(np.arange(start, min(start + batch, n)))
        targets = w[:, 1:]
        logits = model(input_ids=w[:, :-1], use_cache=False).logits.float()
        nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").double()
        scored = (targets != bos).double()
        sums += (nll * scored).sum(0)
        counts += scored.sum(0)
    return sums / counts.clamp(min=1), sums.sum().item(), counts.sum().item(), n


def log_bins(values: np.ndarray, n_bins: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Mean of `values` over geometrically growing bins of token index (1-based centres)."""
    edges = np.unique(np.round(np.geomspace(1, len(values) + 1, n_bins + 1)).astype(int))
    centres, means = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        centres.append(math.sqrt(lo * max(lo, hi - 1)))
        means.append(values[lo - 1 : hi - 1].mean())
    return np.array(centres), np.array(means)


def evaluate_run(
    paths: list[str | Path],
    out_dir: str | Path,
    max_windows: int = 64,
    diagnostics: bool = True,
    label: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate each of `paths` (run or checkpoint folders) on its run's validation split (at most `max_windows`
    windows) and write eval.json, per_position.csv/.png (and inner_loop_*.csv/.png with `diagnostics`) to
    `out_dir`; return one result dict per path.

    Raises ValueError for max_windows < 1 or a `label` list of another length than `paths`, FileExistsError when
    `out_dir` is an existing file, FileNotFoundError for a path that is neither a checkpoint nor a run folder.
    The arguments are checked before `out_dir` is created, and a folder created here is removed on failure.
    """
    if isinstance(max_windows, bool) or not isinstance(max_windows, Integral) or max_windows < 1:
        raise ValueError(f"max_windows must be an integer >= 1 (the validation windows to score), got {max_windows!r}")
    if not paths:
        raise ValueError("no checkpoints to evaluate: give at least one run or checkpoint folder")
    if label is not None and len(label) != len(paths):
        raise ValueError(f"label has {len(label)} names for {len(paths)} paths")
    out = Path(out_dir).expanduser()
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        where = "exists as a file" if existing == out else f"is inside {str(existing)!r}, a file"
        raise FileExistsError(
            f"the output folder {str(out)!r} {where}: give a folder for eval.json and the plots (--out DIR)"
        )
    for path in paths:
        resolve_checkpoint(path)
    created = next((p for p in reversed((out, *out.parents)) if not p.exists()), None)
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _evaluate(paths, out, max_windows, diagnostics, label)
    except BaseException:
        if created is not None:  # everything below it was written here: leave nothing half-done behind
            shutil.rmtree(created, ignore_errors=True)
        raise


def _evaluate(
    paths: list[str | Path], out: Path, max_windows: int, diagnostics: bool, label: list[str] | None
) -> list[dict[str, Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows: list[tuple[str, int, float]] = []  # (run, position, loss)
    for i, path in enumerate(paths):
        model, cfg, data, ckpt = load_run_model(path)
        name = label[i] if label else f"{Path(path).name} ({cfg.model.name})"
        curve, total, count, n = per_position_loss(model, data, cfg.data.seq_len, max_windows)
        loss = total / count
        result = {
            "name": name,
            "checkpoint": str(ckpt),
            "model": cfg.model.name,
            "val_loss": loss,
            "val_ppl": math.exp(min(loss, 50)),
            "windows": n,
            "scored_tokens": int(count),
        }
        if data.tokenizer.name == "byte":
            # every scored nat (EOS predictions included) over the bytes of text among the scored targets: EOS is
            # not a byte. Windows 0..n-1 score tokens 1..n * seq_len once each.
            targets = data.tokens("val")[1 : n * cfg.data.seq_len + 1]
            n_bytes = int(np.count_nonzero(targets < 256))
            result["bits_per_byte"] = total / max(n_bytes, 1) / math.log(2)
        results.append(result)
        values = curve.numpy()
        rows.extend((name, t + 1, float(v)) for t, v in enumerate(values))
        x, y = log_bins(values)
        ax.plot(x, y, marker="o", markersize=3, label=name)
        if diagnostics and any(isinstance(m, TTTBase) for m in model.modules()):
            result["inner_loop"] = write_diagnostics(model, data, cfg.data.seq_len, out / f"inner_loop_{i}", name)
    ax.set_xscale("log")
    ax.set_xlabel("token index in the context (log-binned)")
    ax.set_ylabel("mean next-token loss (nats)")
    ax.set_title("validation loss by position")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "per_position.png", dpi=120)
    plt.close(fig)
    with open(out / "per_position.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "position", "loss"])
        writer.writerows(rows)
    (out / "eval.json").write_text(json.dumps(results, indent=2))
    return results


def write_diagnostics(model: nn.Module, data: PreparedData, seq_len: int, stem: Path, name: str) -> str:
    """Fig. 4: per TTT layer, ℓ(W0; x_t), ℓ(W_{t−1}; x_t), ℓ(W_t; x_t) against t, on a few validation windows."""
    import matplotlib.pyplot as plt

    windows = data.windows("val", seq_len)
    ids = windows.batch(np.arange(min(4, len(windows))))[:, :-1]
    traces = [(layer, inner_loss_trace(layer, x)) for layer, x in layer_inputs(model, ids)]
    fig, axes = plt.subplots(1, len(traces), figsize=(4 * len(traces), 3.5), squeeze=False)
    rows: list[tuple[int | None, str, int, float]] = []  # (layer, weights, position, loss)
    for ax, (layer, trace) in zip(axes[0], traces):
        for key, label in (("W0", "ℓ(W0; x_t)"), ("W_prev", "ℓ(W_{t−1}; x_t)"), ("W_t", "ℓ(W_t; x_t)")):
            values = trace[key].double().numpy()
            x, y = log_bins(values, 24)
            ax.plot(x, y, label=label)
            rows.extend((layer.layer_idx, key, t + 1, float(v)) for t, v in enumerate(values))
        ax.set_xscale("log")
        ax.set_title(f"layer {layer.layer_idx}")
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("inner self-supervised loss")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(f"{stem}.png", dpi=110)
    plt.close(fig)
    with open(f"{stem}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", "weights", "t", "loss"])
        writer.writerows(rows)
    return f"{stem}.png"
