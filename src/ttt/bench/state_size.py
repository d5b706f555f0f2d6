"""Bytes per session (a TTTCache for one sequence) for each preset, against the KV cache of the parameter-matched
Transformer++ at 2k / 8k / 32k tokens. Formula-based (`ttt.models.state_bytes`, tested equal to
`TTTCache.nbytes`), float32 unless --bytes 2.

    python -m ttt.bench.state_size [--bytes 4]
"""

from __future__ import annotations

import argparse

from ..models import SIZES, get_preset, kv_cache_bytes, state_bytes


def mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ttt.bench.state_size", description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=4, help="bytes per value (4: fp32, 2: bf16)")
    args = parser.parse_args()
    print("| preset | TTT state (any length) | Transformer KV 2k | KV 8k | KV 32k |")
    print("|---|---|---|---|---|")
    for size in SIZES:
        for layer in ("linear", "mlp"):
            for suffix in ("", "-T"):
                cfg = get_preset(f"ttt-{layer}-{size}{suffix}")
                kv = [
                    kv_cache_bytes(cfg.num_hidden_layers, cfg.hidden_size, t, bytes_per_value=args.bytes)
                    for t in (2048, 8192, 32768)
                ]
                print(
                    f"| ttt-{layer}-{size}{suffix} | {mb(state_bytes(cfg, bytes_per_value=args.bytes))} | "
                    + " | ".join(mb(k) for k in kv)
                    + " |"
                )


if __name__ == "__main__":
    main()
