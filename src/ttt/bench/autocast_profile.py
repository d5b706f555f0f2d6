"""Where bf16 autocast prefill spends its time: which ops run in float32, which in bfloat16, and what the casts cost.

    python -m ttt.bench.autocast_profile [--size 125m] [--layer linear] [--seq-len 2048] [--threads 1] [--top 15]
                                         [--implementation auto|compiled] [--train]

Times one prefill (batch 1, no grad, logits of the last token), or with `--train` one training step (forward +
backward of the LM loss), in float32 and under `torch.autocast("cpu", torch.bfloat16)` (medians of 3 after a
warm-up), then profiles one autocast step with torch.profiler and prints the ops by self CPU time with the dtypes of
their inputs, the casts (aten::_to_copy) in total, and the split between matrix products in bfloat16 and in float32.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from ..models import TTTCache, TTTForCausalLM, get_preset
from .spec import SIZES

MATMULS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::matmul", "aten::linear", "aten::baddbmm")


def step(model: TTTForCausalLM, ids: torch.Tensor, autocast: bool, train: bool) -> None:
    """One prefill (no grad, a cache, the last token's logits) or, with `train`, one forward + backward of the LM
    loss (autocast around the forward, as the trainer does)."""
    if train:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        return
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model(ids, cache=TTTCache.from_model(model, 1), logits_to_keep=1)


def prefill_seconds(model: TTTForCausalLM, ids: torch.Tensor, autocast: bool, train: bool = False) -> float:
    """Median seconds of `step` over 3 calls after a warm-up."""

    def run() -> None:
        step(model, ids, autocast, train)

    run()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ttt.bench.autocast_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="125m", choices=list(SIZES))
    p.add_argument("--layer", default="linear", choices=["linear", "mlp"])
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--implementation", default="auto", choices=["auto", "compiled"], help="ttt_implementation")
    p.add_argument("--train", action="store_true", help="a training step (forward + backward) instead of a prefill")
    args = p.parse_args(argv)
    if args.seq_len < 1 or args.threads < 1 or args.top < 1:
        p.error("--seq-len, --threads and --top must be >= 1")
    torch.set_num_threads(args.threads)
    preset, overrides = SIZES[args.size]
    torch.manual_seed(0)
    config = get_preset(f"ttt-{args.layer}-{preset}", **overrides, ttt_implementation=args.implementation)
    model = TTTForCausalLM(config).train(args.train)
    ids = torch.randint(0, model.config.vocab_size, (1, args.seq_len))
    fp32 = prefill_seconds(model, ids, autocast=False, train=args.train)
    bf16 = prefill_seconds(model, ids, autocast=True, train=args.train)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step(model, ids, autocast=True, train=args.train)
    what = "training step" if args.train else "prefill"
    print(
        f"ttt-{args.layer}-{args.size} ({args.implementation}), T = {args.seq_len}, {args.threads} thread(s), "
        f"torch {torch.__version__}"
    )
    print(f"{what} float32 {fp32 * 1e3:.0f} ms, bf16 autocast {bf16 * 1e3:.0f} ms: {fp32 / bf16:.2f}x\n")

    # self times: each op's own time, so nested ops are not counted twice
    by_op: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    total = 0.0
    for event in prof.events():
        dtypes = ",".join(sorted({str(d) for d in (event.input_dtypes or []) if d and d not in ("", "Scalar")}))
        key = (event.name, dtypes)
        by_op[key][0] += event.self_cpu_time_total / 1e3
        by_op[key][1] += 1
        total += event.self_cpu_time_total / 1e3
    rows = sorted(by_op.items(), key=lambda item: -item[1][0])
    print("| op | input dtypes | calls | self ms | share |\n|---|---|---|---|---|")
    for (name, dtypes), (ms, calls) in rows[: args.top]:
        print(f"| {name} | {dtypes or '-'} | {int(calls)} | {ms:.1f} | {ms / total:.0%} |")
    casts = sum(ms for (name, _), (ms, _) in by_op.items() if name in ("aten::_to_copy", "aten::copy_"))
    bf16_mm = sum(ms for (name, d), (ms, _) in by_op.items() if name in MATMULS and "BFloat16" in d)
    fp32_mm = sum(ms for (name, d), (ms, _) in by_op.items() if name in MATMULS and "BFloat16" not in d)
    print(
        f"\ntotal self {total:.0f} ms: casts (_to_copy, copy_) {casts:.0f} ms ({casts / total:.0%}), "
        f"matrix products in bfloat16 {bf16_mm:.0f} ms ({bf16_mm / total:.0%}), "
        f"in float32 {fp32_mm:.0f} ms ({fp32_mm / total:.0%})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
