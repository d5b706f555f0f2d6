"""The markdown report of a run: machine and command, kernel rates, one table per measurement, the ratios between
models measured side by side in the run, and the issue's targets checked against the measured numbers."""

from __future__ import annotations

from .report import length_label, pivot
from .spec import BenchSpec

FAST_IMPLS = ("auto", "dual")


def _find(summary: list[dict], kind: str, model: str, seq_len: int) -> dict | None:
    return next((s for s in summary if s["kind"] == kind and s["model"] == model and s["seq_len"] == seq_len), None)


def _get(summary: list[dict], kind: str, model: str, seq_len: int) -> dict | None:
    """The summary row if it succeeded, else None."""
    s = _find(summary, kind, model, seq_len)
    return s if s is not None and s["status"] == "ok" else None


def ratio_rows(summary: list[dict], spec: BenchSpec) -> list[str]:
    """(ours ÷ peer) throughput ratios per T, prefill and decode; > 1 means ours is faster."""
    ours = [m for m in spec.models if m.family == "ttt" and m.impl in FAST_IMPLS]
    peers = [m for m in spec.models if m.family in ("transformer++", "mamba", "official")]
    pairs = [
        (a, b) for a in ours for b in peers if b.family != "official" or b.kind == a.kind.replace("ttt", "official")
    ]
    for a in ours:
        pairs += [(a, b) for b in spec.models if b.kind == a.kind and b.impl not in FAST_IMPLS and b.impl != "naive"]
    lines = []
    for kind, key, better in (("prefill", "tok_s", "higher"), ("decode1", "ms_token", "lower"), ("train", "tok_s", "")):
        lengths = sorted({s["seq_len"] for s in summary if s["kind"] == kind})
        if not lengths or not pairs:
            continue
        lines += ["", f"{kind} speed ratio (ours ÷ peer; > 1: ours faster)", ""]
        lines.append("| ours | peer | " + " | ".join(f"T={length_label(t)}" for t in lengths) + " |")
        lines.append("|---|---" + "|---" * len(lengths) + "|")
        for a, b in pairs:
            cells = []
            for t in lengths:
                x, y = _get(summary, kind, a.label, t), _get(summary, kind, b.label, t)
                if x is None or y is None:
                    cells.append("")
                else:
                    r = x[key] / y[key] if better != "lower" else y[key] / x[key]
                    cells.append(f"{r:.2f}")
            if any(cells):
                lines.append(f"| {a.label} | {b.label} | " + " | ".join(cells) + " |")
    return lines


def _verdict(got: float, goal: float) -> str:
    return "met" if got >= goal else f"missed by {goal / got:.1f}x" if got > 0 else "missed"


def targets(summary: list[dict], rates: dict[str, float], spec: BenchSpec) -> list[str]:
    """The issue's targets, each with the measured figure and by how much it is met or missed."""
    out = []
    lin = next((m for m in spec.models if m.family == "ttt" and m.layer == "linear" and m.impl in FAST_IMPLS), None)
    if lin is None:
        return ["(no TTT-Linear model with the auto/dual implementation in this run)"]
    for kind, goal in (("prefill", 0.60), ("train", 0.50)):
        got = [s for s in summary if s["kind"] == kind and s["model"] == lin.label and s.get("mfu") is not None]
        if got:
            best = max(got, key=lambda s: s["mfu"])
            where = length_label(best["seq_len"])
            out.append(
                f"- MFU {kind} ≥ {goal:.0%} ({lin.label}): best {best['mfu']:.1%} at T={where}"
                f" — {_verdict(best['mfu'], goal)}"
            )
    dec = [s for s in summary if s["kind"] == "decode1" and s["model"] == lin.label and s["status"] == "ok"]
    dec.sort(key=lambda s: s["seq_len"])
    if len(dec) >= 2:
        first, last = dec[0], dec[-1]
        r = last["ms_token"] / first["ms_token"]
        out.append(
            f"- decode ms/token at T={length_label(last['seq_len'])} within 10% of T={length_label(first['seq_len'])}"
            f": {last['ms_token']:.3g} vs {first['ms_token']:.3g} ms ({r - 1:+.0%}) — "
            + ("met" if abs(r - 1) <= 0.10 else "missed")
        )
    for peer in [m for m in spec.models if m.family in ("transformer++", "mamba")]:
        cells = []
        for s in summary:
            if s["kind"] != "prefill" or s["model"] != lin.label or s["seq_len"] < 8192 or s["status"] != "ok":
                continue
            other = _find(summary, "prefill", peer.label, s["seq_len"])
            where = length_label(s["seq_len"])
            if other is not None and other["status"] == "ok":
                cells.append(f"T={where}: {s['tok_s'] / other['tok_s']:.2f}x")
            elif other is not None:
                cells.append(f"T={where}: peer {other['cell']}")
        if cells:
            out.append(f"- prefill at T ≥ 8k faster than {peer.label} (ours ÷ peer tok/s): " + ", ".join(cells))
    if "inner_linear" in rates and "gemm_fp32" in rates:
        inner, gemm = rates["inner_linear"], rates["gemm_fp32"]
        out.append(
            f"- TTT-Linear inner loop ≥ 50% of the fp32 GEMM rate: {inner:.1f} / {gemm:.1f} GFLOP/s = "
            f"{inner / gemm:.1%} — {_verdict(inner / gemm, 0.5)}"
        )
    if "inner_linear_compiled" in rates and "gemm_fp32" in rates:
        inner, gemm = rates["inner_linear_compiled"], rates["gemm_fp32"]
        out.append(
            f"- the same, compiled mini-batch step: {inner:.1f} / {gemm:.1f} GFLOP/s = {inner / gemm:.1%} — "
            f"{_verdict(inner / gemm, 0.5)}"
        )
    states = [s for s in summary if s["family"] == "ttt" and s.get("state_bytes") and s.get("state_formula")]
    if states:
        bad = [s for s in states if s["state_bytes"] != s["state_formula"]]
        out.append(
            f"- state bytes = formula for TTT models: {len(states) - len(bad)}/{len(states)} measurements equal"
            + (f" (differs: {', '.join(s['model'] for s in bad)})" if bad else "")
        )
    return out


def render(summary: list[dict], rates: dict[str, float], shapes: dict, meta: dict, spec: BenchSpec) -> str:
    lines = [f"# ttt bench: {meta['size']}, {spec.dtype}, {spec.threads} thread(s)", ""]
    lines += [f"- command: `{meta['command']}`", f"- machine: {meta['machine']}"]
    lines.append(
        f"- date: {meta['date']}; wall time {meta['wall_s'] / 60:.1f} min; load average at start / end: "
        f"{meta['load_start']} / {meta['load_end']}"
    )
    lines += [
        f"- limits per job: {spec.limits.mem_gib:g} GiB, {spec.limits.time_s:g} s; repeats {spec.repeats} "
        f"({spec.long_repeats} from T={length_label(spec.long_from)}), medians; decode: {spec.decode_steps} steps",
        "- cells: `OOM>…` / `timeout>…` the job hit a limit; `*` not run because a shorter T already did",
        "",
    ]
    if rates:
        gemm = rates.get("gemm_fp32")
        lines += ["## GEMM rate and the TTT inner loop (GFLOP/s)", "", "| kernel | shape | GFLOP/s | ÷ fp32 GEMM |"]
        lines.append("|---|---|---|---|")
        names = dict(gemm_fp32="gemm", gemm_bf16="gemm_bf16", bmm_small_fp32="bmm_small")
        names.update(inner_linear="inner", inner_mlp="inner", inner_linear_compiled="inner", inner_mlp_compiled="inner")
        for name, value in rates.items():
            frac = f"{value / gemm:.1%}" if gemm else ""
            lines.append(f"| {name} | {shapes.get(names.get(name, ''), '')} | {value:.1f} | {frac} |")
        lines.append("")
    batch_b = spec.decode_batch
    sections = [
        ("Prefill tokens/s (batch 1, one forward, last-token logits)", "prefill", 1, "tok_s", "{:.4g}"),
        ("Prefill MFU (forward FLOPs by formula ÷ time ÷ GEMM rate)", "prefill", 1, "mfu", "{:.1%}"),
        ("Decode ms/token, batch 1, after a real prefill of T tokens", "decode1", 1, "ms_token", "{:.4g}"),
        (f"Decode ms/step, batch {batch_b}, synthetic state of T tokens", "decode", None, "ms_token", "{:.4g}"),
        (f"Training tokens/s (forward + backward, batch {spec.train_batch})", "train", None, "tok_s", "{:.4g}"),
        ("Training MFU (3 × forward FLOPs ÷ time ÷ GEMM rate)", "train", None, "mfu", "{:.1%}"),
        ("Peak resident memory in prefill (MiB, weights included)", "prefill", 1, "peak_rss_mib", "{:.0f}"),
        ("Inference state after T tokens, batch 1 (MiB, from the cache tensors)", "prefill", 1, "state_mib", "{:.2f}"),
        (f"Inference state after T tokens, batch {batch_b} (MiB)", "decode", None, "state_mib", "{:.1f}"),
    ]
    for s in summary:
        if s.get("state_bytes"):
            s["state_mib"] = s["state_bytes"] / 2**20
    for title, kind, batch, key, fmt in sections:
        table = pivot(summary, kind, batch, key, fmt)
        if table:
            lines += [f"## {title}", "", *table, ""]
    ratios = ratio_rows(summary, spec)
    if ratios:
        lines += ["## Ratios, measured side by side in this run", *ratios, ""]
    lines += ["## Targets (issue 4), measured", "", *targets(summary, rates, spec), ""]
    return "\n".join(lines)
