"""`ttt` command line: demo, train, eval, generate, save-pretrained, export, lm-eval, data, quickstart, bench,
convert, serve."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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
    # transformers' @wraps(nn.Module.to) on PreTrainedModel.to hides the bound method from mypy
    model = TTTForCausalLM(config).to(dtype).eval()  # type: ignore[arg-type]
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
        logits = model(prompt, cache=cache, use_cache=True).logits[:, -1]
        prefill_s = time.perf_counter() - start
        tokens, cached_logits = [], []
        start = time.perf_counter()
        for _ in range(args.new_tokens):
            cached_logits.append(logits)
            nxt = logits.argmax(-1, keepdim=True)
            tokens.append(nxt)
            logits = model(nxt, cache=cache, use_cache=True).logits[:, -1]
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

    same = torch.equal(torch.cat(tokens, 1), torch.cat(recomputed_tokens, 1)) if tokens else True
    gap = (torch.stack(cached_logits) - torch.stack(recomputed_logits)).abs().max().item() if tokens else 0.0
    steps = max(args.new_tokens, 1)
    print(f"prefill:   {args.batch * args.prompt_len / prefill_s:10.0f} tokens/s  ({prefill_s * 1e3:.1f} ms)")
    state_mb = cache.nbytes() / 1e6
    print(f"decode:    {decode_s / steps * 1e3:10.2f} ms/token with the cache (state {state_mb:.2f} MB, fixed)")
    print(f"recompute: {recompute_s / steps * 1e3:10.2f} ms/token without it")
    print(f"parity:    cached tokens {'==' if same else '!='} recomputed tokens; max |logit diff| {gap:.2e}")
    return 0 if same else 1


def train(args: argparse.Namespace) -> int:
    from .train.config import load_run_config
    from .train.trainer import Trainer

    cfg = load_run_config(args.config, args.overrides)
    Trainer(cfg, resume=args.resume, progress=not args.quiet).run()
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from .eval import evaluate_run

    results = evaluate_run(args.paths, args.out, max_windows=args.max_windows, diagnostics=not args.no_diagnostics)
    for r in results:
        bpb = f"  bits/byte {r['bits_per_byte']:.3f}" if "bits_per_byte" in r else ""
        print(f"{r['name']}: val loss {r['val_loss']:.4f}  ppl {r['val_ppl']:.2f}{bpb}  ({r['windows']} windows)")
    print(
        f"wrote {args.out}/eval.json, per_position.csv/.png"
        + (", inner_loop_*.csv/.png" if not args.no_diagnostics else "")
    )
    return 0


def generate(args: argparse.Namespace) -> int:
    from .eval import load_run_model
    from .generate import generate_text
    from .models import TTTForCausalLM, attach_decode_artifacts, quantize_weights

    model, _, data, ckpt = load_run_model(args.path)
    print(f"[{ckpt}]", file=sys.stderr)
    if isinstance(model, TTTForCausalLM):
        quantize_weights(model, args.weights)
        attach_decode_artifacts(model, ckpt)  # `ttt export` packages, when there are any
    if args.load_state is None:
        print(args.prompt, end="")
    generate_text(
        model,
        data.tokenizer,
        args.prompt,
        args.max_new_tokens,
        args.temperature,
        args.top_k,
        args.top_p,
        args.seed,
        save_state=args.save_state,
        load_state=args.load_state,
    )
    return 0


def check_generate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Sampling options in their ranges (exit 2 naming the option); the prompt must be valid UTF-8."""
    if args.temperature < 0:
        parser.error(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if not 0 < args.top_p <= 1:
        parser.error(f"--top-p must be in (0, 1] (1 = off), got {args.top_p}")
    if args.top_k < 0:
        parser.error(f"--top-k must be >= 0 (0 = off), got {args.top_k}")
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError:
        # the shell passed bytes that are not UTF-8; Python kept them as surrogate escapes
        raw = args.prompt.encode("utf-8", "surrogateescape")
        parser.error(f"--prompt is not valid UTF-8 text (bytes {raw[:16]!r}...): pass text in UTF-8")


def save_pretrained(args: argparse.Namespace) -> int:
    from .eval import load_run_model
    from .train.pretrained import save_pretrained_folder

    model, _, data, ckpt = load_run_model(args.path)
    out = save_pretrained_folder(model, data.tokenizer, args.out, overwrite=args.overwrite)
    print(f"wrote {out} from {ckpt} (AutoModelForCausalLM / AutoTokenizer.from_pretrained after `import ttt`)")
    return 0


def lm_eval(argv: list[str]) -> int:
    """lm-evaluation-harness's own command line, with ttt imported first (so `--model hf` finds the TTT classes)."""
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        print("ttt lm-eval: error: lm-evaluation-harness is not installed: pip install lm-eval", file=sys.stderr)
        return 2
    import ttt  # noqa: F401  (registers TTTConfig / TTTForCausalLM with the Auto classes)

    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def data_command(args: argparse.Namespace) -> int:
    from .data import load_prepared, prepare

    if args.action == "prepare":
        data = prepare(
            args.source,
            args.out,
            tokenizer=args.tokenizer,
            text_field=args.text_field,
            seq_len=args.seq_len,
            val_fraction=args.val_fraction,
            overwrite=args.overwrite,
        )
    else:
        data = load_prepared(args.source)
    print(data)
    return 0


def quickstart(args: argparse.Namespace) -> int:
    from .quickstart import quickstart as run

    run(args.out, steps=args.steps, seq_len=args.seq_len, batch_size=args.batch_size)
    return 0


def export(args: argparse.Namespace) -> int:
    """AOT decode packages for a model folder (save_pretrained) or a run's newest / a given checkpoint."""
    from .models import TTTForCausalLM, export_decode

    path = Path(args.path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        model, folder = TTTForCausalLM.from_pretrained(path), path
    else:
        from .eval import load_run_model

        model, _, _, folder = load_run_model(path)
    if not isinstance(model, TTTForCausalLM):
        raise ValueError(f"{path} holds a {type(model).__name__}: ttt export builds the decode step of TTT models")
    start = time.time()
    manifest = export_decode(model.eval(), folder, args.batch_sizes, args.dtypes, print, args.weights, args.linears)
    print(f"wrote {manifest.parent} in {time.time() - start:.0f} s: from_pretrained, ttt generate and ttt serve use it")
    return 0


def bench(args: argparse.Namespace) -> int:
    from .bench.cli import main as run

    return run(args)


def serve_command(args: argparse.Namespace) -> int:
    from .serve import ServeOptions, serve

    for name in ("max_batch", "max_queue", "max_tokens", "max_body_bytes", "prefill_chunk"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.grace < 0:
        raise ValueError(f"--grace must be >= 0 seconds, got {args.grace}")
    return serve(
        ServeOptions(
            model_dir=args.model_dir,
            host=args.host,
            port=args.port,
            max_batch=args.max_batch,
            max_queue=args.max_queue,
            session_store=args.session_store,
            session_cache_mb=args.session_cache_mb,
            api_keys=args.api_key or [],
            max_tokens=args.max_tokens,
            max_prompt_tokens=args.max_prompt_tokens,
            max_body_bytes=args.max_body_bytes,
            prefill_chunk=args.prefill_chunk,
            prefill_budget=args.prefill_budget,
            grace_s=args.grace,
            threads=args.threads,
        )
    )


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

    from .train.config import options_help

    p = sub.add_parser(
        "train",
        help="train a model (overrides: --section.key=value, e.g. --train.steps=100)",
        description="Train a model. Every option below is set as --section.key=value (or in a --config file); values "
        "out of range are refused before anything runs.",
        epilog="run options:\n" + options_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="a .toml / .yaml / .json run config")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in train.out_dir")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=train)

    p = sub.add_parser("eval", help="perplexity, per-position loss and inner-loop diagnostics of checkpoints")
    p.add_argument("paths", nargs="+", help="run folders (their newest checkpoint) or checkpoint folders")
    p.add_argument("--out", default="eval_out")
    p.add_argument("--max-windows", type=int, default=64)
    p.add_argument("--no-diagnostics", action="store_true")
    p.set_defaults(func=evaluate)

    p = sub.add_parser("generate", help="stream text from a checkpoint")
    p.add_argument("path", help="a run folder or a checkpoint folder")
    p.add_argument("--prompt", default="")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy")
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-state", help="write the session after the prompt (state, tokens, RNG) to this file")
    p.add_argument("--load-state", help="continue a saved session (the prompt is taken from it)")
    p.add_argument(
        "--weights",
        default="float32",
        choices=["float32", "bfloat16", "int8"],
        help="linear layers in this format for faster decode (the inner TTT state stays float32)",
    )
    p.set_defaults(func=generate)

    p = sub.add_parser(
        "save-pretrained", help="a checkpoint as a Hugging Face folder (weights, config, tokenizer) for other tools"
    )
    p.add_argument("path", help="a run folder (its newest checkpoint) or a checkpoint folder")
    p.add_argument("out", help="the folder to write (training writes RUN/final itself at its last step)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=save_pretrained)

    p = sub.add_parser(
        "export", help="AOT-compiled decode packages beside the weights (no Python per op, no compile at start-up)"
    )
    p.add_argument("path", help="a model folder (save_pretrained, e.g. RUN/final), a run folder or a checkpoint folder")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1], help="one package per batch size (default 1)")
    p.add_argument("--dtypes", nargs="+", default=["float32"], help="float32, bfloat16 or float64 (default float32)")
    p.add_argument(
        "--weights",
        nargs="+",
        default=["float32"],
        help="linear-layer weight formats, one package each: float32, bfloat16, int8 (the rest stays float32)",
    )
    p.add_argument(
        "--linears",
        choices=["auto", "streaming", "matmul"],
        default="auto",
        help="how packages compute the float32/bfloat16 linear layers: auto (default) streams the weights through a "
        "reduction up to 2 rows per step, where it reads them faster than the matrix product, and multiplies above",
    )
    p.set_defaults(func=export)

    sub.add_parser(
        "lm-eval",
        help="lm-evaluation-harness with ttt imported: ttt lm-eval run --model hf --model_args pretrained=DIR ...",
        add_help=False,
    )

    p = sub.add_parser("data", help="prepare or inspect a tokenized corpus")
    p.add_argument("action", choices=["prepare", "inspect"])
    p.add_argument("source", help="prepare: bundled, a folder of .txt, a .jsonl or hf:NAME; inspect: a prepared folder")
    p.add_argument("out", nargs="?", default="data_out")
    p.add_argument("--tokenizer", default="byte")
    p.add_argument("--text-field", default="text")
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the documents held out for validation (one document: the last share of its text)",
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=data_command)

    p = sub.add_parser("quickstart", help="the main job: TTT-Linear vs Transformer++ on the bundled corpus")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(func=quickstart)

    from .bench.cli import add_arguments as add_bench_arguments

    p = sub.add_parser("bench", help="prefill / decode / training speed, memory and MFU vs Transformer++ and Mamba")
    add_bench_arguments(p)
    p.set_defaults(func=bench)

    p = sub.add_parser("serve", help="an OpenAI-compatible server with continuous batching and sessions")
    p.add_argument("model_dir", help="a model folder (save_pretrained + tokenizer, e.g. RUN/final) or a run folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=8, help="state slots, allocated once: rows decoded together")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting for a slot before 429")
    p.add_argument(
        "--session-store", default="ttt-sessions", help="a folder (default ./ttt-sessions) or redis://HOST:PORT/DB"
    )
    p.add_argument("--session-cache-mb", type=int, default=256, help="in-memory LRU in front of a folder store")
    p.add_argument(
        "--api-key",
        action="append",
        help="bearer key required on every endpoint but /health (repeatable; also read from $TTT_API_KEY)",
    )
    p.add_argument("--max-tokens", type=int, default=2048, help="the largest max_tokens a request may ask for")
    p.add_argument("--max-prompt-tokens", type=int, default=65536)
    p.add_argument("--max-body-bytes", type=int, default=4 << 20, help="request body size limit (413 beyond)")
    p.add_argument("--prefill-chunk", type=int, default=512, help="prompt tokens per row per scheduler iteration")
    p.add_argument("--prefill-budget", type=int, default=2048, help="prompt tokens over all rows per iteration")
    p.add_argument("--grace", type=float, default=30.0, help="seconds running requests get after SIGTERM")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=serve_command)

    from .convert.cli import add_parser as add_convert_parser

    add_convert_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .data import DataError
    from .train.config import ConfigError

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lm-eval"]:  # everything after it is lm-eval's own command line
        return lm_eval(argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "train":
        bad = [e for e in extra if not (e.startswith("--") and "=" in e and "." in e.split("=", 1)[0])]
        if bad:
            parser.error(f"unrecognised argument(s) {' '.join(bad)}; overrides look like --section.key=value")
        args.overrides = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "generate":
        check_generate_args(parser, args)
    try:
        if args.command == "demo":
            from .models import get_preset

            get_preset(args.preset)
            if args.batch < 1 or args.prompt_len < 1 or args.new_tokens < 0:
                parser.error("--batch and --prompt-len must be >= 1, --new-tokens >= 0")
        return args.func(args)
    except (ConfigError, DataError, FileNotFoundError, FileExistsError) as err:
        print(f"ttt {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        if args.command in ("demo",):
            parser.error(str(err))
        print(f"ttt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
