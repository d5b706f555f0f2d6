"""Run ONE benchmark job in this process and print its results as JSON lines (`@@bench {...}`).

    python -m ttt.bench.worker '{"job": {...}, "threads": 2, "dtype": "float32", ...}'

Jobs (see `spec.Job`):
    prefill   one forward over [1, T] with a cache, logits of the last token only (as generation does), after a
              warm-up (the full length below `long_from`, 512 tokens above); then `decode_steps` single-token steps
              through the cache it made (median ms/token after 2 warm-up steps)
    decode    the same steps at batch B from a synthetic state of length T (`models.synthetic_cache`)
    train     forward + backward of the LM loss on [B, T] (no optimizer step), after one warm-up step
    kernels   GEMM rate (fp32 [2048, C] @ [C, F], bf16 [256, C] @ [C, F], and the inner loop's batched
              [B·H, b, d] @ [B·H, d, d])
              and the TTT inner loop alone: ttt.ops.ttt_dual on random [B, T, H, d] (linear and mlp), no grad
Each result line carries `phase`, the measured seconds, and `peak_rss` (bytes, the phase's high-water mark).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import torch

from . import models
from .flops import gemm_flops, ttt_inner_flops
from .procstat import emit, is_oom, limit_memory, median_time, peak_rss_bytes, reset_peak_rss, timed
from .spec import ModelSpec

WARMUP_DECODE_STEPS = 2
BF16_ROWS = 256


def autocast(dtype: str):
    if dtype == "bfloat16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def decode_times(model, family: str, cache, batch: int, steps: int, dtype: str) -> list[float]:
    token = torch.zeros(batch, 1, dtype=torch.long)
    times = []
    with autocast(dtype):
        for i in range(WARMUP_DECODE_STEPS + steps):
            t = timed(lambda: models.decode_step(model, family, token, cache))
            if i >= WARMUP_DECODE_STEPS:
                times.append(t)
    return times


def run_prefill(p: dict[str, Any], spec: ModelSpec, seq_len: int) -> None:
    model = models.build(spec, p["seed"])
    family = spec.family
    export_s = models.attach_packages(model, spec, 1, p["dtype"], Path(p["scratch"]))
    ids = torch.randint(0, model.config.vocab_size, (1, seq_len))
    with torch.no_grad(), autocast(p["dtype"]):
        warm = ids if seq_len < p["long_from"] else ids[:, :512]
        models.prefill(model, family, warm, models.new_cache(model, family, 1))
        cache = models.new_cache(model, family, 1)
        reset_peak_rss()
        seconds = timed(lambda: models.prefill(model, family, ids, cache))
        emit(
            dict(
                phase="prefill",
                seconds=seconds,
                peak_rss=peak_rss_bytes(),
                state_bytes=models.measured_state_bytes(cache),
            )
        )
        if p["decode_steps"] > 0:
            reset_peak_rss()
            times = decode_times(model, family, cache, 1, p["decode_steps"], p["dtype"])
            record = dict(phase="decode", seconds=statistics.median(times), times=times, peak_rss=peak_rss_bytes())
            emit(dict(record, export_s=export_s) if export_s else record)


def run_decode(p: dict[str, Any], spec: ModelSpec, seq_len: int, batch: int) -> None:
    model = models.build(spec, p["seed"])
    export_s = models.attach_packages(model, spec, batch, p["dtype"], Path(p["scratch"]))
    with torch.no_grad(), autocast(p["dtype"]):
        cache = models.synthetic_cache(model, spec.family, batch, seq_len, p["seed"])
        reset_peak_rss()
        times = decode_times(model, spec.family, cache, batch, p["decode_steps"], p["dtype"])
    emit(
        dict(
            phase="decode",
            seconds=statistics.median(times),
            times=times,
            peak_rss=peak_rss_bytes(),
            state_bytes=models.measured_state_bytes(cache),
            **({"export_s": export_s} if export_s else {}),
        )
    )


def run_train(p: dict[str, Any], spec: ModelSpec, seq_len: int, batch: int) -> None:
    model = models.build(spec, p["seed"]).train()
    ids = torch.randint(0, model.config.vocab_size, (batch, seq_len))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast(p["dtype"]):
            loss = model(ids, labels=ids, use_cache=False).loss
        loss.backward()

    step()
    reset_peak_rss()
    seconds = timed(step)
    emit(dict(phase="train", seconds=seconds, peak_rss=peak_rss_bytes()))


def gemm_rate(m: int, k: int, n: int, batch: int, dtype: torch.dtype) -> float:
    """GFLOP/s of [batch, m, k] @ [batch, k, n] (median of 3 after a warm-up)."""
    a = torch.randn(batch, m, k).to(dtype)
    b = torch.randn(batch, k, n).to(dtype)
    seconds, _ = median_time(lambda: torch.matmul(a, b), repeats=3)
    return gemm_flops(m, k, n, batch) / seconds / 1e9


def inner_loop_rate(
    layer: str, batch: int, seq_len: int, heads: int, head_dim: int, b: int, compiled: bool = False
) -> float:
    """GFLOP/s of ttt_dual (no grad) on random [batch, seq_len, heads, head_dim] inputs; `compiled`: with its
    torch.compile'd mini-batch step (the compile happens in the warm-up call, outside the timing)."""
    from ..ops import InnerSpec, TTTState, ttt_dual

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, seq_len, heads, head_dim, generator=gen) * 0.5 for _ in range(3))
    lr = torch.full((batch, seq_len, heads), 1.0 / head_dim)
    token_factor = 1.0 / torch.arange(1, b + 1, dtype=torch.float32)
    hidden = head_dim if layer == "linear" else 4 * head_dim
    params: tuple[torch.Tensor, ...] = (
        torch.randn(heads, head_dim, hidden, generator=gen) * 0.02,
        torch.zeros(heads, 1, hidden),
    )
    if layer == "mlp":
        params += (torch.randn(heads, hidden, head_dim, generator=gen) * 0.02, torch.zeros(heads, 1, head_dim))
    spec = InnerSpec(token_factor, torch.ones(heads, head_dim), torch.zeros(heads, head_dim))
    state = TTTState.initial(params, batch)
    with torch.no_grad():
        seconds, _ = median_time(lambda: ttt_dual(q, k, v, lr, spec, state, compile_mini_batch=compiled), repeats=3)
    return batch * seq_len * heads * ttt_inner_flops(layer, head_dim, b) / seconds / 1e9


def run_kernels(p: dict[str, Any], batch: int, seq_len: int) -> None:
    cfg = models.ttt_config(ModelSpec("ttt-linear", p["size"]))
    width, heads, ffn, b = cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size, cfg.mini_batch_size
    d = width // heads
    # bf16 GEMM is a few hundred GFLOP/s with AVX-512 bf16 and emulated (~0.2 GFLOP/s) without: a short M keeps it
    # to seconds on CPUs without it
    rates = {
        "gemm_fp32": gemm_rate(2048, width, ffn, 1, torch.float32),
        "gemm_bf16": gemm_rate(BF16_ROWS, width, ffn, 1, torch.bfloat16),
        "bmm_small_fp32": gemm_rate(b, d, d, batch * heads, torch.float32),
        "inner_linear": inner_loop_rate("linear", batch, seq_len, heads, d, b),
        "inner_mlp": inner_loop_rate("mlp", batch, seq_len, heads, d, b),
    }
    if p.get("compiled_kernels"):
        for layer in ("linear", "mlp"):
            rates[f"inner_{layer}_compiled"] = inner_loop_rate(layer, batch, seq_len, heads, d, b, compiled=True)
    shapes = dict(gemm=[2048, width, ffn], gemm_bf16=[BF16_ROWS, width, ffn], bmm_small=[batch * heads, b, d, d])
    shapes["inner"] = [batch, seq_len, heads, d, b]
    emit(dict(phase="kernels", gflops=rates, shapes=shapes, peak_rss=peak_rss_bytes()))


def run(p: dict[str, Any]) -> None:
    job = p["job"]
    spec = ModelSpec(**job["model"]) if job["model"] else None
    kind, seq_len, batch = job["kind"], job["seq_len"], job["batch"]
    if kind == "kernels":
        run_kernels(p, batch, seq_len)
    elif spec is None:
        raise ValueError(f"a {kind!r} job names no model")
    elif kind == "prefill":
        # a folder for the job's AOT package (`aot` specs), kept while the job runs: packages load at first use
        with tempfile.TemporaryDirectory(prefix="ttt-bench-") as scratch:
            run_prefill(dict(p, scratch=scratch), spec, seq_len)
    elif kind == "decode":
        with tempfile.TemporaryDirectory(prefix="ttt-bench-") as scratch:
            run_decode(dict(p, scratch=scratch), spec, seq_len, batch)
    elif kind == "train":
        run_train(p, spec, seq_len, batch)
    else:
        raise ValueError(f"unknown job kind {kind!r}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    payload = json.loads(argv[0])
    if payload.get("mem_gib"):
        limit_memory(payload["mem_gib"])
    torch.set_num_threads(payload["threads"])
    try:
        run(payload)
    except Exception as err:  # reported to the runner as a row, not a crash of the whole benchmark
        status = "oom" if is_oom(err) else "error"
        emit(dict(phase="failed", status=status, error=f"{type(err).__name__}: {str(err)[:300]}"))
        traceback.print_exc()
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
