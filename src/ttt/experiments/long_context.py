"""Long context (the paper's Fig. 2 right, small): per-position validation loss of TTT-Linear (M), TTT-MLP (M),
Transformer++ and Mamba trained the same way (same steps, batch, context, recipe; baselines matched in parameter
count to ttt-linear-SIZE by `ttt.train.models`) on the bundled byte corpus.

    python -m ttt.experiments.long_context --out results/long_context --seq-len 2048 --steps 300 --batch-size 4
    python -m ttt.experiments.long_context --smoke --out /tmp/lc          # seconds (CI)

Each model trains through `ttt.train.Trainer` with resume on (OUT/MODEL/), finished models are skipped, and the
evaluation (OUT/eval/: per_position.png, per_position.csv, eval.json) reruns over every finished model. The
summary adds, per model, the mean loss over each octave of positions [2^i, 2^(i+1)) — does the loss still fall in
the last octave?
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import add_settings_arguments, add_threads_argument, apply_threads, trainer_overrides

MODELS = ("ttt-linear-{size}", "ttt-mlp-{size}", "transformer++-{size}", "mamba-{size}")


@dataclass
class LongContextSettings:
    out: str = "results/long_context"
    size: str = "tiny"
    seq_len: int = 2048
    steps: int = 300
    batch_size: int = 4
    lr: float = 3e-3
    # TTT-MLP's inner-rate warmup start (-1: the trainer's default, 0.01); 0.1 = no warmup, needed at 8k
    # (docs/training.md, "Non-finite gradients")
    ttt_base_lr_init: float = -1.0
    eval_windows: int = 32
    models: str = ",".join(MODELS)
    seed: int = 0
    # Mamba through `fast_mamba_scan` (the same function, seconds instead of minutes per step on this CPU)
    fast_mamba: bool = True


SMOKE = dict(seq_len=64, steps=2, batch_size=2, eval_windows=2)


def octave_means(losses: list[float]) -> dict[str, float]:
    """Mean loss over positions [2^i, 2^(i+1)) (1-based), keyed "2^i-(2^(i+1) − 1)"; the last bucket runs to the
    end (positions 1024-2048 for a 2048 context)."""
    n = len(losses)
    edges = [1]
    while edges[-1] * 2 < n:
        edges.append(edges[-1] * 2)
    bounds = [*edges, n + 1]
    return {f"{lo}-{hi - 1}": sum(losses[lo - 1 : hi - 1]) / (hi - lo) for lo, hi in zip(bounds[:-1], bounds[1:])}


def summarize(out: Path, settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """OUT/summary.json from the evaluation (eval.json, per_position.csv) and the training record, without
    evaluating again."""
    results = json.loads((out / "eval" / "eval.json").read_text())
    seconds = json.loads((out / "seconds.json").read_text()) if (out / "seconds.json").exists() else {}
    curves: dict[str, list[float]] = {}
    for line in (out / "eval" / "per_position.csv").read_text().splitlines()[1:]:
        model, _, loss = line.rsplit(",", 2)
        curves.setdefault(model, []).append(float(loss))
    old = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else []
    previous = {r["name"]: r.get("settings") for r in old}
    for r in results:
        r["params"] = json.loads((out / r["name"] / "done").read_text())["params"]
        r["train_seconds"] = seconds.get(r["name"])
        r["octaves"] = octave_means(curves[r["name"]])
        r["settings"] = settings or previous.get(r["name"])
    (out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def run_long_context(s: LongContextSettings, progress: bool = True) -> list[dict[str, Any]]:
    from contextlib import nullcontext

    from .fast_mamba import fast_mamba_scan

    with fast_mamba_scan() if s.fast_mamba else nullcontext():
        return _run(s, progress)


def _run(s: LongContextSettings, progress: bool) -> list[dict[str, Any]]:
    from ..eval import evaluate_run
    from ..train import Trainer, load_run_config

    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [m.format(size=s.size) for m in s.models.split(",")]
    seconds = json.loads((out / "seconds.json").read_text()) if (out / "seconds.json").exists() else {}
    for name in names:
        run = out / name
        if (run / "done").exists():
            continue
        print(f"== {name}", flush=True)
        cfg = load_run_config(
            None,
            [
                f"--model.name={name}",
                *trainer_overrides(run, out / "data", s.steps, s.batch_size, s.seq_len, s.lr, s.seed, 10),
                f"--optim.ttt_base_lr_init={s.ttt_base_lr_init}",
            ],
        )
        start = time.perf_counter()
        result = Trainer(cfg, resume=True, progress=progress).run()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        (out / "seconds.json").write_text(json.dumps(seconds, indent=2) + "\n")
        (run / "done").write_text(json.dumps({"params": result["params"]}) + "\n")
    finished = [n for n in names if (out / n / "done").exists()]
    evaluate_run([out / n for n in finished], out / "eval", s.eval_windows, diagnostics=False, label=finished)
    return summarize(out, vars(s))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_arguments(parser, LongContextSettings)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long configuration (CI)")
    add_threads_argument(parser)
    args = vars(parser.parse_args(argv))
    apply_threads(args)
    smoke = args.pop("smoke")
    settings = LongContextSettings(**(args | (SMOKE if smoke else {})))
    results = run_long_context(settings, progress=not smoke)
    from .report import long_context_table

    print(long_context_table(results))


if __name__ == "__main__":
    main()
