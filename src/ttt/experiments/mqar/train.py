"""Train one MQAR model and measure its test accuracy over the labelled (query) positions.

Recipe (Zoology's, with fewer examples): a fixed training set of `num_train` examples seen for `epochs` epochs in
shuffled batches, a held-out test set of `num_test` examples (another seed), AdamW (β = 0.9, 0.98, weight decay
0.1), linear warmup over the first 10% of the steps then cosine decay to 0, gradient clipping at 1. The test
accuracy is measured after every epoch; training stops early once it reaches `stop_accuracy` (Zoology's early
stopping), or when the loss is not finite (the run is marked diverged).

    python -m ttt.experiments.mqar.train --mixer ttt-linear --seq-len 64 --num-kv-pairs 4 --lr 3e-3
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..common import add_settings_arguments, add_threads_argument, apply_threads
from .data import MQARSpec, mqar_examples
from .model import MIXERS, MQARModel, mixer_state_bytes


@dataclass
class MQARRun:
    mixer: str = "attention"
    seq_len: int = 64
    num_kv_pairs: int = 4
    d_model: int = 64
    lr: float = 1e-3
    vocab_size: int = 8192
    num_heads: int = 2
    num_layers: int = 2
    num_train: int = 8_000
    num_test: int = 1_000
    epochs: int = 3
    batch_size: int = 64
    weight_decay: float = 0.1
    stop_accuracy: float = 0.99
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {MIXERS}, got {self.mixer!r}")
        for name in ("num_train", "num_test", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        self.spec()  # checks the task's sizes

    def spec(self) -> MQARSpec:
        return MQARSpec(vocab_size=self.vocab_size, seq_len=self.seq_len, num_kv_pairs=self.num_kv_pairs)

    @property
    def name(self) -> str:
        return f"{self.mixer}_T{self.seq_len}_N{self.num_kv_pairs}_d{self.d_model}_lr{self.lr:g}"


def lr_factor(step: int, total: int, warmup_fraction: float = 0.1) -> float:
    """Linear warmup to 1 over the first `warmup_fraction` of the steps, then cosine to 0."""
    warmup = max(1, round(warmup_fraction * total))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def accuracy(model: MQARModel, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    model.eval()
    correct = count = 0
    for i in range(0, len(inputs), batch_size):
        _, c, n = model(inputs[i : i + batch_size], labels[i : i + batch_size])
        correct, count = correct + int(c), count + int(n)
    model.train()
    return correct / count


def train_mqar(run: MQARRun, log: bool = False) -> dict[str, Any]:
    """Train `run`; returns its settings and results (accuracy, best accuracy, steps, seconds, state bytes)."""
    start = time.perf_counter()
    torch.manual_seed(run.seed)
    spec = run.spec()
    train_x, train_y = mqar_examples(spec, run.num_train, seed=run.seed)
    test_x, test_y = mqar_examples(spec, run.num_test, seed=run.seed + 10_000)
    model = MQARModel(run.mixer, run.vocab_size, run.d_model, run.seq_len, run.num_heads, run.num_layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=run.lr, betas=(0.9, 0.98), weight_decay=run.weight_decay)
    steps_per_epoch = math.ceil(run.num_train / run.batch_size)
    total = steps_per_epoch * run.epochs
    gen = torch.Generator().manual_seed(run.seed)
    step, history, diverged, acc = 0, [], False, 0.0
    for epoch in range(run.epochs):
        order = torch.randperm(run.num_train, generator=gen)
        losses = []
        for i in range(0, run.num_train, run.batch_size):
            idx = order[i : i + run.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = run.lr * lr_factor(step, total)
            loss, _, _ = model(train_x[idx], train_y[idx])
            if not torch.isfinite(loss):
                diverged = True
                break
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
        if diverged:
            break
        acc = accuracy(model, test_x, test_y, 4 * run.batch_size)
        history.append({"epoch": epoch + 1, "step": step, "train_loss": sum(losses) / len(losses), "test_acc": acc})
        if log:
            print(f"{run.name} epoch {epoch + 1}: loss {history[-1]['train_loss']:.3f} acc {acc:.3f}", flush=True)
        if acc >= run.stop_accuracy:
            break
    return {
        **asdict(run),
        "name": run.name,
        "accuracy": acc,
        "best_accuracy": max((h["test_acc"] for h in history), default=0.0),
        "diverged": diverged,
        "steps": step,
        "planned_steps": total,
        "seconds": time.perf_counter() - start,
        "state_bytes": mixer_state_bytes(run.mixer, run.d_model, run.num_heads, run.seq_len, run.num_layers),
        "params": sum(p.numel() for p in model.parameters()),
        "history": history,
    }


def add_run_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One --flag per MQARRun field (dashes for underscores)."""
    add_settings_arguments(parser, MQARRun, skip)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    add_threads_argument(parser)
    args = vars(parser.parse_args(argv))
    apply_threads(args)
    result = train_mqar(MQARRun(**args), log=True)
    print(
        f"{result['name']}: accuracy {result['accuracy']:.4f} (best {result['best_accuracy']:.4f}), "
        f"{result['steps']} steps, {result['seconds']:.0f} s, state {result['state_bytes']} bytes"
    )


if __name__ == "__main__":
    main()
