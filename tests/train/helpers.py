from __future__ import annotations

import json
from pathlib import Path

from ttt.train.config import load_run_config
from ttt.train.trainer import Trainer

SMALL = ["--train.batch_size=4", "--data.seq_len=64", "--train.log_every=1"]


def train(out: Path, data: Path, *overrides: str, resume: bool = False) -> dict:
    cfg = load_run_config(None, [*SMALL, f"--train.out_dir={out}", f"--data.prepared_dir={data}", *overrides])
    return Trainer(cfg, resume=resume, progress=False).run()


def losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        out[record["step"]] = record["loss"]
    return out
