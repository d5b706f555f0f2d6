"""How the outer gradient through TTT-MLP's inner loop grows with the sequence length and the inner rate.

One fresh `TTTMLP(64, 4, mini_batch_size=16, share_qk=True, use_gate=True)` (torch seed 0) on `randn(1, T, 64)`;
prints ‖∂(Σ y)/∂x‖ for each (ttt_base_lr, dtype, implementation, T) cell. The table in docs/training.md
("Non-finite gradients") comes from the default run; `--quick` runs only T ≤ 2048.

    python -m ttt.bench.inner_grad_growth [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch

from ..layers import TTTMLP

# (ttt_base_lr, dtype, implementation, lengths): the cells of the docs' table
CELLS = [
    (0.01, torch.float64, "dual", (1024, 2048, 4096)),
    (0.01, torch.float32, "dual", (1024, 2048, 4096, 8192)),
    (0.01, torch.float32, "naive", (1024,)),
    (0.01, torch.float64, "naive", (1024,)),
    *((lr, torch.float64, "dual", (2048,)) for lr in (0.0, 1e-4, 1e-3, 3e-3, 0.1)),
    *((lr, torch.float32, "dual", (8192,)) for lr in (0.03, 0.1, 1.0)),
]


def input_grad_norm(lr: float, dtype: torch.dtype, implementation: str, seq_len: int) -> float:
    """‖∂(Σ y)/∂x‖ of one freshly initialised TTT-MLP layer (seed 0) on randn(1, seq_len, 64)."""
    torch.manual_seed(0)
    layer = TTTMLP(64, 4, mini_batch_size=16, ttt_base_lr=lr, share_qk=True, use_gate=True).to(dtype)
    layer.implementation = implementation
    x = torch.randn(1, seq_len, 64, dtype=dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(layer(x).sum(), x)
    return float(grad.norm())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ttt.bench.inner_grad_growth", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only T <= 2048")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| ttt_base_lr | dtype | implementation | T | ‖∂Σy/∂x‖ |")
    print("|---|---|---|---:|---:|")
    for lr, dtype, implementation, lengths in CELLS:
        for seq_len in lengths:
            if args.quick and seq_len > 2048:
                continue
            norm = input_grad_norm(lr, dtype, implementation, seq_len)
            print(f"| {lr:g} | {str(dtype).removeprefix('torch.')} | {implementation} | {seq_len} | {norm:.4g} |")


if __name__ == "__main__":
    main()
