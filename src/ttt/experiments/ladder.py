"""The paper's Table 1 ladder at small scale: seven models, one recipe, one token budget, the bundled byte corpus.

Each row adds one change to the row above (Transformer backbone until the last row):

    1 linear-attention   z = η tril(Q Kᵀ) V by the explicit formula (ttt.experiments.mixers.LinearAttentionLayer)
    2 ttt-equivalent     TTT-Linear, no bias/LN/residual, W0 = 0, one mini-batch = the whole window (Theorem 1)
    3 +learnable-W0      W0 and b0 learned (the inner model gets its bias)
    4 +ln-residual       z = q + LN(f(q)), loss ½‖LN(f(k)) − (v − k)‖²
    5 +mini-batch-16     gradients at the start of each mini-batch of 16 instead of at W0
    6 +learnable-eta     η_t = ttt_base_lr · sigmoid(θ_lr · x_t) / head_dim, learned token factors (the paper's layer)
    7 +mamba-backbone    the Mamba backbone: conv before the layer, shared Q/K with convs, output gate

Rows 1-5 use the constant η = ttt_base_lr / head_dim and token factor tf_i = 1 (row 6 brings the gate and the
learned tf_i = max(0, 1/(i+1) + a_i) together, as the official "learnable η").

    python -m ttt.experiments.ladder --out results/ladder --steps 300 --batch-size 8 --seq-len 256   # docs/results.md
    python -m ttt.experiments.ladder ... --extra     # also row 5b: row 5 with tf_i = 1/(i+1) (EXTRA_ROWS)
    python -m ttt.experiments.ladder --smoke --out /tmp/ladder        # seconds

Every row trains through `ttt.train.Trainer` with resume on (checkpoints under OUT/ROW/), so rerunning the command
continues an interrupted ladder; finished rows (evaluated, `row.json` written) are skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import add_settings_arguments, add_threads_argument, apply_threads, trainer_overrides
from .mixers import SPECIAL_CASE, register_linear_attention_layer

PAPER_PPL = [15.23, 15.23, 15.27, 14.05, 12.35, 11.99, 11.09]  # 125M, Pile, 2k context (paper's Table 1)


@dataclass
class LadderSettings:
    out: str = "results/ladder"
    steps: int = 300
    batch_size: int = 8
    seq_len: int = 256
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    lr: float = 3e-3
    ttt_base_lr: float = 1.0
    eval_windows: int = 256
    seed: int = 0


SMOKE = dict(steps=3, batch_size=2, seq_len=32, hidden_size=32, num_layers=1, num_heads=2, eval_windows=4)


def ladder_rows(seq_len: int, extra: bool = False) -> list[tuple[str, str, dict[str, Any]]]:
    """(row name, preset, model overrides) for the seven rows; each row's overrides extend the previous row's.
    With `extra`, the variants in EXTRA_ROWS follow (not part of the paper's ladder)."""
    rows = []
    current: dict[str, Any] = dict(SPECIAL_CASE, ttt_layer_type="linear_attention", mini_batch_size=seq_len)
    steps: list[tuple[str, dict[str, Any]]] = [
        ("linear-attention", {}),
        ("ttt-equivalent", dict(ttt_layer_type="linear")),
        ("+learnable-W0", dict(learnable_init=True, inner_bias=True)),
        ("+ln-residual", dict(inner_norm=True, inner_residual=True)),
        ("+mini-batch-16", dict(mini_batch_size=16)),
        ("+learnable-eta", dict(lr_gate=True, token_factor="learned")),
    ]
    for name, change in steps:
        current = {**current, **change}
        rows.append((name, "ttt-linear-tiny-T", dict(current)))
    rows.append(("+mamba-backbone", "ttt-linear-tiny", dict(current)))
    if extra:
        for name, parent, change in EXTRA_ROWS:
            base = next(r for r in rows if r[0] == parent)
            rows.append((name, base[1], {**base[2], **change}))
    return rows


# variants that isolate a choice of the ladder: (name, the row they modify, the change)
EXTRA_ROWS = [("5b:+mini-batch-16,tf=1/(i+1)", "+mini-batch-16", dict(token_factor="harmonic"))]
PARENT = {"5b:+mini-batch-16,tf=1/(i+1)": 4}  # the row an extra row is compared with (1-based)


def row_overrides(s: LadderSettings, row_dir: Path, preset: str, model: dict[str, Any]) -> list[str]:
    """The `ttt train` overrides of one row (the same recipe and token budget for every row)."""
    sizes: dict[str, Any] = dict(
        hidden_size=s.hidden_size, num_hidden_layers=s.num_layers, num_attention_heads=s.num_heads
    )
    sizes.update(intermediate_size=2 * s.hidden_size, ttt_base_lr=s.ttt_base_lr)
    items = [
        f"--model.name={preset}",
        *trainer_overrides(row_dir, Path(s.out) / "data", s.steps, s.batch_size, s.seq_len, s.lr, s.seed, 4),
    ]
    # strings go bare, the rest as JSON (true/false, numbers), as `parse_literal` reads them
    items += [f"--model.{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in {**sizes, **model}.items()]
    return items


def run_ladder(s: LadderSettings, progress: bool = True, extra: bool = False) -> list[dict[str, Any]]:
    """Train and evaluate every unfinished row; returns every finished row's result (also OUT/ladder.json)."""
    from ..eval import evaluate_run
    from ..train import Trainer, load_run_config

    register_linear_attention_layer()
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i, (name, preset, model) in enumerate(ladder_rows(s.seq_len, extra)):
        slug = name.split(":")[0] if ":" in name else name.lstrip("+")
        row_dir = out / f"{i + 1}-{slug}" if i < len(PAPER_PPL) else out / f"extra-{slug}"
        done = row_dir / "row.json"
        if done.exists():
            results.append(json.loads(done.read_text()))
            continue
        print(f"== row {i + 1}: {name}", flush=True)
        cfg = load_run_config(None, row_overrides(s, row_dir, preset, model))
        start = time.perf_counter()
        trained = Trainer(cfg, resume=True, progress=progress).run()
        seconds = time.perf_counter() - start
        (ev,) = evaluate_run([row_dir], row_dir / "eval", max_windows=s.eval_windows, diagnostics=False, label=[name])
        history = [json.loads(line) for line in (row_dir / "metrics.jsonl").read_text().splitlines()]
        result = {
            "row": i + 1 if i < len(PAPER_PPL) else name.split(":")[0],
            "parent": PARENT.get(name, i),
            "name": name,
            "preset": preset,
            "model_overrides": model,
            "params": trained["params"],
            "val_loss": ev["val_loss"],
            "val_ppl": ev["val_ppl"],
            "bits_per_byte": ev.get("bits_per_byte"),
            "final_train_loss": history[-1]["loss"],
            "train_seconds_this_process": seconds,
            "tokens": s.steps * s.batch_size * s.seq_len,
            "paper_ppl": PAPER_PPL[i] if i < len(PAPER_PPL) else None,
            "settings": vars(s),
        }
        done.write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"   val loss {result['val_loss']:.4f} nats/byte, ppl {result['val_ppl']:.3f}, {seconds:.0f} s", flush=True
        )
        results.append(result)
    (out / "ladder.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_arguments(parser, LadderSettings)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long configuration (CI)")
    parser.add_argument("--extra", action="store_true", help="also the variants in EXTRA_ROWS")
    add_threads_argument(parser)
    args = vars(parser.parse_args(argv))
    apply_threads(args)
    smoke, extra = args.pop("smoke"), args.pop("extra")
    settings = LadderSettings(**args)
    if smoke:
        settings = LadderSettings(**{**vars(settings), **SMOKE})
    results = run_ladder(settings, progress=not smoke, extra=extra)
    from .report import ladder_table

    print(ladder_table(results))


if __name__ == "__main__":
    main()
