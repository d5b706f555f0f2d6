"""Peak memory of `ttt convert jax` on a synthetic full-size train state (params + AdamW moments), to show the
converter streams: its peak should track the converted parameters, not the file.

    python -m ttt.bench.convert_memory [--size 125m] [--block ttt_linear] [--dir /tmp/convert_mem]

Writes an EasyLM-format `streaming_train_state` (bf16, as ttt-lm-jax does by default) with random values in the
official flax tree layout, then runs the CLI in a fresh process and prints file size, parameter bytes and peak RSS.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import msgpack
import torch

from ..convert import config_from_flags
from ..models import TTTConfig


def jax_leaves(cfg: TTTConfig) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
    """The flax parameter tree of a ttt-lm-jax CausalLM (paths inside params, shapes)."""
    d, h, f, i, v = (
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.hidden_size // cfg.num_attention_heads,
        cfg.intermediate_size,
        cfg.vocab_size,
    )
    inner = f if cfg.ttt_layer_type == "linear" else 4 * f
    leaves: list[tuple[tuple[str, ...], tuple[int, ...]]] = [
        (("model", "wte", "embedding"), (v, d)),
        (("model", "ln_f", "kernel"), (d,)),
    ]
    for layer in range(cfg.num_hidden_layers):
        p = ("model", "h", str(layer))
        s = (*p, "seq_modeling_block")
        if cfg.pre_conv:
            leaves += [
                ((*p, "conv", "conv_norm", "kernel"), (d,)),
                ((*p, "conv", "conv1", "kernel"), (4, 1, d)),
                ((*p, "conv", "conv1", "bias"), (d,)),
            ]
        leaves += [
            ((*p, "seq_norm", "kernel"), (d,)),
            ((*p, "ffn_norm", "kernel"), (d,)),
            ((*p, "feed_forward", "w1", "kernel"), (d, i)),
            ((*p, "feed_forward", "w3", "kernel"), (d, i)),
            ((*p, "feed_forward", "w2", "kernel"), (i, d)),
        ]
        projections = "qvog" if cfg.share_qk else "qkvo"
        leaves += [((*s, f"w{x}", "kernel"), (d, d)) for x in projections]
        if cfg.share_qk:
            leaves += [
                ((*s, f"conv_{x}", k), shape) for x in "qk" for k, shape in (("kernel", (4, 1, d)), ("bias", (d,)))
            ]
        leaves += [((*s, "ttt_dense_0"), (h, f, inner)), ((*s, "ttt_bias_0"), (h, 1, inner))]
        if cfg.ttt_layer_type == "mlp":
            leaves += [((*s, "ttt_dense_1"), (h, inner, f)), ((*s, "ttt_bias_1"), (h, 1, f))]
        leaves += [
            ((*s, "ttt_norm/scale"), (h, f)),
            ((*s, "ttt_norm/bias"), (h, f)),
            ((*s, "learnable_ttt_lr/kernel"), (h, d, 1)),
            ((*s, "learnable_ttt_lr/bias"), (h, 1)),
            ((*s, "learnable_token_idx"), (16,)),
            ((*s, "post_norm", "scale"), (d,)),
            ((*s, "post_norm", "bias"), (d,)),
        ]
    return leaves


def record(key: tuple[str, ...], tensor: torch.Tensor, dtype_name: str) -> bytes:
    raw = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
    payload = msgpack.packb([list(tensor.shape), dtype_name, raw])
    return msgpack.packb([list(key), msgpack.packb(msgpack.ExtType(1, payload))])


def write_train_state(path: Path, cfg: TTTConfig) -> int:
    leaves = jax_leaves(cfg)
    n = 0
    with open(path, "wb") as f:
        f.write(record(("step",), torch.tensor(1, dtype=torch.int32), "int32"))
        for prefix in (
            ("params", "params"),
            ("opt_state", "1", "0", "mu", "params"),
            ("opt_state", "1", "0", "nu", "params"),
        ):
            for key, shape in leaves:
                f.write(record((*prefix, *key), 0.02 * torch.randn(shape).to(torch.bfloat16), "bfloat16"))
                n += torch.Size(shape).numel() if prefix[0] == "params" else 0
    return n


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ttt.bench.convert_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="125m")
    parser.add_argument("--block", default="ttt_linear")
    parser.add_argument("--dir", default="/tmp/convert_mem")
    args = parser.parse_args()
    cfg = config_from_flags(args.size, args.block)
    folder = Path(args.dir)
    (folder / "ckpt").mkdir(parents=True, exist_ok=True)
    n_params = write_train_state(folder / "ckpt" / "streaming_train_state", cfg)
    size = (folder / "ckpt" / "streaming_train_state").stat().st_size
    cmd = [
        sys.executable,
        "-m",
        "ttt.cli",
        "convert",
        "jax",
        str(folder / "ckpt"),
        str(folder / "out"),
        "--overwrite",
        "--preset",
        args.size,
        "--block",
        args.block,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    print(
        f"checkpoint file: {size / 1e6:.0f} MB (bf16 params + AdamW mu, nu); {n_params / 1e6:.1f}M parameters = "
        f"{n_params * 4 / 1e6:.0f} MB in float32"
    )
    print(out.strip().splitlines()[-1])
    print("command:", " ".join(cmd))


if __name__ == "__main__":
    main()
