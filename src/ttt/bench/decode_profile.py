"""Where one compiled single-token decode step spends its time (docs/benchmarks.md, "What limits the misses").

TTT-Linear at `ttt bench`'s `small` size (d = 256, 4 heads, 2 layers), `ttt_implementation="compiled"`, batch 1,
after a prefill of 512 tokens: the time of a whole `model(token, cache=cache)` call, of the compiled decode
graph alone (`ttt.models.decode`), and torch.profiler's table of the ops inside the step.

    python -m ttt.bench.decode_profile [--steps 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from ..layers import TTTLayerState
from ..models import TTTCache, TTTForCausalLM, compiled_step, get_preset
from .spec import SIZES


def per_call_ms(fn: Callable[[], object], steps: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ttt.bench.decode_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = get_preset("ttt-linear-tiny", **SIZES["small"][1], ttt_implementation="compiled")
    model = TTTForCausalLM(config).eval()
    cache = TTTCache.from_model(model, batch_size=1)
    token = torch.randint(0, config.vocab_size, (1, 1))
    graph = compiled_step()

    def fresh_states() -> list[TTTLayerState]:
        return [TTTLayerState(ttt=layer.ttt, conv=dict(layer.conv)) for layer in cache.layers]

    with torch.no_grad():
        model(torch.randint(0, config.vocab_size, (1, 512)), cache=cache, use_cache=True, logits_to_keep=1)
        step_ms = per_call_ms(lambda: model(token, cache=cache, use_cache=True), args.steps)
        h = model.model.embed_tokens(token)
        graph_ms = per_call_ms(lambda: graph(model.model, h, fresh_states()), args.steps)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(50):
                model(token, cache=cache, use_cache=True)
    print(f"whole decode step {step_ms:.3f} ms; compiled graph call alone {graph_ms:.3f} ms", end="")
    print(f" (mean of {args.steps} calls)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
