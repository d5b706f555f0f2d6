"""GD vs momentum vs Adam vs Muon (and GD with a forget gate) as the inner loop, at equal outer budget.

    python -m ttt.bench.inner_optimizers [--steps 300] [--out results/inner_optimizers] [--threads 2]

Every run trains ttt-linear-tiny (Mamba backbone) with the same outer recipe, data order, seed and token budget as
`ttt quickstart` (byte-level bundled corpus, 8 × 256 tokens per step), changing only the inner optimizer. Adam and
Muon have a step size α (`inner_lr`) that GD takes from the learned η gate instead, so they get a small sweep and
the best is reported next to all. Runs resume (the trainer's checkpoints), so the command can be rerun to finish.

Also measured, side by side in one process (alternating, median of repeats): the training-step time (forward +
backward, batch 8 × 256) and the decode state in bytes per sequence for each optimizer, i.e. what each costs.
Writes `table.md`, `results.json` and `val_loss.png` under --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

RUNS: dict[str, dict[str, bool | float | str]] = {
    "gd": {},
    "gd+forget": {"forget_gate": True},
    "momentum": {"inner_optimizer": "momentum", "inner_momentum": 0.9},
    "adam-1e-3": {"inner_optimizer": "adam", "inner_lr": 1e-3},
    "adam-1e-2": {"inner_optimizer": "adam", "inner_lr": 1e-2},
    "adam-1e-1": {"inner_optimizer": "adam", "inner_lr": 1e-1},
    "muon-1e-2": {"inner_optimizer": "muon", "inner_lr": 1e-2},
    "muon-1e-1": {"inner_optimizer": "muon", "inner_lr": 1e-1},
    "muon-1": {"inner_optimizer": "muon", "inner_lr": 1.0},
}
PRESET = "ttt-linear-tiny"


def train_all(out: Path, steps: int, names: list[str]) -> dict[str, dict]:
    from ..eval import evaluate_run
    from ..train import Trainer, load_run_config

    results = {}
    for name in names:
        overrides = [f"--model.{k}={json.dumps(v)}" for k, v in RUNS[name].items()]
        cfg = load_run_config(
            None,
            [
                f"--model.name={PRESET}",
                *overrides,
                f"--train.steps={steps}",
                "--train.batch_size=8",
                "--data.seq_len=256",
                f"--data.prepared_dir={out / 'data'}",
                f"--train.out_dir={out / name}",
                f"--train.ckpt_every={max(1, steps // 3)}",
                "--train.log_every=50",
            ],
        )
        start = time.perf_counter()
        Trainer(cfg, resume=True).run()
        seconds = time.perf_counter() - start
        (ev,) = evaluate_run([out / name], out / name / "eval", max_windows=64, diagnostics=False, label=[name])
        # the trainer's log (complete also when this call only resumed a finished run)
        last = json.loads((out / name / "metrics.jsonl").read_text().strip().splitlines()[-1])
        results[name] = {
            "train_loss": last["loss"],
            "val_loss": ev["val_loss"],
            "bits_per_byte": ev.get("bits_per_byte"),
            "wall_s": seconds,
        }
        print(f"{name:12s} val loss {ev['val_loss']:.4f}  ({seconds:.0f} s)")
    return results


def cost(names: list[str], repeats: int) -> dict[str, dict]:
    """Training-step time and decode-state bytes per optimizer, models built from the same seed."""
    from ..models import TTTCache, TTTForCausalLM, get_preset

    models = {}
    for name in names:
        torch.manual_seed(0)
        models[name] = TTTForCausalLM(get_preset(PRESET, **RUNS[name]))
    ids = torch.randint(0, 256, (8, 257))
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats + 1):  # the first round warms up
        for name, model in models.items():
            start = time.perf_counter()
            model(ids[:, :-1], labels=ids[:, :-1], use_cache=False).loss.backward()
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, model in models.items():
        cache = TTTCache.from_model(model, 1)
        out[name] = {"step_ms": 1e3 * statistics.median(times[name][1:]), "state_bytes": cache.nbytes()}
    return out


def write(out: Path, results: dict, costs: dict, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = costs["gd"]
    lines = [
        f"Inner optimizers on {PRESET}, {steps} steps × 8 × 256 bytes, bundled corpus (held-out plays, 64 windows).",
        "",
        "| inner loop | val loss | bits/byte | train loss | step ms (vs GD) | state bytes / sequence (vs GD) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        c = costs[name]
        lines.append(
            f"| {name} | {r['val_loss']:.4f} | {r['bits_per_byte'] or float('nan'):.3f} | {r['train_loss']:.4f} | "
            f"{c['step_ms']:.0f} ({c['step_ms'] / base['step_ms']:.2f}x) | "
            f"{c['state_bytes']:,} ({c['state_bytes'] / base['state_bytes']:.2f}x) |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"train": results, "cost": costs}, indent=2))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(results)
    ax.barh(names, [results[n]["val_loss"] for n in names])
    losses = [r["val_loss"] for r in results.values()]
    ax.set_xlim(min(losses) - 0.05, max(losses) + 0.02)
    ax.set_xlabel("held-out loss (nats/byte)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "val_loss.png", dpi=120)
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ttt.bench.inner_optimizers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="results/inner_optimizers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(RUNS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [n for n in args.only.split(",") if n] or list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"unknown run(s) {unknown}; choose from {list(RUNS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = train_all(out, args.steps, names)
    costs = cost(names if "gd" in names else ["gd", *names], args.repeats)
    write(out, results, costs, args.steps)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
