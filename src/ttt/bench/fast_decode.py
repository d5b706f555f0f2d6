"""Decode speed of the eager, compiled and AOT (`ttt export`) paths against the weight-streaming limit, and the cold
start of each: the figures of issue 15.

    python -m ttt.bench.fast_decode [--sizes small 125m] [--layers linear mlp] [--batches 1 16] [--steps 40]
                                    [--rounds 3] [--threads 1] [--dir /tmp/ttt_fast_decode] [--out results/fast_decode]

For each size and layer type: a model with random weights is saved (`save_pretrained`) and exported for the batch
sizes asked for (`export_decode`, timed). Then, per batch size, ms/token of single-token steps through a cache after a
100-token prompt, for
    eager      the default path without packages (`ttt_implementation="auto"`)
    compiled   `ttt_implementation="compiled"` (torch.compile; its compile time reported apart)
    aot        the same folder loaded with `from_pretrained`, its AOT decode packages attached (`linears="auto"`: the
               linear layers as streaming reductions up to 2 rows, `models/streaming.py`)
    aot_matmul with `--compare-linears`: packages of the same weights whose linear layers are torch's matrix product
measured in alternating rounds (median of the per-round medians), and `linears`: the model's linear layers alone,
one token per row through each in turn (the matrix-vector products of a step, nothing else; what the weights cost at
the speed torch's kernels read them). The limit is the bytes of weights a step reads
(every parameter once, the tied embedding counted once) over the memory read bandwidth measured in the same run at
the same thread count (sum over a 1 GiB float32 buffer); the compute floor is the linear layers' FLOPs per step over
the rate of a large matrix product in the weights' dtype, measured in the same run (above the bandwidth limit at
large batches: no kernel streams faster than the arithmetic allows). Cold start (`coldstart.measure_once`, as `ttt bench
coldstart`): a fresh `python` process that imports ttt, loads the folder and reads a 100-token prompt to its first
token, then decodes, with and without the packages and with the compiled path. `--baseline-contexts 1024 8192`
adds the Transformer++ baseline's decode with a KV cache of each length against its limit (weights + KV cache).
Writes results.md and results.json under --out.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..models import (
    WEIGHT_FORMATS,
    TTTCache,
    TTTForCausalLM,
    export_decode,
    get_preset,
    quantize_weights,
)
from .coldstart import measure_once, without_packages
from .models import build, decode_step, measured_state_bytes, synthetic_cache
from .procstat import RESULT_PREFIX
from .runner import child_env, official_config
from .spec import SIZES, Job, ModelSpec
from .worker import gemm_rate

PROMPT = 100


def read_bandwidth_gb_s(repeats: int = 5) -> float:
    """Bytes per second a sum over a 1 GiB float32 buffer reads (best of `repeats`), in GB/s."""
    buf = torch.ones(2**28)
    buf.sum()
    best = min(_seconds(lambda: buf.sum()) for _ in range(repeats))
    return buf.numel() * 4 / best / 1e9


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor, or of the plain tensors inside a tensor subclass (torchao's int8: values and scales)."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = flatten()
        return sum(_tensor_bytes(getattr(t, name)) for name in names)
    return t.numel() * t.element_size()


def linear_flops(model: torch.nn.Module, batch: int) -> int:
    """FLOPs of the linear layers' products in one decode step of `batch` rows: 2 · batch · in · out per layer (the
    rest of a step, the TTT inner step included, is a few percent of it)."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return sum(2 * batch * m.in_features * m.out_features for m in layers)


def peak_gemm_gflops(model: TTTForCausalLM, dtype: torch.dtype) -> float:
    """GFLOP/s of a large matrix product of the model's MLP shape, [2048, C] @ [C, F], in `dtype` (the best the CPU's
    matrix units do here: the compute floor of a step is its FLOPs over this rate)."""
    return gemm_rate(2048, model.config.hidden_size, model.config.intermediate_size, 1, dtype)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter once (`parameters()` deduplicates a tied embedding / LM head)."""
    return sum(_tensor_bytes(p) for p in model.parameters())


def logits_error(reference: TTTForCausalLM, model: TTTForCausalLM) -> float:
    """max |Δ logits| / max |logits| over a PROMPT-token prompt, against the float32 model."""
    ids = torch.randint(0, reference.config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = reference(ids).logits, model(ids).logits
    return float((got - ref).abs().max() / ref.abs().max())


def linears_ms(model: TTTForCausalLM, batch: int, steps: int) -> float:
    """Median ms of one pass through every linear layer of `model` (in their formats: float32, BF16Linear, torchao
    int8) on one random token per row: the matrix-vector products a decode step makes, without the rest."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(batch, m.in_features) for m in layers]
    times = []
    with torch.no_grad():
        for _ in range(steps + 2):
            start = time.perf_counter()
            for layer, x in zip(layers, inputs):
                layer(x)
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[2:])


def step_ms(model: TTTForCausalLM, batch: int, steps: int) -> float:
    """Median ms of a single-token cached call after a PROMPT-token prefill (2 warm-up steps)."""
    cache = TTTCache.from_model(model, batch)
    ids = torch.randint(0, model.config.vocab_size, (batch, PROMPT))
    token = ids[:, -1:]
    times = []
    with torch.no_grad():
        model(ids, cache=cache)
        for i in range(steps + 2):
            t = _seconds(lambda: model(token, cache=cache))
            if i >= 2:
                times.append(t)
    return 1e3 * statistics.median(times)


def baseline_decode(size: str, contexts: list[int], batches: list[int], args: argparse.Namespace) -> list[dict]:
    """Transformer++ at `size` (the matched baseline, SDPA): ms/token of a single-token step with a KV cache of each
    context length (`bench.models.synthetic_cache`: the shapes a prefill makes), against its own limit: weight bytes
    plus the KV cache's bytes (what a step reads) over the bandwidth measured in the same run."""
    model = build(ModelSpec("transformer++", size))
    rows = []
    for context, batch in itertools.product(contexts, batches):
        times = []
        for _ in range(args.rounds):
            cache = synthetic_cache(model, "transformer++", batch, context)
            token = torch.randint(0, model.config.vocab_size, (batch, 1))
            with torch.no_grad():
                for i in range(args.steps + 2):
                    # a fresh copy per step would time the copy: the cache grows by one token per step instead
                    t = _seconds(functools.partial(decode_step, model, "transformer++", token, cache))
                    if i >= 2:
                        times.append(t)
        kv_bytes = measured_state_bytes(cache)
        bandwidth = read_bandwidth_gb_s()
        limit_ms = (weight_bytes(model) + kv_bytes) / (bandwidth * 1e9) * 1e3
        ms = 1e3 * statistics.median(times)
        rows.append(dict(size=size, context=context, batch=batch, ms=ms, kv_bytes=kv_bytes, limit_ms=limit_ms))
        rows[-1].update(weight_bytes=weight_bytes(model), bandwidth_gb_s=bandwidth)
    return rows


def baseline_table(rows: list[dict]) -> str:
    lines = [
        "| model | context | batch | ms/tok | weight bytes | KV cache bytes | limit (bandwidth) | ms / limit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| transformer++-{r['size']} | {r['context']} | {r['batch']} | {r['ms']:.2f} | "
            f"{r['weight_bytes'] / 2**20:.1f} MiB | {r['kv_bytes'] / 2**20:.1f} MiB | "
            f"{r['limit_ms']:.2f} ms ({r['bandwidth_gb_s']:.0f} GB/s) | {r['ms'] / r['limit_ms']:.2f}x |"
        )
    return "\n".join(lines)


def official_decode_ms(args: argparse.Namespace, size: str, layer: str) -> float:
    """Median ms/token of the official ttt-lm-pytorch model (same config), batch 1, after a PROMPT-token prefill, in
    its own interpreter (`official_worker.py`)."""
    model = ModelSpec(f"official-{layer}", size)
    job = Job("prefill", model, PROMPT, 1, 0)
    payload = dict(
        job=job.to_dict(),
        threads=args.threads,
        seed=0,
        decode_steps=args.steps,
        long_from=1 << 30,
        official_path=args.official,
        config=official_config(model),
    )
    script = str(Path(__file__).with_name("official_worker.py"))
    out = subprocess.run(
        [args.official_python, script, json.dumps(payload)],
        capture_output=True,
        text=True,
        check=True,
        env=child_env(args.threads),
    )
    records = [
        json.loads(line[len(RESULT_PREFIX) :]) for line in out.stdout.splitlines() if line.startswith(RESULT_PREFIX)
    ]
    return 1e3 * next(r["seconds"] for r in records if r["phase"] == "decode")


def measure(size: str, layer: str, args: argparse.Namespace) -> dict[str, Any]:
    preset, overrides = SIZES[size]
    torch.manual_seed(0)
    config = get_preset(f"ttt-{layer}-{preset}", **overrides)
    folder = Path(args.dir) / f"{layer}-{size}"
    shutil.rmtree(folder, ignore_errors=True)
    reference = TTTForCausalLM(config).eval()
    reference.save_pretrained(folder)
    export = functools.partial(export_decode, reference, folder, args.batches, weights=args.weights, log=lambda _: None)
    row: dict[str, Any] = dict(size=size, layer=layer, export_s=_seconds(export), formats={})
    matmul = folder.with_name(folder.name + "-matmul")
    if args.compare_linears:
        shutil.rmtree(matmul, ignore_errors=True)
        reference.save_pretrained(matmul)
        export_decode(reference, matmul, args.batches, weights=args.weights, linears="matmul", log=lambda _: None)
    for fmt in args.weights:
        eager = quantize_weights(TTTForCausalLM.from_pretrained(folder).eval(), fmt)
        eager.use_decode_artifacts({}, None)
        fast = quantize_weights(TTTForCausalLM.from_pretrained(folder).eval(), fmt)
        paths = {"eager": eager, "aot": fast}
        if args.compare_linears:
            paths["aot_matmul"] = quantize_weights(TTTForCausalLM.from_pretrained(matmul).eval(), fmt)
        if fmt == "float32":
            compiled = TTTForCausalLM.from_pretrained(folder, ttt_implementation="compiled").eval()
            compiled.use_decode_artifacts({}, None)
            paths["compiled"] = compiled
        result: dict[str, Any] = dict(weight_bytes=weight_bytes(eager), logits_error=logits_error(reference, eager))
        for batch in args.batches:
            if "compiled" in paths:
                result[f"compile_s_b{batch}"] = _seconds(functools.partial(step_ms, paths["compiled"], batch, 1))
            rounds: dict[str, list[float]] = {name: [] for name in paths}
            official = args.official is not None and fmt == "float32" and batch == 1
            if official:
                rounds["official"] = []
            rounds["linears"] = []
            for _ in range(args.rounds):
                for name, model in paths.items():
                    rounds[name].append(step_ms(model, batch, args.steps))
                rounds["linears"].append(linears_ms(eager, batch, args.steps))
                if official:
                    rounds["official"].append(official_decode_ms(args, size, layer))
            bandwidth = read_bandwidth_gb_s()
            gemm = peak_gemm_gflops(eager, torch.bfloat16 if fmt == "bfloat16" else torch.float32)
            result[f"b{batch}"] = dict(
                {name: statistics.median(values) for name, values in rounds.items()},
                bandwidth_gb_s=bandwidth,
                limit_ms=result["weight_bytes"] / (bandwidth * 1e9) * 1e3,
                gemm_gflops=gemm,
                compute_ms=linear_flops(eager, batch) / (gemm * 1e9) * 1e3,
            )
        row["formats"][fmt] = result
    row["cold_aot"] = measure_once(folder, args.threads, prompt=PROMPT)
    bare = without_packages(folder, folder.with_name(folder.name + "-eager"))
    row["cold_eager"] = measure_once(bare, args.threads, prompt=PROMPT)
    row["cold_compiled"] = measure_once(bare, args.threads, "compiled", prompt=PROMPT)
    return row


def table(rows: list[dict[str, Any]], batches: list[int]) -> str:
    lines = [
        "| model | weights | batch | official ms/tok | eager | compiled | aot | aot, matmul linears | aot vs official "
        "| aot vs eager | weight bytes | limit (bandwidth) | aot / limit | compute floor (GEMM rate) "
        "| linears alone (eager) | linears / limit | logits error vs float32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for fmt, result in r["formats"].items():
            for b in batches:
                m = result[f"b{b}"]
                compiled = f"{m['compiled']:.2f}" if "compiled" in m else "-"
                official = f"{m['official']:.2f}" if "official" in m else "-"
                matmul = f"{m['aot_matmul']:.2f}" if "aot_matmul" in m else "-"
                versus = f"{m['official'] / m['aot']:.1f}x" if "official" in m else "-"
                lines.append(
                    f"| ttt-{r['layer']}-{r['size']} | {fmt} | {b} | {official} | {m['eager']:.2f} | {compiled} | "
                    f"{m['aot']:.2f} | {matmul} | {versus} | {m['eager'] / m['aot']:.1f}x | "
                    f"{result['weight_bytes'] / 2**20:.1f} MiB | "
                    f"{m['limit_ms']:.2f} ms ({m['bandwidth_gb_s']:.0f} GB/s) | {m['aot'] / m['limit_ms']:.2f}x | "
                    f"{m['compute_ms']:.2f} ms ({m['gemm_gflops']:.0f} GFLOP/s) | "
                    f"{m['linears']:.2f} | {m['linears'] / m['limit_ms']:.2f}x | {result['logits_error']:.1e} |"
                )
    lines += [
        "",
        "| model | export (s) | path | python (s) | import (s) | load (s) | ready (s) | first token (s) "
        "| then ms/token |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for path in ("eager", "compiled", "aot"):
            c = r[f"cold_{path}"]
            lines.append(
                f"| ttt-{r['layer']}-{r['size']} | {r['export_s']:.0f} | {path} ({c['packages']} packages) | "
                f"{c['python_s']:.2f} | {c['import_s']:.2f} | {c['load_s']:.2f} | {c['ready_s']:.2f} | "
                f"{c['to_first_token_s']:.2f} | {c['decode_ms_token']:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ttt.bench.fast_decode", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["small"], choices=list(SIZES))
    p.add_argument("--layers", nargs="*", default=["linear"], choices=["linear", "mlp"], help="none: the baseline only")
    p.add_argument("--batches", nargs="+", type=int, default=[1])
    p.add_argument("--weights", nargs="+", default=["float32"], choices=list(WEIGHT_FORMATS))
    p.add_argument("--steps", type=int, default=40, help="measured single-token steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dir", default="/tmp/ttt_fast_decode", help="where the model folders are written")
    p.add_argument("--official", help="a local checkout of test-time-training/ttt-lm-pytorch: its decode, batch 1")
    p.add_argument("--official-python", help="the interpreter for it (transformers < 4.50)")
    p.add_argument("--out", default="results/fast_decode")
    p.add_argument(
        "--baseline-contexts",
        nargs="*",
        type=int,
        default=[],
        help="also decode the Transformer++ baseline of each size with a KV cache of these lengths (e.g. 1024 8192)",
    )
    p.add_argument("--baseline-batches", nargs="+", type=int, default=[1], help="batch sizes of the baseline's decode")
    p.add_argument(
        "--compare-linears",
        action="store_true",
        help="also time packages whose linear layers use torch's matrix product (aot_matmul) beside the default",
    )
    args = p.parse_args(argv)
    if any(b < 1 for b in args.batches) or args.steps < 1 or args.rounds < 1 or args.threads < 1:
        p.error("--batches, --steps, --rounds and --threads must be >= 1")
    if (args.official is None) != (args.official_python is None):
        p.error("--official and --official-python go together")
    if args.official is not None and not (Path(args.official) / "ttt.py").is_file():
        p.error(f"--official: no ttt.py in {args.official!r} (a ttt-lm-pytorch checkout)")
    torch.set_num_threads(args.threads)
    rows = [measure(size, layer, args) for size in args.sizes for layer in args.layers]
    text = table(rows, args.batches) if rows else ""
    contexts, batches = args.baseline_contexts, args.baseline_batches
    baseline = [r for size in args.sizes for r in baseline_decode(size, contexts, batches, args)]
    if baseline:
        text = (text + "\n\n" if text else "") + baseline_table(baseline)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = dict(
        cpu=platform.processor() or platform.machine(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        torch=torch.__version__,
        threads=args.threads,
    )
    command = "python -m ttt.bench.fast_decode " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "results.md").write_text(f"`{command}`\n\n{machine}\n\n{text}\n")
    payload = dict(machine=machine, command=command, rows=rows, baseline=baseline)
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
