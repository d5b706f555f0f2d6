"""`ttt bench`: prefill, decode, training, memory and kernel-rate benchmarks of TTT models against Transformer++ and
Mamba (and the official code), each measurement in its own process under a memory and a time limit.

    from ttt.bench import BenchSpec, ModelSpec, run_bench     # or: ttt bench --quick

Single-question benchmarks beside it, each run as `python -m ttt.bench.<name>` (`--help` for its options), printing
a table:

    core_speed         naive vs dual vs primal vs compiled forms inside the model: prefill, train step, decode
    decode_profile     where one compiled single-token decode step spends its time (torch.profiler)
    state_size         bytes per session for each preset against a Transformer++ KV cache
    inner_learners     cost of each inner learner and inner optimizer, one layer side by side
    inner_optimizers   GD vs momentum vs Adam vs Muon (and a forget gate) as the inner loop, at equal outer budget
    inner_grad_growth  growth of the outer gradient through TTT-MLP's inner loop with length and inner rate
    convert_memory     peak memory of `ttt convert jax` on a synthetic full-size train state
    fast_decode        eager / compiled / AOT-package decode per weight format vs the weight-streaming limit, cold start
    coldstart          import, load, first-token and first decode times in fresh processes (also `ttt bench coldstart`)
    prefill_scaling    prefill tokens/s and peak memory against T, one pass or chunked, and where the time goes
    autocast_profile   where bf16 autocast prefill spends its time (casts, float32 elementwise, bf16 products)
    serve_load         load against `ttt serve` (also `ttt bench serve`), itself unbatched and `transformers serve`
"""

from .cli import run_bench
from .spec import BenchSpec, Job, Limits, ModelSpec, SpecError, parse_lengths, parse_models, plan

__all__ = ["BenchSpec", "Job", "Limits", "ModelSpec", "SpecError", "parse_lengths", "parse_models", "plan", "run_bench"]
