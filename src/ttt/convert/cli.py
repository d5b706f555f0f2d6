"""`ttt convert jax CKPT OUT` and `ttt convert official MODEL_DIR OUT`."""

from __future__ import annotations

import argparse
import re
import resource
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_source(source: str) -> Path:
    """A local checkpoint path, or a Hugging Face hub repo id downloaded to the local cache (needs the network)."""
    path = Path(source)
    if path.exists() or not HUB_ID.match(source):
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=source))
    except Exception as err:
        raise SystemExit(
            f"ttt convert: {source!r} is not a local path, and downloading it from the Hugging Face hub failed "
            f"({type(err).__name__}: {err}). Offline? Download the checkpoint folder and give its path."
        ) from err


def convert_jax(args: argparse.Namespace) -> int:
    from .jax import config_from_flags, from_jax

    config = None
    if args.preset or args.block:
        if not (args.preset and args.block):
            raise SystemExit("ttt convert jax: give both --preset and --block (or neither, to read metadata.pkl)")
        overrides = {}
        if args.ttt_base_lr is not None:
            overrides["ttt_base_lr"] = args.ttt_base_lr
        if args.mini_batch_size is not None:
            overrides["mini_batch_size"] = args.mini_batch_size
        config = config_from_flags(
            args.preset,
            args.block,
            vocab_size=args.vocab_size,
            pre_conv=args.pre_conv,
            tie_word_embeddings=not args.untied,
            **overrides,
        )
    source = resolve_source(args.ckpt)
    try:
        config = from_jax(source, args.out, dtype=DTYPES[args.dtype], config=config, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        raise SystemExit(f"ttt convert jax: {err}") from err
    origin = "flags" if args.preset else "the checkpoint's metadata.pkl"
    print(
        f"config from {origin}: {config.ttt_layer_type}, hidden {config.hidden_size}, {config.num_hidden_layers} "
        f"layers, {config.num_attention_heads} heads, vocab {config.vocab_size}, pre_conv={config.pre_conv}, "
        f"share_qk={config.share_qk}, use_gate={config.use_gate}, tied={config.tie_word_embeddings}, "
        f"mini_batch_size={config.mini_batch_size}, ttt_base_lr={config.ttt_base_lr}"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"wrote {args.out} ({args.dtype}); peak resident memory {peak:.0f} MB")
    return 0


def convert_official(args: argparse.Namespace) -> int:
    from ..models import TTTForCausalLM
    from .official import to_official

    try:
        model = TTTForCausalLM.from_pretrained(args.model)
        to_official(model, args.out, overwrite=args.overwrite)
    except (OSError, ValueError, FileExistsError) as err:
        raise SystemExit(f"ttt convert official: {err}") from err
    print(f"wrote {args.out} in the official ttt-lm-pytorch format")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    convert = sub.add_parser("convert", help="convert checkpoints (official JAX in, official PyTorch out)")
    kinds = convert.add_subparsers(dest="kind", required=True)
    jax = kinds.add_parser("jax", help="an official ttt-lm-jax (EasyLM streaming) checkpoint -> save_pretrained folder")
    jax.add_argument("ckpt", help="folder with streaming_params or streaming_train_state (or the file, or a hub id)")
    jax.add_argument("out", help="output folder (must not exist or be empty, unless --overwrite)")
    jax.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weights written in this dtype")
    jax.add_argument("--preset", help="size when there is no metadata.pkl: 125m, 350m, 760m, 1.3b (1b)")
    jax.add_argument("--block", help="JAX seq_modeling_block: ttt_linear, ttt_mlp, ttt_linear_base, ttt_mlp_base")
    jax.add_argument("--vocab-size", type=int, default=32000)
    jax.add_argument("--ttt-base-lr", type=float, default=None, help="default: 1.0 linear, 0.1 mlp")
    jax.add_argument("--mini-batch-size", type=int, default=None)
    jax.add_argument(
        "--pre-conv",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default: on for the Mamba blocks, off for *_base",
    )
    jax.add_argument("--untied", action="store_true", help="the checkpoint has its own lm_head")
    jax.add_argument("--overwrite", action="store_true")
    jax.set_defaults(func=convert_jax)
    official = kinds.add_parser("official", help="a save_pretrained folder of ours -> the official PyTorch format")
    official.add_argument("model")
    official.add_argument("out")
    official.add_argument("--overwrite", action="store_true")
    official.set_defaults(func=convert_official)
