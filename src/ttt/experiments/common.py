"""What the experiment commands share: flags from a settings dataclass, the thread count, and the `ttt train`
overrides of one run of the shared recipe."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any


def _parse_bool(text: str) -> bool:
    return text.lower() in ("1", "true", "yes")


def add_settings_arguments(parser: argparse.ArgumentParser, settings: type, skip: tuple[str, ...] = ()) -> None:
    """One --flag per field of the dataclass `settings` (dashes for underscores), typed by its default."""
    for f in fields(settings):
        if f.name in skip:
            continue
        kind = _parse_bool if isinstance(f.default, bool) else type(f.default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")


def apply_threads(args: dict[str, Any]) -> None:
    """Pop --threads from the parsed `args` and set torch's thread count when it is given."""
    threads = args.pop("threads")
    if threads:
        import torch

        torch.set_num_threads(threads)


def trainer_overrides(
    run_dir: Path, data_dir: Path, steps: int, batch_size: int, seq_len: int, lr: float, seed: int, checkpoints: int
) -> list[str]:
    """The `ttt train` overrides of one experiment run: its budget, `checkpoints` checkpoints over the run (the
    newest kept, so an interrupted run resumes), 20 metric records, and the data prepared once under `data_dir`."""
    return [
        f"--train.out_dir={run_dir}",
        f"--train.steps={steps}",
        f"--train.batch_size={batch_size}",
        f"--train.seed={seed}",
        f"--train.ckpt_every={max(1, steps // checkpoints)}",
        f"--train.log_every={max(1, steps // 20)}",
        "--train.keep_last=1",
        f"--optim.lr={lr}",
        f"--data.seq_len={seq_len}",
        f"--data.prepared_dir={data_dir}",
    ]
