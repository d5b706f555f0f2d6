"""Run the planned jobs, each in its own child process under a memory and a time limit, and collect raw rows.

Limits: the child caps its own data segment (RLIMIT_DATA, `procstat.limit_memory`: an allocation past it raises and
is reported as OOM), and the runner polls the child's resident set (/proc/PID/status VmRSS, every 50 ms) as a
backstop and kills it past the limit; a child still running after the time limit is killed. Either way the job
becomes a row with status `oom` / `timeout` (`OOM>14GiB`, `timeout>300s` in the tables), never a crash of the run.
Once a model fails at a length, its longer lengths of the same kind are not run (status `skipped`, with the reason).
Rows are appended to raw.jsonl as they come, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import procstat
from .spec import BenchSpec, Job, Limits, ModelSpec

POLL_S = 0.05
OFFICIAL_FIELDS = (
    "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads rms_norm_eps tie_word_embeddings "
    "rope_theta use_gate share_qk ttt_layer_type ttt_base_lr mini_batch_size pre_conv conv_kernel bos_token_id "
    "eos_token_id"
).split()


@dataclass
class Outcome:
    """What one child process gave: its result records, and how it ended."""

    status: str  # ok | oom | timeout | error
    records: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    max_rss: int = 0  # bytes, the largest resident set the runner saw while polling
    error: str = ""


def run_child(command: list[str], limits: Limits, log_path: Path | None = None, env: dict | None = None) -> Outcome:
    """Run `command`, enforce `limits`, and parse its `@@bench` result lines."""
    log = open(log_path, "w") if log_path is not None else None
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if log is None else log, text=True, env=env
    )
    stdout = proc.stdout
    assert stdout is not None  # stdout=PIPE
    records: list[dict[str, Any]] = []

    def read() -> None:
        for line in stdout:
            if line.startswith(procstat.RESULT_PREFIX):
                records.append(json.loads(line[len(procstat.RESULT_PREFIX) :]))
            elif log is not None:
                log.write(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    limit_bytes, killed, max_rss = limits.mem_gib * 2**30, "", 0
    try:
        while proc.poll() is None:
            rss = (procstat.status_kib("VmRSS", proc.pid) or 0) * 1024
            max_rss = max(max_rss, rss)
            if rss > limit_bytes:
                killed = "oom"
            elif time.perf_counter() - start > limits.time_s:
                killed = "timeout"
            if killed:
                break
            time.sleep(POLL_S)
    finally:
        # also when the run itself is interrupted: never leave a worker behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    wall = time.perf_counter() - start
    if log is not None:
        log.close()
    failed = [r for r in records if r.get("phase") == "failed"]
    if killed:
        status, error = killed, f"killed by the runner ({killed})"
    elif failed:
        status, error = failed[-1]["status"], failed[-1].get("error", "")
    elif proc.returncode != 0:
        # SIGKILL from outside (the kernel's OOM killer) or a crash before the worker could report
        status, error = ("oom" if proc.returncode == -9 else "error"), f"exit code {proc.returncode}"
    else:
        status, error = "ok", ""
    results = [r for r in records if r.get("phase") != "failed"]
    return Outcome(status, results, wall, max_rss, error)


def official_config(model: ModelSpec) -> dict[str, Any]:
    from .models import ttt_config

    cfg = ttt_config(ModelSpec(model.kind.replace("official-", "ttt-"), model.size)).to_dict()
    return {k: cfg[k] for k in OFFICIAL_FIELDS if k in cfg}


def job_command(job: Job, spec: BenchSpec, size: str) -> list[str]:
    payload: dict[str, Any] = dict(
        job=job.to_dict(),
        threads=spec.threads,
        dtype=spec.dtype,
        seed=spec.seed,
        decode_steps=spec.decode_steps,
        mem_gib=spec.limits.mem_gib,
        long_from=spec.long_from,
        size=size,
        # the compiled inner loop's rate too when the run benchmarks the compiled implementation
        compiled_kernels=any(m.impl == "compiled" for m in spec.models),
    )
    if job.model is not None and job.model.family == "official":
        if spec.official_python is None:
            raise ValueError("an official model's jobs need official_python (ttt bench --official-python)")
        payload.update(official_path=spec.official_path, config=official_config(job.model))
        script = str(Path(__file__).with_name("official_worker.py"))
        return [spec.official_python, script, json.dumps(payload)]
    return [sys.executable, "-m", "ttt.bench.worker", json.dumps(payload)]


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TORCHINDUCTOR_COMPILE_THREADS="1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def rows_from(job: Job, outcome: Outcome) -> list[dict[str, Any]]:
    """Raw rows of one job: one per measured phase; a phase the job did not reach gets the job's failure status."""
    m = job.model
    base = dict(
        model=m.label if m else "",
        family=m.family if m else "",
        layer=(m.layer or "") if m else "",
        backbone=m.backbone if m else "",
        impl=(m.impl or "") if m else "",
        seq_len=job.seq_len,
        batch=job.batch,
        repeat=job.repeat,
        wall_s=round(outcome.wall_s, 3),
    )
    expected = {"prefill": ["prefill", "decode"], "decode": ["decode"], "train": ["train"], "kernels": ["kernels"]}
    by_phase = {r["phase"]: r for r in outcome.records}
    rows = []
    for phase in expected[job.kind]:
        if phase == "decode" and job.kind == "prefill" and "decode" not in by_phase and outcome.status == "ok":
            continue  # decode_steps = 0
        kind = "decode1" if (job.kind == "prefill" and phase == "decode") else phase
        rec = by_phase.get(phase)
        row = dict(kind=kind, **base, status="ok" if rec else outcome.status, error="" if rec else outcome.error)
        row["batch"] = 1 if kind == "decode1" else job.batch
        if rec:
            row.update({k: v for k, v in rec.items() if k != "phase"})
        else:
            row["peak_rss"] = outcome.max_rss
        rows.append(row)
    return rows


def run_jobs(
    jobs: list[Job],
    spec: BenchSpec,
    size: str,
    out_dir: Path,
    progress: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run `jobs` in order; returns (and appends to out_dir/raw.jsonl) the raw rows."""
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    raw = open(out_dir / "raw.jsonl", "w")
    env = child_env(spec.threads)
    failed: dict[tuple[str, str, int], tuple[str, int]] = {}  # (kind, model, batch) -> (status, length)
    rows: list[dict[str, Any]] = []
    try:
        for i, job in enumerate(jobs):
            rows += run_one(i, job, len(jobs), spec, size, logs, env, failed, raw, progress)
    except (KeyboardInterrupt, SystemExit):
        progress(f"interrupted: {len(rows)} rows measured; writing the report of what was measured")
    raw.close()
    return rows


def run_one(
    i: int,
    job: Job,
    n_jobs: int,
    spec: BenchSpec,
    size: str,
    logs: Path,
    env: dict[str, str],
    failed: dict[tuple[str, str, int], tuple[str, int]],
    raw: TextIO,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Run job i (or skip it: its model failed at a shorter T of the same kind); write and return its rows."""
    label = job.model.label if job.model else "kernels"
    key = (job.kind, label, job.batch)
    if key in failed and job.seq_len >= failed[key][1]:
        status, at = failed[key]
        new = rows_from(job, Outcome(status, error=f"skipped: {status} at T={at}"))
        for row in new:
            row["skipped"] = True
    else:
        log = logs / f"{i:04d}-{job.kind}-{label}-T{job.seq_len}-B{job.batch}-r{job.repeat}.log"
        outcome = run_child(job_command(job, spec, size), spec.limits, log, env)
        new = rows_from(job, outcome)
        if outcome.status != "ok" and job.model is not None:
            failed[key] = (outcome.status, job.seq_len)
    for row in new:
        raw.write(json.dumps(row) + "\n")
    raw.flush()
    done = [f"{r['kind']} {r['seconds']:.3g}s" if "seconds" in r else f"{r['kind']} {r['status']}" for r in new]
    progress(f"[{i + 1}/{n_jobs}] r{job.repeat} {job.kind} {label} T={job.seq_len} B={job.batch}: {', '.join(done)}")
    return new
