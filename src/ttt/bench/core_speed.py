"""Speed of the three forms of the TTT computation inside the full model, on this machine.

    python -m ttt.bench.core_speed [--threads 1] [--repeats 5] [--out results/core_speed]

For each model size and layer type: prefill tokens/s (one forward, no grad), training step time (forward +
backward of the LM loss) and decode ms/token (one token through the cache after a prompt), with the TTT layers
forced to the naive, dual, primal or compiled form (the compiled form's first calls, which include compiling, are
reported separately). Medians over repeats after one warm-up. Writes a markdown table and JSON
with the machine description. The naive form runs at a short length only (it is the oracle, not a fast path).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models import TTTCache, TTTForCausalLM, get_preset


@dataclass(frozen=True)
class Size:
    """A model size and its input: the preset (`{layer}` filled in), config overrides, batch and length."""

    preset: str
    batch: int
    seq_len: int
    naive_len: int
    overrides: dict[str, int] = field(default_factory=dict)


# "small": the size of the official code's figures quoted in the core issue (d=256, 4 heads, 2 layers,
# FFN 688, vocab 1000, Mamba backbone, B=2, T=512)
SIZES = {
    "small": Size(
        preset="ttt-{layer}-tiny",
        overrides=dict(hidden_size=256, num_attention_heads=4, intermediate_size=688, vocab_size=1000),
        batch=2,
        seq_len=512,
        naive_len=32,
    ),
    "125m": Size(preset="ttt-{layer}-125m", overrides=dict(vocab_size=32000), batch=1, seq_len=128, naive_len=16),
}


WARMUP: dict[str, float] = {}


def median_time(fn, repeats: int, label: str = "") -> float:
    """Median wall time of fn() over `repeats` calls after one warm-up call (timed into WARMUP[label]: with the
    compiled form it includes torch.compile's compile time)."""
    start = time.perf_counter()
    fn()
    WARMUP[label] = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def set_form(model: TTTForCausalLM, form: str) -> None:
    model.config.ttt_implementation = form  # the model-level paths (the compiled decode graph) read the config
    for block in model.model.layers:
        block.seq_modeling_block.implementation = form


def bench(size: str, layer: str, form: str, repeats: int) -> dict:
    spec = SIZES[size]
    torch.manual_seed(0)
    model = TTTForCausalLM(get_preset(spec.preset.format(layer=layer), **spec.overrides))
    set_form(model, form)
    batch = spec.batch
    seq_len = spec.naive_len if form == "naive" else spec.seq_len
    ids = torch.randint(0, model.config.vocab_size, (batch, seq_len))
    row = dict(size=size, layer=layer, form=form, batch=batch, seq_len=seq_len)

    model.eval()
    with torch.no_grad():
        t = median_time(lambda: model(ids, use_cache=False), repeats, "prefill")
    row["prefill_tok_s"] = batch * seq_len / t
    row["forward_ms"] = t * 1e3

    model.train()

    def train_step():
        model.zero_grad(set_to_none=True)
        model(ids, labels=ids, use_cache=False).loss.backward()

    row["train_step_ms"] = median_time(train_step, repeats, "train") * 1e3

    model.eval()
    steps = 16
    with torch.no_grad():
        cache = TTTCache.from_model(model, batch)
        model(ids, cache=cache, use_cache=True)
        token = ids[:, -1:]

        def decode():
            for _ in range(steps):
                model(token, cache=cache, use_cache=True)

        row["decode_ms_token"] = median_time(decode, repeats, "decode") / steps * 1e3
    row["first_call_s"] = dict(WARMUP)
    return row


def first(row: dict) -> str:
    """First-call seconds: prefill / train step / decode."""
    w = row["first_call_s"]
    return f"{w['prefill']:.1f} / {w['train']:.1f} / {w['decode']:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ttt.bench.core_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--layers", nargs="+", default=["linear", "mlp"], choices=["linear", "mlp"])
    forms = ["dual", "primal", "naive", "compiled"]
    parser.add_argument("--forms", nargs="+", default=["dual", "primal", "naive"], choices=forms)
    parser.add_argument("--out", default="results/core_speed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)"
    rows = []
    header = (
        "| size | layer | form | B×T | prefill tok/s | forward ms | train step ms | decode ms/token | first calls s |"
    )
    print(f"machine: {machine}\n{header}\n|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for layer in args.layers:
            for form in args.forms:
                r = bench(size, layer, form, args.repeats)
                rows.append(r)
                print(
                    f"| {size} | {layer} | {form} | {r['batch']}×{r['seq_len']} | {r['prefill_tok_s']:.0f} | "
                    f"{r['forward_ms']:.1f} | {r['train_step_ms']:.1f} | {r['decode_ms_token']:.2f} | {first(r)} |",
                    flush=True,
                )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(dict(machine=machine, command=vars(args), rows=rows), indent=2))
    lines = [f"machine: {machine}", "", header, "|---|---|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r['size']} | {r['layer']} | {r['form']} | {r['batch']}×{r['seq_len']} | {r['prefill_tok_s']:.0f} | "
        f"{r['forward_ms']:.1f} | {r['train_step_ms']:.1f} | {r['decode_ms_token']:.2f} | {first(r)} |"
        for r in rows
    ]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}/results.md and results.json")


if __name__ == "__main__":
    main()
