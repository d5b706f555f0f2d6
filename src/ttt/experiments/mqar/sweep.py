"""The MQAR grid: mixers × (T, N) settings × d_model × learning rates, one JSON per finished run, resumable.

    python -m ttt.experiments.mqar.sweep --out results/mqar                       # the default grid (see GRID)
    python -m ttt.experiments.mqar.sweep --out results/mqar --settings 64:4,128:8 --d-models 64 \\
        --mixers attention,ttt-linear --lrs 1e-3,3e-3
    python -m ttt.experiments.mqar.sweep --smoke --out /tmp/mqar                   # seconds (CI)

Runs go in the order settings → d_model → mixer → lr, so the cheapest settings finish first; a run whose
OUT/runs/NAME.json exists is skipped, so rerunning the command continues the grid (an interrupted run restarts from
its beginning). `--max-minutes` stops before starting a run once that much wall time has passed. After the runs,
OUT/summary.md (best accuracy over the learning rates per mixer and setting) and OUT/mqar.png (accuracy against
state size) are rewritten from every JSON present.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..common import add_threads_argument, apply_threads
from .model import MIXERS
from .train import MQARRun, add_run_arguments, train_mqar

GRID_SETTINGS = ((64, 4), (128, 8), (256, 16), (256, 64))
GRID_D_MODELS = (64, 128)
GRID_LRS = (1e-3, 3e-3, 1e-2, 3e-2)
SMOKE = dict(vocab_size=256, num_train=16, num_test=8, epochs=1, batch_size=8)


def parse_settings(text: str) -> list[tuple[int, int]]:
    """'64:4,128:8' -> [(64, 4), (128, 8)]."""
    try:
        return [(int(t), int(n)) for t, n in (item.split(":") for item in text.split(",") if item)]
    except ValueError:
        raise ValueError(f"settings must look like T:N,T:N (e.g. 64:4,128:8), got {text!r}") from None


def grid_runs(
    base: MQARRun,
    settings: list[tuple[int, int]],
    d_models: list[int],
    mixers: list[str],
    lrs: list[float],
) -> list[MQARRun]:
    runs = []
    for seq_len, pairs in settings:
        for d_model in d_models:
            for mixer in mixers:
                for lr in lrs:
                    fields = asdict(base) | dict(
                        mixer=mixer, seq_len=seq_len, num_kv_pairs=pairs, d_model=d_model, lr=lr
                    )
                    runs.append(MQARRun(**fields))
    return runs


def run_grid(runs: list[MQARRun], out: Path, max_minutes: float = 0.0, log: bool = True) -> list[dict[str, Any]]:
    """Train every run without a result file under OUT/runs; returns the results of every run in `runs` that has
    one (finished now or before)."""
    folder = out / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i, run in enumerate(runs):
        path = folder / f"{run.name}.json"
        if path.exists():
            continue
        if max_minutes and time.perf_counter() - start > 60 * max_minutes:
            print(
                f"stopping after {max_minutes} minutes: {sum(not (folder / f'{r.name}.json').exists() for r in runs)} "
                "runs left (rerun the command to continue)",
                flush=True,
            )
            break
        if log:
            print(f"[{i + 1}/{len(runs)}] {run.name}", flush=True)
        result = train_mqar(run)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(path)
        if log:
            print(
                f"    accuracy {result['accuracy']:.4f} (best {result['best_accuracy']:.4f}), {result['steps']} steps,"
                f" {result['seconds']:.0f} s{' DIVERGED' if result['diverged'] else ''}",
                flush=True,
            )
    return [json.loads(p.read_text()) for r in runs if (p := folder / f"{r.name}.json").exists()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/mqar")
    parser.add_argument("--settings", default=",".join(f"{t}:{n}" for t, n in GRID_SETTINGS), help="T:N,T:N,...")
    parser.add_argument("--d-models", default=",".join(map(str, GRID_D_MODELS)))
    parser.add_argument("--mixers", default=",".join(MIXERS))
    parser.add_argument("--lrs", default=",".join(f"{lr:g}" for lr in GRID_LRS))
    parser.add_argument("--max-minutes", type=float, default=0.0, help="start no run after this much time (0: off)")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long configuration (CI)")
    add_threads_argument(parser)
    add_run_arguments(parser, skip=("mixer", "seq_len", "num_kv_pairs", "d_model", "lr"))
    args = vars(parser.parse_args(argv))
    apply_threads(args)
    out, smoke = Path(args.pop("out")), args.pop("smoke")
    settings = parse_settings(args.pop("settings"))
    d_models = [int(d) for d in args.pop("d_models").split(",")]
    mixers = args.pop("mixers").split(",")
    lrs = [float(lr) for lr in args.pop("lrs").split(",")]
    max_minutes = args.pop("max_minutes")
    if smoke:
        args |= SMOKE
        settings, d_models, lrs = [(32, 2)], [16], lrs[:1]
    base = MQARRun(**args)
    results = run_grid(grid_runs(base, settings, d_models, mixers, lrs), out, max_minutes)
    from ..report import mqar_plot, mqar_table

    all_results = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    table = mqar_table(all_results)
    (out / "summary.md").write_text(table + "\n")
    mqar_plot(all_results, out / "mqar.png")
    print(table)
    print(f"{len(results)} runs of this grid finished; wrote {out / 'summary.md'} and {out / 'mqar.png'}")


if __name__ == "__main__":
    main()
