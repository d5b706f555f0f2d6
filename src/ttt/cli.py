"""`ttt` command line: `ttt --version`, `ttt demo` (later: train, eval, generate, bench, convert)."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from . import __version__

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def demo(args: argparse.Namespace) -> int:
    """Build a small random TTT model, prefill a prompt, decode with the cache, and check the decoded tokens and
    logits against recomputing the whole sequence at every step (the uncached path)."""
    from .models import TTTCache, TTTForCausalLM, get_preset

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = get_preset(args.preset)
    dtype = DTYPES[args.dtype]
    model = TTTForCausalLM(config).to(dtype).eval()
    n_params = sum(p.numel() for p in model.parameters())
    prompt = torch.randint(0, config.vocab_size, (args.batch, args.prompt_len))
    print(
        f"ttt {__version__} demo: {args.preset} ({config.ttt_layer_type}, {n_params / 1e6:.2f}M params, {args.dtype})"
    )
    print(
        f"batch {args.batch}, prompt {args.prompt_len} tokens, {args.new_tokens} new tokens (greedy), "
        f"{torch.get_num_threads()} threads"
    )

    with torch.no_grad():
        cache = TTTCache.from_model(model, args.batch)
        start = time.perf_counter()
        logits = model(prompt, past_key_values=cache, use_cache=True).logits[:, -1]
        prefill_s = time.perf_counter() - start
        tokens, cached_logits = [], []
        start = time.perf_counter()
        for _ in range(args.new_tokens):
            cached_logits.append(logits)
            nxt = logits.argmax(-1, keepdim=True)
            tokens.append(nxt)
            logits = model(nxt, past_key_values=cache, use_cache=True).logits[:, -1]
        decode_s = time.perf_counter() - start

        seq = prompt
        recomputed_logits, recomputed_tokens = [], []
        start = time.perf_counter()
        for _ in range(args.new_tokens):
            last = model(seq, use_cache=False).logits[:, -1]
            recomputed_logits.append(last)
            nxt = last.argmax(-1, keepdim=True)
            recomputed_tokens.append(nxt)
            seq = torch.cat([seq, nxt], 1)
        recompute_s = time.perf_counter() - start

    same = torch.equal(torch.cat(tokens, 1), torch.cat(recomputed_tokens, 1))
    gap = (torch.stack(cached_logits) - torch.stack(recomputed_logits)).abs().max().item()
    steps = max(args.new_tokens, 1)
    print(f"prefill:   {args.batch * args.prompt_len / prefill_s:10.0f} tokens/s  ({prefill_s * 1e3:.1f} ms)")
    print(
        f"decode:    {decode_s / steps * 1e3:10.2f} ms/token with the cache (state {cache.nbytes() / 1e6:.2f} MB, "
        "fixed)"
    )
    print(f"recompute: {recompute_s / steps * 1e3:10.2f} ms/token without it")
    print(f"parity:    cached tokens {'==' if same else '!='} recomputed tokens; max |logit diff| {gap:.2e}")
    return 0 if same else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttt", description="Test-Time Training (TTT) sequence models")
    parser.add_argument("--version", action="version", version=f"ttt {__version__}")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("demo", help="prefill + cached generation on a small random model, with a parity check")
    p.add_argument("--preset", default="ttt-linear-tiny", help="a preset name (see ttt.preset_names())")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--prompt-len", type=int, default=100)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=demo)
    from .convert.cli import add_parser as add_convert_parser

    add_convert_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        from .models import get_preset

        if args.command == "demo":
            get_preset(args.preset)
            if args.batch < 1 or args.prompt_len < 1 or args.new_tokens < 0:
                parser.error("--batch and --prompt-len must be >= 1, --new-tokens >= 0")
    except ValueError as err:
        parser.error(str(err))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
