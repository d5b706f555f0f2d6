"""`ttt bench`: prefill, decode, training, memory and kernel-rate benchmarks of TTT models against Transformer++ and
Mamba (and the official code), each measurement in its own process under a memory and a time limit.

    from ttt.bench import BenchSpec, ModelSpec, run_bench     # or: ttt bench --quick
"""

from .cli import run_bench
from .spec import BenchSpec, Job, Limits, ModelSpec, SpecError, parse_lengths, parse_models, plan

__all__ = ["BenchSpec", "Job", "Limits", "ModelSpec", "SpecError", "parse_lengths", "parse_models", "plan", "run_bench"]
