"""Prefill time per token and peak memory against the prompt length T, read at once or in chunks (issue 15: "prefill
cost flat in T"), and where the time goes.

    python -m ttt.bench.prefill_scaling [--preset ttt-linear-125m] [--lengths 1k 2k 8k 32k] [--chunks 0 2048]
                                        [--impls auto] [--repeats 1] [--threads 1] [--breakdown] [--out DIR]

Each (implementation, chunk, T) runs in a fresh process (`runner.run_child`, so each peak is its own): a model of the
preset with random weights, `ttt_prefill_chunk_size` = the chunk (0: the whole prompt in one pass), one warm-up
prefill of 512 tokens, then the timed `model(ids, cache=cache, logits_to_keep=1)` over [1, T] without autograd (what
generation does), and its peak resident memory (VmHWM, weights included). Repeats alternate over the cells; the table
gives medians. `--breakdown`: one more prefill timed per part of the model with forward hooks (µs per token: the
projections, the TTT inner loop, the convs, the norms, the SwiGLU MLP, the LM head, and what is left inside the TTT
layer (RoPE, η gate, reshapes) and the block (residual adds)). Writes results.md and results.json under --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cli import machine_description
from .procstat import emit, peak_rss_bytes, reset_peak_rss
from .report import length_label
from .runner import child_env, run_child
from .spec import Limits, parse_lengths

WARMUP = 512
PARTS = (
    "projections",
    "inner loop",
    "q/k convs",
    "pre-conv",
    "norms",
    "TTT layer, rest",
    "MLP",
    "block, rest",
    "embed + LM head",
    "outside",
)


class PartTimer:
    """Inclusive seconds per part of a TTT model, from forward hooks (and a wrapped `inner_loop` per layer); the
    exclusive parts `TTT layer, rest`, `block, rest` and `outside` are what their parent spent beyond its parts."""

    def __init__(self, model: Any) -> None:
        """model: a TTTForCausalLM."""
        self.seconds: dict[str, float] = defaultdict(float)
        self.handles: list[Any] = []
        base = model.model
        for block in base.layers:
            ttt = block.seq_modeling_block
            self._time(block, "block")
            if getattr(block, "pre_conv", False):
                self._time(block.conv, "pre-conv")
            self._time(block.seq_norm, "norms")
            self._time(block.ffn_norm, "norms")
            self._time(block.mlp, "MLP")
            self._time(ttt, "TTT layer")
            for name in ("q_proj", "k_proj", "v_proj", "o_proj", "g_proj"):
                if isinstance(getattr(ttt, name, None), nn.Module):
                    self._time(getattr(ttt, name), "projections")
            for name in ("conv_q", "conv_k"):
                if isinstance(getattr(ttt, name, None), nn.Module):
                    self._time(getattr(ttt, name), "q/k convs")
            self._time(ttt.post_norm, "TTT post-norm")
            ttt.inner_loop = self._wrap(ttt.inner_loop, "inner loop")
        self._time(base.embed_tokens, "embed + LM head")
        self._time(base.norm, "final norm")
        self._time(model.lm_head, "embed + LM head")

    def _time(self, module: nn.Module, part: str) -> None:
        starts: list[float] = []

        def pre(*_: Any) -> None:
            starts.append(time.perf_counter())

        def post(*_: Any) -> None:
            self.seconds[part] += time.perf_counter() - starts.pop()

        self.handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def _wrap(self, fn: Callable[..., Any], part: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start

        return timed

    def parts(self, total: float) -> dict[str, float]:
        """Exclusive seconds per PARTS name for a call that took `total` seconds."""
        s = self.seconds
        inside_ttt = s["projections"] + s["inner loop"] + s["q/k convs"] + s["TTT post-norm"]
        out = {name: s[name] for name in ("projections", "inner loop", "q/k convs", "pre-conv", "MLP")}
        out["norms"] = s["norms"] + s["TTT post-norm"] + s["final norm"]
        out["TTT layer, rest"] = s["TTT layer"] - inside_ttt
        out["block, rest"] = s["block"] - s["pre-conv"] - s["norms"] - s["TTT layer"] - s["MLP"]
        out["embed + LM head"] = s["embed + LM head"]
        out["outside"] = total - s["block"] - s["final norm"] - s["embed + LM head"]
        return out


def child(p: dict[str, Any]) -> None:
    """One cell in this process: build, warm up, time one prefill (and the breakdown); emit the records."""
    from ..models import TTTCache, TTTForCausalLM, get_preset

    torch.set_num_threads(p["threads"])
    torch.manual_seed(0)
    config = get_preset(p["preset"], ttt_implementation=p["impl"], ttt_prefill_chunk_size=p["chunk"])
    model = TTTForCausalLM(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, p["seq_len"]))

    def prefill() -> float:
        cache = TTTCache.from_model(model, 1)
        start = time.perf_counter()
        model(ids, cache=cache, logits_to_keep=1)
        return time.perf_counter() - start

    with torch.no_grad():
        model(ids[:, :WARMUP], cache=TTTCache.from_model(model, 1), logits_to_keep=1)
        reset_peak_rss()
        seconds = prefill()
        emit(dict(phase="prefill", seconds=seconds, peak_rss=peak_rss_bytes()))
        if p["breakdown"]:
            timer = PartTimer(model)
            total = prefill()
            emit(dict(phase="breakdown", seconds=total, parts=timer.parts(total)))


def measure(args: argparse.Namespace, progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every cell `args.repeats` times (repeats alternate over the cells); one row per cell and repeat."""
    env, rows = child_env(args.threads), []
    for repeat in range(args.repeats):
        for impl in args.impls:
            for chunk in args.chunks:
                for seq_len in args.lengths:
                    payload = dict(
                        preset=args.preset,
                        impl=impl,
                        chunk=chunk,
                        seq_len=seq_len,
                        threads=args.threads,
                        breakdown=args.breakdown and repeat == 0,
                    )
                    command = [sys.executable, "-m", "ttt.bench.prefill_scaling", "--child", json.dumps(payload)]
                    outcome = run_child(command, Limits(args.mem_limit, args.time_limit), env=env)
                    row: dict[str, Any] = dict(impl=impl, chunk=chunk, seq_len=seq_len, repeat=repeat)
                    row.update(status=outcome.status, error=outcome.error)
                    for record in outcome.records:
                        row[record["phase"]] = {k: v for k, v in record.items() if k != "phase"}
                    rows.append(row)
                    got = f"{seq_len / row['prefill']['seconds']:.1f} tok/s" if "prefill" in row else outcome.status
                    progress(f"r{repeat} {impl} chunk={chunk} T={length_label(seq_len)}: {got}")
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (impl, chunk, T): median tokens/s and peak MiB over the repeats that succeeded, the ratio to the
    shortest T of the same impl and chunk, and the breakdown (µs per token) when measured."""
    cells: dict[tuple[str, int, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        cells[(r["impl"], r["chunk"], r["seq_len"])].append(r)
    out = []
    for (impl, chunk, seq_len), group in cells.items():
        ok = [r for r in group if "prefill" in r]
        s: dict[str, Any] = dict(impl=impl, chunk=chunk, seq_len=seq_len, n=len(ok))
        if not ok:
            s["status"] = group[0]["status"]
        else:
            s["status"] = "ok"
            s["tok_s"] = statistics.median(seq_len / r["prefill"]["seconds"] for r in ok)
            s["peak_mib"] = statistics.median(r["prefill"]["peak_rss"] for r in ok) / 2**20
            parts = next((r["breakdown"]["parts"] for r in ok if "breakdown" in r), None)
            if parts is not None:
                s["us_token"] = {name: 1e6 * v / seq_len for name, v in parts.items()}
        out.append(s)
    for s in out:
        first = min(
            (t for t in out if (t["impl"], t["chunk"]) == (s["impl"], s["chunk"]) and "tok_s" in t),
            key=lambda t: t["seq_len"],
            default=None,
        )
        if first is not None and "tok_s" in s:
            s["vs_first"] = s["tok_s"] / first["tok_s"]
            s["first_len"] = first["seq_len"]
    return out


def table(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| impl | chunk | T | tokens/s | vs shortest T | peak MiB |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary:
        chunk = "one pass" if s["chunk"] == 0 else str(s["chunk"])
        if s["status"] != "ok":
            lines.append(f"| {s['impl']} | {chunk} | {length_label(s['seq_len'])} | {s['status']} | | |")
            continue
        lines.append(
            f"| {s['impl']} | {chunk} | {length_label(s['seq_len'])} | {s['tok_s']:.1f} | "
            f"{s['vs_first']:.2f} | {s['peak_mib']:.0f} |"
        )
    broken = [s for s in summary if "us_token" in s]
    if broken:
        lines += ["", "µs per token by part (one timed prefill with forward hooks):", ""]
        lines.append("| impl | chunk | T | " + " | ".join(PARTS) + " | total |")
        lines.append("|---" * (len(PARTS) + 4) + "|")
        for s in broken:
            parts = s["us_token"]
            chunk = "one pass" if s["chunk"] == 0 else str(s["chunk"])
            cells = " | ".join(f"{parts[name]:.0f}" for name in PARTS)
            lines.append(
                f"| {s['impl']} | {chunk} | {length_label(s['seq_len'])} | {cells} | {sum(parts.values()):.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ttt.bench.prefill_scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="ttt-linear-125m", help="a ttt.models preset (random weights)")
    p.add_argument("--lengths", nargs="+", default=["1k", "2k", "8k", "32k"], help="prompt lengths (1k = 1024)")
    p.add_argument("--chunks", nargs="+", type=int, default=[0, 2048], help="ttt_prefill_chunk_size values (0: off)")
    p.add_argument("--impls", nargs="+", default=["auto"], help="ttt_implementation values (auto, compiled, ...)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--breakdown", action="store_true", help="also time each part of the model (first repeat)")
    p.add_argument("--mem-limit", type=float, default=14.0, help="GiB per cell")
    p.add_argument("--time-limit", type=float, default=900.0, help="seconds per cell")
    p.add_argument("--out", default="results/prefill_scaling")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    args.lengths = parse_lengths(",".join(args.lengths))
    if args.repeats < 1 or args.threads < 1 or any(c < 0 for c in args.chunks):
        p.error("--repeats and --threads must be >= 1, --chunks >= 0")
    rows = measure(args)
    text = table(summarise(rows))
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_description(args.threads)
    command = "python -m ttt.bench.prefill_scaling " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "results.md").write_text(f"`{command}`\n\nmachine: {machine}\n\n{text}\n")
    (out / "results.json").write_text(json.dumps(dict(machine=machine, command=command, rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
