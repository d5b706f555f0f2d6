"""`ttt bench` (also `python -m ttt.bench`): the arguments, the three presets, and the run from plan to report.

Presets (every flag overrides them):
    full (default)  T = 1k … 32k prefill (+ batch-1 decode after it), batch-16 decode at 1k … 8k, training at 2k;
                    2 repeats below 8k, 1 from 8k, 300 s per job; designed for about 45 min at 125m on 2 cores
    --quick         T = 1k, 2k; batch-16 decode at 1k; training at 512; 1 repeat, 120 s limit (a few minutes)
    --smoke         the tiny size at T = 32: seconds, for CI (tests/bench)

Sub-benchmarks with their own arguments: `ttt bench serve ...` (ttt.bench.serve_load: `ttt serve` under load) and
`ttt bench coldstart ...` (ttt.bench.coldstart: import, load, first-token and first decode times, fresh processes).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .spec import DTYPES, SIZES, BenchSpec, Limits, SpecError, parse_lengths, parse_models, plan

PRESETS: dict[str, dict[str, Any]] = {
    "full": dict(
        size="125m",
        models="ttt-linear,ttt-mlp,ttt-linear-T,transformer++,mamba",
        impl="auto",
        lengths="1k,2k,4k,8k,16k,32k",
        decode_lengths="1k,2k,4k,8k",
        train_lengths="2k",
        repeats=2,
        long_repeats=1,
        long_from=8192,
        decode_steps=8,
        time_limit=300.0,
    ),
    "quick": dict(
        size="125m",
        models="ttt-linear,ttt-mlp,transformer++,mamba",
        impl="auto",
        lengths="1k,2k",
        decode_lengths="1k",
        train_lengths="512",
        repeats=1,
        long_repeats=1,
        long_from=8192,
        decode_steps=4,
        time_limit=120.0,
    ),
    "smoke": dict(
        size="tiny",
        models="ttt-linear,transformer++",
        impl="auto",
        lengths="32",
        decode_lengths="32",
        train_lengths="32",
        repeats=1,
        long_repeats=1,
        long_from=4096,
        decode_steps=2,
        time_limit=120.0,
        decode_batch=2,
        kernel_batch=2,
        kernel_len=32,
    ),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few minutes: T = 1k, 2k, one repeat")
    mode.add_argument("--smoke", action="store_true", help="seconds: the tiny size at T = 32 (CI)")
    p.add_argument("--size", help=f"model size: {', '.join(SIZES)} (small: d=256, 4 heads, 2 layers)")
    p.add_argument(
        "--models", help="comma-separated: ttt-linear, ttt-mlp, ttt-linear-T, ttt-mlp-T, transformer++, mamba"
    )
    p.add_argument(
        "--impl",
        help="TTT implementations, comma-separated (auto, dual, primal, naive, ...; aot: auto decoding through "
        "`ttt export` packages)",
    )
    p.add_argument("--lengths", help="prefill lengths (batch 1; decode at batch 1 follows each), e.g. 1k,2k,4k")
    p.add_argument("--decode-lengths", help="lengths of the batch-B decode from a synthetic state ('' for none)")
    p.add_argument("--decode-batch", type=int, default=None, help="batch of the synthetic-state decode (16)")
    p.add_argument("--decode-steps", type=int, default=None, help="timed decode steps per job")
    p.add_argument("--train-lengths", help="training lengths ('' for none)")
    p.add_argument("--train-batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--long-repeats", type=int, default=None, help="repeats from --long-from on")
    p.add_argument("--long-from", type=int, default=None, help="length from which --long-repeats applies")
    p.add_argument("--impl-max-len", default="naive=256,primal=2048", help="per-implementation length caps")
    p.add_argument("--no-kernels", action="store_true", help="skip the GEMM and inner-loop micro-benchmarks")
    p.add_argument("--threads", type=int, default=2, help="torch threads in every worker")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="bfloat16: autocast around the forward")
    p.add_argument("--mem-limit", type=float, default=14.0, help="GiB per job")
    p.add_argument("--time-limit", type=float, default=None, help="seconds per job")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--official", help="a local checkout of test-time-training/ttt-lm-pytorch (its ttt.py)")
    p.add_argument("--official-python", help="the interpreter for it (transformers < 4.50)")
    p.add_argument("--out", default="results/bench", help="output folder")
    p.add_argument("--from-raw", action="store_true", help="run nothing: rebuild the report from OUT/raw.jsonl")
    # `ttt bench serve ARGS...` / `ttt bench coldstart ARGS...`: sub-benchmarks with their own arguments
    p.add_argument(
        "serve_args",
        nargs=argparse.REMAINDER,
        metavar="serve|coldstart ...",
        help="`ttt bench serve --help`: the load benchmark of ttt serve (python -m ttt.bench.serve_load); "
        "`ttt bench coldstart --help`: import, load and first-token times of a saved model in fresh processes",
    )


def parse_impl_caps(text: str) -> dict[str, int]:
    caps = {}
    for item in (s.strip() for s in text.split(",") if s.strip()):
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise SpecError(f"--impl-max-len: {item!r} is not NAME=LENGTH")
        caps[name] = int(value)
    return caps


def spec_from_args(args: argparse.Namespace) -> tuple[BenchSpec, str]:
    preset = PRESETS["smoke" if args.smoke else "quick" if args.quick else "full"]

    def pick(name: str) -> Any:
        value = getattr(args, name, None)
        return preset.get(name) if value is None else value

    size = pick("size")
    models = parse_models(pick("models"), pick("impl"), size)
    if args.official:
        if not args.official_python:
            raise SpecError("--official needs --official-python (an interpreter with transformers < 4.50)")
        if not Path(args.official, "ttt.py").is_file():
            raise SpecError(f"--official: no ttt.py in {args.official!r} (a ttt-lm-pytorch checkout)")
        kinds = dict.fromkeys(m.kind.replace("ttt-", "official-") for m in models if m.family == "ttt")
        models += parse_models(",".join(kinds), "auto", size) if kinds else []
    for name in ("repeats", "long_repeats", "decode_steps"):
        if pick(name) is None or pick(name) < (0 if name == "decode_steps" else 1):
            raise SpecError(f"--{name.replace('_', '-')} must be >= {0 if name == 'decode_steps' else 1}")
    for flag, value in (("--threads", args.threads), ("--train-batch", args.train_batch)):
        if value < 1:
            raise SpecError(f"{flag} must be >= 1, got {value}")
    if (pick("decode_batch") or 16) < 1:
        raise SpecError(f"--decode-batch must be >= 1, got {pick('decode_batch')}")
    if args.mem_limit <= 0 or pick("time_limit") <= 0:
        raise SpecError(f"--mem-limit and --time-limit must be > 0, got {args.mem_limit}, {pick('time_limit')}")
    spec = BenchSpec(
        models=models,
        prefill_lengths=parse_lengths(pick("lengths"), "--lengths"),
        decode_lengths=parse_lengths(pick("decode_lengths"), "--decode-lengths"),
        decode_batch=pick("decode_batch") or 16,
        decode_steps=pick("decode_steps"),
        train_lengths=parse_lengths(pick("train_lengths"), "--train-lengths"),
        train_batch=args.train_batch,
        repeats=pick("repeats"),
        long_repeats=pick("long_repeats"),
        long_from=pick("long_from"),
        impl_max_len=parse_impl_caps(args.impl_max_len),
        kernels=not args.no_kernels,
        kernel_batch=preset.get("kernel_batch", 8),
        kernel_len=preset.get("kernel_len", 256),
        threads=args.threads,
        dtype=args.dtype,
        seed=args.seed,
        limits=Limits(mem_gib=args.mem_limit, time_s=pick("time_limit")),
        official_path=args.official,
        official_python=args.official_python,
    )
    return spec, size


def machine_description(threads: int) -> str:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {threads} torch thread(s) per job, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, Python {platform.python_version()}"
    )


def run_bench(
    spec: BenchSpec, size: str, out: str | Path, command: str = "", progress=print, from_raw: bool = False
) -> dict[str, Any]:
    """Run every job of `spec` and write raw.jsonl, summary.csv, report.md, meta.json and the plots under `out`.
    An interrupted run (Ctrl-C, SIGTERM) still writes the report of what it measured. `from_raw`: run nothing,
    rebuild the report from out/raw.jsonl (e.g. of an interrupted run) with the same arguments."""
    from .runner import run_jobs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan(spec)
    meta: dict[str, Any] = dict(
        command=command,
        machine=machine_description(spec.threads),
        size=size,
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        load_start=" ".join(f"{x:.2f}" for x in os.getloadavg()),
        jobs=len(jobs),
    )
    start = time.perf_counter()
    if from_raw:
        rows = [json.loads(line) for line in open(out / "raw.jsonl")]
        meta.update(date="?", load_start="?", load_end="?")
        if (out / "meta.json").is_file():  # the run's own command, date and load (written when it started)
            old = json.loads((out / "meta.json").read_text())
            meta.update({k: old[k] for k in ("command", "date", "load_start", "load_end") if k in old})
        # a prefill job's decode1 row carries the same wall time: count each job once
        jobs_wall = {
            (r["repeat"], r["kind"].replace("decode1", "prefill"), r["model"], r["seq_len"]): r["wall_s"] for r in rows
        }
        meta["wall_s"] = sum(jobs_wall.values())
    else:
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        progress(f"ttt bench: {len(jobs)} jobs, {len(spec.models)} models; {meta['machine']}")
        rows = run_jobs(jobs, spec, size, out, progress)
        meta.update(wall_s=time.perf_counter() - start, load_end=" ".join(f"{x:.2f}" for x in os.getloadavg()))
    return write_report(rows, spec, meta, out, progress)


def write_report(rows: list[dict], spec: BenchSpec, meta: dict[str, Any], out: Path, progress=print) -> dict:
    from .markdown import render
    from .report import kernel_rates, plot, summarise, write_csv

    summary = summarise(rows, spec)
    rates = kernel_rates(rows)
    shapes: dict[str, Any] = next((r["shapes"] for r in rows if r["kind"] == "kernels" and r["status"] == "ok"), {})
    write_csv(summary, out / "summary.csv")
    report = render(summary, rates, shapes, meta, spec)
    (out / "report.md").write_text(report)
    figures = plot(summary, out)
    (out / "meta.json").write_text(json.dumps(dict(meta, spec=spec.to_dict(), rates=rates), indent=2, default=str))
    progress(report)
    progress(f"wrote {out}/report.md, summary.csv, raw.jsonl, " + ", ".join(f.name for f in figures))
    return dict(summary=summary, rates=rates, meta=meta, rows=rows)


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    rest = getattr(args, "serve_args", None) or []
    if rest:
        if rest[0] == "serve":
            from .serve_load import main as serve_load

            return serve_load(rest[1:])
        if rest[0] == "coldstart":
            from .coldstart import main as coldstart

            return coldstart(rest[1:])
        raise SpecError(
            f"unrecognized arguments: {' '.join(rest)} (the sub-benchmarks are `ttt bench serve` and "
            "`ttt bench coldstart`)"
        )
    spec, size = spec_from_args(args)
    # SIGTERM (kill, nohup'd runs) unwinds like Ctrl-C, so the running worker is killed too
    signal.signal(signal.SIGTERM, _stop)
    argv = sys.argv[1:] if argv is None else argv
    command = "ttt " + shlex.join(argv) if argv and argv[0] == "bench" else "ttt bench " + shlex.join(argv)
    run_bench(spec, size, args.out, command, from_raw=args.from_raw)
    return 0
