"""What the other inner learners and inner optimizers cost, layer by layer, side by side in one process.

    python -m ttt.bench.inner_learners [--threads 1] [--repeats 5] [--seq-len 512] [--out results/inner_learners]

One TTT layer (hidden 128, 2 heads of 64, mini-batch 16, batch 2, T tokens), forward + backward of a random
objective, medians over repeats after a warm-up round, the layers alternating within each round. Rows: the
specialised TTT-Linear / TTT-MLP (dual form), the same inner models through the generic torch.func path, a
SwiGLU inner model, the Nadaraya-Watson learner (SDPA form, and token by token at a short length), and TTT-Linear
with each inner optimizer. State bytes per sequence from the layer's decode state (growing for Nadaraya-Watson:
its K and V at T). Writes table.md and results.json under --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from ..layers import TTTMLP, TTTBase, TTTGeneric, TTTLinear, TTTNadarayaWatson

HIDDEN, HEADS, BATCH = 128, 2, 2

LAYERS = {
    "TTT-Linear (dual)": lambda: TTTLinear(HIDDEN, HEADS),
    "TTT-MLP (dual)": lambda: TTTMLP(HIDDEN, HEADS),
    "generic: linear": lambda: TTTGeneric(HIDDEN, HEADS, inner_model="linear"),
    "generic: mlp": lambda: TTTGeneric(HIDDEN, HEADS, inner_model="mlp"),
    "generic: swiglu": lambda: TTTGeneric(HIDDEN, HEADS, inner_model="swiglu"),
    "Nadaraya-Watson (SDPA)": lambda: TTTNadarayaWatson(HIDDEN, HEADS),
    "TTT-Linear + momentum": lambda: TTTLinear(HIDDEN, HEADS, inner_optimizer="momentum"),
    "TTT-Linear + forget gate": lambda: TTTLinear(HIDDEN, HEADS, forget_gate=True),
    "TTT-Linear + adam": lambda: TTTLinear(HIDDEN, HEADS, inner_optimizer="adam"),
    "TTT-Linear + muon": lambda: TTTLinear(HIDDEN, HEADS, inner_optimizer="muon"),
}


def learner_state_bytes(layer: TTTBase, seq_len: int) -> int:
    """Bytes of one layer's inference state for one sequence after `seq_len` tokens (not a whole model's)."""
    if isinstance(layer, TTTNadarayaWatson):
        return 2 * seq_len * HIDDEN * 4  # the learner's memory: every k and v so far (fp32)
    if isinstance(layer, TTTGeneric):
        inner = sum(getattr(layer, n).numel() for n in layer.inner_param_names)
        return 2 * inner * 4 + 8  # W and its gradient sum, as TTT-Linear / MLP (the generic path has no cache yet)
    return layer.allocate_inference_cache(1).nbytes()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ttt.bench.inner_learners", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--out", default="results/inner_learners")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = {name: make() for name, make in LAYERS.items()}
    x = torch.randn(BATCH, args.seq_len, HIDDEN)
    times: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(args.repeats + 1):
        for name, layer in layers.items():
            start = time.perf_counter()
            layer(x).square().mean().backward()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["TTT-Linear (dual)"][1:])
    lines = [
        f"One layer, hidden {HIDDEN}, {HEADS} heads of {HIDDEN // HEADS}, mini-batch 16, batch {BATCH} × "
        f"{args.seq_len} tokens, forward + backward, {args.threads} thread(s), median of {args.repeats}; "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}.",
        "",
        "| layer | fwd+bwd ms | vs TTT-Linear | state bytes / sequence |",
        "|---|---|---|---|",
    ]
    rows = {}
    for name, layer in layers.items():
        ms = 1e3 * statistics.median(times[name][1:])
        rows[name] = {"ms": ms, "state_bytes": learner_state_bytes(layer, args.seq_len)}
        lines.append(f"| {name} | {ms:.1f} | {ms / (1e3 * base):.2f}x | {rows[name]['state_bytes']:,} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
