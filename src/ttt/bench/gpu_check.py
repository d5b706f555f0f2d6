"""One command for a CUDA machine: the Triton TTT-Linear and TTT-MLP kernels checked on the GPU, then timed.

    python -m ttt.bench.gpu_check [--out results/gpu_check] [--lengths 2048 8192 32768] [--batch 8] [--heads 12]

1. correctness: `ttt_triton` against the dual form (`ttt_dual`, float64, same device) in the output, the final state
   and the gradient of every input, for float32 inputs (≤ 1e-5 / 1e-4 relative) and bfloat16 inputs (against the
   dual form on the bf16-rounded inputs; bf16 output rounding and tf32 products: ≤ 2e-2), T ∈ {1, 15, 16, 17, 48, 63},
   head_dim ∈ {16, 32, 64}, mini-batch 16, B = H = 2, both inner models; then the step kernels against the primal step.
2. op speed: forward and forward+backward ms of the op at head_dim 64, mini-batch 16, [batch × heads] sequences of
   each length, per inner model: triton, the torch dual form eager and through torch.compile (compile time reported
   apart), and for TTT-Linear fla's `chunk_ttt_linear` when importable (other semantics: speed only).
3. model: training step tokens/s (forward + backward of the LM loss, bf16 autocast) of ttt-linear-125m and
   ttt-mlp-125m with `ttt_implementation="triton"` and the default, and the Transformer++ 125m baseline, T = 2048.

Writes OUT/gpu_check.md (command, device, tables) and OUT/gpu_check.json. Medians after a warm-up. Without CUDA
it runs at `--quick` sizes on the CPU in Triton's interpreter (start with TRITON_INTERPRET=1): that checks the script,
not the speed. Budget on an H200: a few minutes.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..ops import InnerSpec, TTTState, ttt_dual, ttt_primal_step
from ..ops.triton import ttt_triton, ttt_triton_step
from .models import build
from .spec import ModelSpec

TOLERANCE = {torch.float32: (1e-5, 1e-4), torch.bfloat16: (2e-2, 2e-2)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median wall milliseconds of fn() over `repeats` calls after one warm-up (synchronised on CUDA)."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def op_inputs(
    batch, seq_len, heads, dim, device, dtype=torch.float64, kind="linear", seed=0, mini_batch=16
) -> dict[str, Any]:
    """Random op inputs on `device` (lr of the layer's order, ttt_base_lr / head_dim), with the initial weights of
    the inner model `kind` ("linear": w1, b1; "mlp": w1, b1, w2, b2 with hidden width 4D)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        return (shift + scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(device, dtype)

    tf = (1.0 / torch.arange(1, mini_batch + 1, dtype=torch.float64)).to(device, dtype) + rand(mini_batch, scale=0.05)
    return dict(
        q=rand(batch, seq_len, heads, dim),
        k=rand(batch, seq_len, heads, dim),
        v=rand(batch, seq_len, heads, dim),
        lr=(torch.rand(batch, seq_len, heads, generator=gen, dtype=torch.float64) / dim).to(device, dtype),
        tf=tf.clamp_min(0),
        ln_w=rand(heads, dim, scale=0.1, shift=1.0),
        ln_b=rand(heads, dim, scale=0.1),
        **_weights(rand, heads, dim, kind),
    )


def _weights(rand: Callable, heads: int, dim: int, kind: str) -> dict[str, torch.Tensor]:
    if kind == "linear":
        return dict(w1=rand(heads, dim, dim, scale=0.3), b1=rand(heads, 1, dim, scale=0.1))
    hidden = 4 * dim
    return dict(
        w1=rand(heads, dim, hidden, scale=0.3),
        b1=rand(heads, 1, hidden, scale=0.1),
        w2=rand(heads, hidden, dim, scale=0.15),
        b2=rand(heads, 1, dim, scale=0.1),
    )


def run_op(form, x: dict[str, Any], backward: bool) -> tuple[torch.Tensor, TTTState, list[torch.Tensor]]:
    """The form on the inputs; with `backward`, the gradients of a loss weighing every output and state entry."""
    leaves = [t.detach().requires_grad_(backward) for t in x.values()]
    q, k, v, lr, tf, ln_w, ln_b, *params = leaves
    state = TTTState.initial(tuple(params), q.shape[0])
    z, final = form(q, k, v, lr, InnerSpec(tf, ln_w, ln_b), state)
    if not backward:
        return z, final, []
    # weights exact in bf16: a bf16 output gets the same upstream gradient as the float64 reference
    weights = torch.linspace(-1, 1, z.numel(), device=z.device).to(torch.bfloat16).view(z.shape)
    loss = (weights.to(z.dtype) * z).float().sum()
    loss = loss + sum((0.5 + j) * (t.float() ** 2).sum() for j, t in enumerate(_tensors(final)))
    return z, final, list(torch.autograd.grad(loss, leaves))


def _tensors(state: TTTState) -> list[torch.Tensor]:
    return [t for t in (*state.params, *state.grad_sums_or_zeros()) if t is not None]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def correctness(device: torch.device, lengths: list[int], dims: list[int], kinds: list[str]) -> list[dict[str, Any]]:
    """Max relative errors of the Triton forms against the torch forms, one row per (model, dtype, T, head_dim)."""
    rows = []
    for kind, dtype, seq_len, dim in itertools.product(kinds, (torch.float32, torch.bfloat16), lengths, dims):
        x = op_inputs(2, seq_len, 2, dim, device, kind=kind)
        low = {n: t.to(dtype) if n in ("q", "k", "v", "lr") else t.float() for n, t in x.items()}
        # the reference sees exactly the numbers the kernel sees
        ref_in = {n: t.double() for n, t in low.items()}
        z, final, grads = run_op(ttt_triton, low, True)
        z_ref, final_ref, grads_ref = run_op(ttt_dual, ref_in, True)
        state = max(_rel(a, b) for a, b in zip(_tensors(final), _tensors(final_ref)))
        row: dict[str, Any] = dict(kind=kind, dtype=str(dtype).removeprefix("torch."), T=seq_len, D=dim)
        row.update(out=_rel(z, z_ref), state=state, grad=max(_rel(a, b) for a, b in zip(grads, grads_ref)))
        fwd_tol, grad_tol = TOLERANCE[dtype]
        row["ok"] = row["out"] <= fwd_tol and row["state"] <= fwd_tol and row["grad"] <= grad_tol
        rows.append(row)
    return rows


def step_check(device: torch.device, kind: str, dim: int, steps: int) -> dict[str, Any]:
    """The step kernel against the primal step over `steps` decode tokens after a 21-token prefill (fp32)."""
    x = op_inputs(3, 21 + steps, 2, dim, device, dtype=torch.float32, kind=kind)
    spec = InnerSpec(x["tf"], x["ln_w"], x["ln_b"])
    with torch.no_grad():
        _, state = ttt_triton(
            x["q"][:, :21],
            x["k"][:, :21],
            x["v"][:, :21],
            x["lr"][:, :21],
            spec,
            TTTState.initial(tuple(t for n, t in x.items() if n[0] in "wb"), 3),
        )
        ref = state.map(lambda t: t.double() if t.is_floating_point() else t)
        spec64 = InnerSpec(x["tf"].double(), x["ln_w"].double(), x["ln_b"].double())
        worst = 0.0
        for t in range(21, 21 + steps):
            q, k, v, lr = (x[n][:, t] for n in ("q", "k", "v", "lr"))
            out, state = ttt_triton_step(q, k, v, lr, spec, state)
            out_ref, ref = ttt_primal_step(q.double(), k.double(), v.double(), lr.double(), spec64, ref)
            worst = max(worst, _rel(out, out_ref))
    state_err = max(_rel(a, b) for a, b in zip(_tensors(state), _tensors(ref)))
    return dict(
        kind=kind,
        dtype="float32",
        T=f"step x{steps}",
        D=dim,
        out=worst,
        state=state_err,
        grad=float("nan"),
        ok=max(worst, state_err) <= 1e-5,
    )


def _fla_op() -> Callable | None:
    try:
        from fla.ops.ttt import chunk_ttt_linear
    except Exception:
        return None
    return chunk_ttt_linear


def op_speed(
    device: torch.device,
    kind: str,
    lengths: list[int],
    batch: int,
    heads: int,
    dim: int,
    repeats: int,
    compile_path: bool = True,
) -> tuple[list[dict], dict]:
    """ms per call, forward and forward+backward, per path and length; and the compile seconds of the compiled path."""
    paths: dict[str, Callable] = {"triton": ttt_triton, "torch dual (eager)": ttt_dual}
    if compile_path:
        paths["torch dual (torch.compile)"] = functools.partial(ttt_dual, compile_mini_batch=True)
    fla = _fla_op() if kind == "linear" else None
    rows, compile_s = [], {}
    for seq_len in lengths:
        x = op_inputs(batch, seq_len, heads, dim, device, dtype=torch.float32, kind=kind)
        row: dict[str, Any] = {"kind": kind, "T": seq_len}
        for name, form in paths.items():
            for label, backward in (("fwd", False), ("fwd+bwd", True)):
                key = f"{kind}: {name} {label}"
                try:
                    if "compile" in name and key not in compile_s:
                        start = time.perf_counter()
                        run_op(form, x, backward)
                        _sync(device)
                        compile_s[key] = time.perf_counter() - start
                    with torch.set_grad_enabled(backward):
                        row[key] = median_ms(functools.partial(run_op, form, x, backward), device, repeats)
                except Exception as error:  # a path that fails (memory, compile) is reported, not fatal
                    row[key] = f"error: {type(error).__name__}: {str(error)[:80]}"
        if fla is not None:
            for label, backward in (("fwd", False), ("fwd+bwd", True)):
                row[f"linear: fla chunk_ttt_linear {label}"] = _fla_ms(fla, x, backward, device, repeats)
        rows.append(row)
    return rows, compile_s


def _fla_ms(fla: Callable, x: dict[str, Any], backward: bool, device: torch.device, repeats: int) -> float | str:
    """fla's op on the same shapes (its η is one rate per token: the lr; speed only, it computes another layer)."""
    batch, seq_len, heads, dim = x["q"].shape

    def call():
        q, k, v = (x[n].detach().requires_grad_(backward) for n in ("q", "k", "v"))
        w0 = x["w1"].expand(batch, heads, dim, dim).contiguous()
        out = fla(q, k, v, x["ln_w"], x["ln_b"], x["lr"].unsqueeze(-1), initial_state=w0, output_final_state=True)
        if backward:
            out[0].float().sum().backward()

    try:
        with torch.set_grad_enabled(backward):
            return median_ms(call, device, repeats)
    except Exception as error:
        return f"error: {type(error).__name__}: {str(error)[:80]}"


def model_speed(device: torch.device, size: str, seq_len: int, batch: int, repeats: int) -> list[dict[str, Any]]:
    """Training step tokens/s (bf16 autocast on CUDA) of TTT-Linear (triton, auto) and Transformer++ at `size`."""
    rows = []
    for spec in (
        ModelSpec("ttt-linear", size, "triton"),
        ModelSpec("ttt-linear", size, "auto"),
        ModelSpec("ttt-mlp", size, "triton"),
        ModelSpec("ttt-mlp", size, "auto"),
        ModelSpec("transformer++", size),
    ):
        label = f"{spec.kind} ({spec.impl})" if spec.impl else spec.kind
        try:
            model: Any = build(spec)
            model = model.to(device).train()
            if not spec.impl:  # the baseline's attention kernel, as transformers chose it
                label += f" ({model.config._attn_implementation})"
            ms = train_step_ms(model, seq_len, batch, device, repeats)
            rows.append(dict(model=label, T=seq_len, batch=batch, ms=ms, tok_s=batch * seq_len / ms * 1e3))
        except Exception as error:
            rows.append(
                dict(model=label, T=seq_len, batch=batch, ms=f"error: {type(error).__name__}: {str(error)[:80]}")
            )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def train_step_ms(model: Any, seq_len: int, batch: int, device: torch.device, repeats: int) -> float:
    """Median ms of one AdamW training step on random tokens (bf16 autocast on CUDA)."""
    ids = torch.randint(0, model.config.vocab_size, (batch, seq_len), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return median_ms(step, device, repeats)


def _cell(value: Any, fmt: str = "{:.3g}") -> str:
    return fmt.format(value) if isinstance(value, float) else str(value)


def markdown(
    command: str, device_name: str, correct: list[dict], speed: list[dict], compile_s: dict, models: list[dict]
) -> str:
    lines = [
        f"`{command}`",
        "",
        f"device: {device_name}; torch {torch.__version__}",
        "",
        "## Correctness (max relative error)",
        "",
    ]
    lines += [
        "| inner model | inputs | T | head_dim | output | final state | gradients | within tolerance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in correct:
        errors = " | ".join(_cell(r[key]) for key in ("out", "state", "grad"))
        cells = f"{r['kind']} | {r['dtype']} | {r['T']} | {r['D']}"
        lines.append(f"| {cells} | {errors} | {'yes' if r['ok'] else '**no**'} |")
    lengths = sorted({r["T"] for r in speed})
    keys = list(dict.fromkeys(k for r in speed for k in r if k not in ("kind", "T")))
    cell = {(k, r["T"]): v for r in speed for k, v in r.items()}
    lines += [
        "",
        "## Op speed (ms per call, fp32 inputs)",
        "",
        "| inner model: path | " + " | ".join(f"T={t}" for t in lengths) + " |",
        "|---" * (len(lengths) + 1) + "|",
    ]
    lines += [f"| {k} | " + " | ".join(_cell(cell.get((k, t), "")) for t in lengths) + " |" for k in keys]
    if compile_s:
        lines += [
            "",
            "Compile time of the torch.compile path (first call): "
            + ", ".join(f"{k}: {v:.1f} s" for k, v in compile_s.items()),
        ]
    lines += [
        "",
        "## Training step (bf16 autocast on CUDA)",
        "",
        "| model | T | batch | ms/step | tokens/s |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['T']} | {r['batch']} | {_cell(r['ms'])} | {_cell(r.get('tok_s', ''), '{:.0f}')} |"
        for r in models
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ttt.bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu_check"))
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 32768], help="op speed: T per sequence")
    parser.add_argument("--batch", type=int, default=8, help="op speed: sequences")
    parser.add_argument("--heads", type=int, default=12, help="op speed: heads per sequence (head_dim 64)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the default without CUDA)")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile path")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    quick = args.quick or device.type != "cuda"
    if quick:
        args.lengths, args.batch, args.heads, args.repeats = [32], 1, 1, 1
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (Triton interpreter: not a speed figure)"
    )
    command = "python -m ttt.bench.gpu_check " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"gpu_check on {device_name}", flush=True)
    kinds = ["linear", "mlp"]
    correct = correctness(device, [1, 17] if quick else [1, 15, 16, 17, 48, 63], [16] if quick else [16, 32, 64], kinds)
    correct += [step_check(device, kind, 16 if quick else 64, 4 if quick else 20) for kind in kinds]
    print(f"correctness: {sum(r['ok'] for r in correct)}/{len(correct)} within tolerance", flush=True)
    dim = 16 if quick else 64
    speed: list[dict] = []
    compile_s: dict[str, float] = {}
    for kind in kinds:
        rows, seconds = op_speed(
            device, kind, args.lengths, args.batch, args.heads, dim, args.repeats, not args.skip_compile
        )
        speed += rows
        compile_s.update(seconds)
    print("op speed done", flush=True)
    models = model_speed(device, "tiny" if quick else "125m", 32 if quick else 2048, 1 if quick else 8, args.repeats)
    text = markdown(command, device_name, correct, speed, compile_s, models)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.md").write_text(text)
    payload = dict(
        command=command, device=device_name, correctness=correct, op_speed=speed, compile_s=compile_s, models=models
    )
    (args.out / "gpu_check.json").write_text(json.dumps(payload, indent=1, default=str))
    print(text)
    return 0 if all(r["ok"] for r in correct) else 1


if __name__ == "__main__":
    sys.exit(main())
