"""Turn raw rows into the summary (medians over repeats), and write it as CSV, a markdown report and log-log plots.

Summary columns (summary.csv; one row per kind, model, T, batch):
    kind          prefill | decode1 (batch 1, after a real prefill of T tokens) | decode (synthetic state) | train
    status        ok | oom | timeout | error (skipped: the model failed at a shorter T and this one was not run)
    n             repeats that succeeded; seconds: their median
    tok_s         tokens per second (decode: batch / step time)
    ms_token      decode: ms per step (every sequence of the batch gets one token)
    gflop         FLOPs of the measured call by formula (ttt.bench.flops), in GFLOP
    gflop_s, mfu  achieved GFLOP/s, and that ÷ the median GEMM rate of the run (fp32 or bf16 as the run's dtype)
    state_bytes   bytes of the inference state after T tokens (measured from the cache tensors); state_formula
                  the formula (TTT: ttt.models.state_bytes; Transformer: 2 · layers · T · C · 4 bytes)
    peak_rss_mib  the phase's peak resident memory (weights included)
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

from .spec import BenchSpec, ModelSpec

CSV_COLUMNS = (
    "kind model family layer backbone impl seq_len batch status n seconds tok_s ms_token gflop gflop_s mfu "
    "state_bytes state_formula peak_rss_mib cell"
).split()
KINDS_SHOWN = {"prefill": "Prefill", "decode1": "Decode (batch 1)", "decode": "Decode (batch B)", "train": "Train"}


class FlopModel:
    """FLOPs by formula for each ModelSpec, from a model built on the meta device (no memory, no init)."""

    def __init__(self) -> None:
        self.models: dict[str, Any] = {}

    def model(self, spec: ModelSpec):
        import torch

        from . import models

        key = f"{spec.kind}-{spec.size}"
        if key not in self.models:
            ours = ModelSpec(spec.kind.replace("official-", "ttt-"), spec.size) if spec.family == "official" else spec
            with torch.device("meta"):
                self.models[key] = models.build(ModelSpec(ours.kind, ours.size))
        return self.models[key]

    def flops(self, spec: ModelSpec, kind: str, seq_len: int, batch: int) -> float:
        from .flops import forward_flops, train_flops

        model = self.model(spec)
        family = "ttt" if spec.family == "official" else spec.family
        if kind == "train":
            return train_flops(model, family, seq_len, batch)
        return forward_flops(model, family, seq_len, batch, logits_tokens=1)

    def state_formula(self, spec: ModelSpec, seq_len: int, batch: int) -> int | None:
        from ..models import kv_cache_bytes, state_bytes

        cfg = self.model(spec).config
        if spec.family in ("ttt", "official"):
            return state_bytes(cfg, batch)
        if spec.family == "transformer++":
            return kv_cache_bytes(cfg.num_hidden_layers, cfg.hidden_size, seq_len, batch)
        return None


def failure_cell(status: str, spec: BenchSpec, skipped: bool) -> str:
    cell = {"oom": f"OOM>{spec.limits.mem_gib:g}GiB", "timeout": f"timeout>{spec.limits.time_s:g}s"}.get(status, status)
    return cell + ("*" if skipped else "")


def kernel_rates(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Median of each kernel rate (GFLOP/s) over the run's repeats."""
    rates: dict[str, list[float]] = {}
    for row in rows:
        if row["kind"] == "kernels" and row["status"] == "ok":
            for name, value in row["gflops"].items():
                rates.setdefault(name, []).append(value)
    return {name: statistics.median(values) for name, values in rates.items()}


def summarise(rows: list[dict[str, Any]], spec: BenchSpec, flop_model: FlopModel | None = None) -> list[dict]:
    flop_model = flop_model or FlopModel()
    rates = kernel_rates(rows)
    gemm = rates.get("gemm_bf16" if spec.dtype == "bfloat16" else "gemm_fp32")
    specs = {m.label: m for m in spec.models}
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if row["kind"] != "kernels":
            groups.setdefault((row["kind"], row["model"], row["seq_len"], row["batch"]), []).append(row)
    out = []
    for (kind, label, seq_len, batch), group in groups.items():
        m = specs[label]
        ok = [r for r in group if r["status"] == "ok"]
        s: dict[str, Any] = dict(kind=kind, model=label, family=m.family, layer=m.layer or "", backbone=m.backbone)
        s.update(impl=m.impl or "", seq_len=seq_len, batch=batch, n=len(ok))
        s["state_formula"] = flop_model.state_formula(m, seq_len, batch) if kind != "train" else None
        if not ok:
            real = [r for r in group if not r.get("skipped")] or group
            s["status"] = real[0]["status"]
            s["cell"] = failure_cell(real[0]["status"], spec, skipped=all(r.get("skipped") for r in group))
            s["peak_rss_mib"] = max(r.get("peak_rss", 0) for r in group) / 2**20 or None
            out.append(s)
            continue
        seconds = statistics.median(r["seconds"] for r in ok)
        s.update(status="ok", seconds=seconds, peak_rss_mib=statistics.median(r["peak_rss"] for r in ok) / 2**20)
        states = [r["state_bytes"] for r in ok if "state_bytes" in r]
        s["state_bytes"] = states[0] if states else None
        if kind in ("prefill", "train"):
            s["tok_s"] = batch * seq_len / seconds
            s["gflop"] = flop_model.flops(m, kind, seq_len, batch) / 1e9
            s["gflop_s"] = s["gflop"] / seconds
            s["mfu"] = s["gflop_s"] / gemm if gemm else None
            s["cell"] = f"{s['tok_s']:.4g}"
        else:
            s["tok_s"] = batch / seconds
            s["ms_token"] = seconds * 1e3
            s["cell"] = f"{s['ms_token']:.4g}"
        out.append(s)
    order = {label: i for i, label in enumerate(specs)}
    out.sort(key=lambda s: (list(KINDS_SHOWN).index(s["kind"]), s["batch"], order[s["model"]], s["seq_len"]))
    return out


def write_csv(summary: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for s in summary:
            writer.writerow({k: _fmt_csv(s.get(k)) for k in CSV_COLUMNS})


def _fmt_csv(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else ("" if value is None else value)


def length_label(t: int) -> str:
    return f"{t // 1024}k" if t % 1024 == 0 else str(t)


def pivot(summary: list[dict], kind: str, batch: int | None, value: str, fmt: str = "{:.4g}") -> list[str]:
    """A markdown table: models × T, cells `value` (or the failure cell)."""
    rows = [s for s in summary if s["kind"] == kind and (batch is None or s["batch"] == batch)]
    if not rows:
        return []
    lengths = sorted({s["seq_len"] for s in rows})
    models = list(dict.fromkeys(s["model"] for s in rows))
    lines = ["| model | " + " | ".join(f"T={length_label(t)}" for t in lengths) + " |"]
    lines.append("|---" * (len(lengths) + 1) + "|")
    for model in models:
        cells = []
        for t in lengths:
            s = next((s for s in rows if s["model"] == model and s["seq_len"] == t), None)
            if s is None:
                cells.append("")
            elif s["status"] != "ok":
                cells.append(s["cell"])
            else:
                v = s.get(value)
                cells.append("" if v is None else fmt.format(v))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def plot(summary: list[dict], out_dir: Path) -> list[Path]:
    """Log-log plots of prefill tok/s, decode ms/token, peak memory and state bytes against T."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("prefill", "tok_s", "prefill tokens/s (batch 1)", "prefill_tok_s.png"),
        ("decode1", "ms_token", "decode ms/token after T tokens (batch 1)", "decode_ms_token.png"),
        ("prefill", "peak_rss_mib", "peak resident memory in prefill (MiB)", "prefill_peak_rss.png"),
        ("prefill", "state_bytes", "inference state bytes after T tokens (batch 1)", "state_bytes.png"),
    ]
    written = []
    for kind, key, title, name in panels:
        rows = [s for s in summary if s["kind"] == kind and s["status"] == "ok" and s.get(key)]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        colors = plt.get_cmap("tab20")(range(20))  # the 20 colours of the qualitative map
        for i, model in enumerate(dict.fromkeys(s["model"] for s in rows)):
            pts = sorted((s["seq_len"], s[key]) for s in rows if s["model"] == model)
            first = next(s for s in rows if s["model"] == model)
            # baselines dashed; slow TTT forms with their own marker
            linestyle = "-" if first["family"] == "ttt" else "--"
            marker = {"primal": "s", "naive": "^"}.get(first["impl"], "o")
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                label=model,
                color=colors[i % len(colors)],
                linestyle=linestyle,
                marker=marker,
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length T (tokens)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)
    return written
