"""The main job: train a small TTT-Linear and a same-size Transformer++ the same way on the bundled corpus, evaluate
both, print a sample from the TTT model, and write the per-position loss plot.

`ttt quickstart` runs it. It is orchestration over the packages (train, eval, generate), so it lives beside the CLI,
not inside one of them (ttt.train imports nothing from ttt.eval)."""

from __future__ import annotations

import time
from pathlib import Path

from .train import Trainer, load_run_config

MODELS = ("ttt-linear-tiny", "transformer++-tiny")


def quickstart(out_dir: str = "runs/quickstart", steps: int = 300, seq_len: int = 256, batch_size: int = 8) -> dict:
    from .eval import evaluate_run, load_run_model
    from .generate import generate_text
    from .train import count_params

    out = Path(out_dir)
    common = [
        f"--train.steps={steps}",
        f"--train.batch_size={batch_size}",
        f"--data.seq_len={seq_len}",
        f"--data.prepared_dir={out / 'data'}",
        f"--train.ckpt_every={max(1, steps // 3)}",
        "--train.log_every=25",
    ]
    timings = {}
    for name in MODELS:
        start = time.perf_counter()
        print(f"== training {name} ({steps} steps of {batch_size}×{seq_len} tokens)")
        cfg = load_run_config(None, [*common, f"--model.name={name}", f"--train.out_dir={out / name}"])
        result = Trainer(cfg, resume=True).run()
        timings[name] = time.perf_counter() - start
        # a rerun resumes from the final checkpoint and trains no step
        final = f"final training loss {result['history'][-1]['loss']:.3f}" if result["history"] else "already trained"
        print(f"   {result['params'] / 1e3:.0f}k parameters, {final}, {timings[name]:.0f} s")
    print("== evaluating on the held-out plays")
    results = evaluate_run([out / n for n in MODELS], out / "eval", max_windows=64, label=list(MODELS))
    for r in results:
        print(
            f"   {r['name']:20s} val loss {r['val_loss']:.3f}  ppl {r['val_ppl']:.2f}  "
            f"bits/byte {r.get('bits_per_byte', float('nan')):.3f}"
        )
    model, _, data, _ = load_run_model(out / MODELS[0])
    print(f"== sample from {MODELS[0]} ({count_params(model) / 1e3:.0f}k parameters), temperature 0.8:")
    prompt = "KING HENRY:\n"
    print(prompt, end="")
    generate_text(model, data.tokenizer, prompt, max_new_tokens=300, temperature=0.8, seed=0)
    print(
        f"== wrote {out / 'eval' / 'per_position.png'}, {out / 'eval' / 'eval.json'} and "
        f"{out / 'eval' / 'inner_loop_0.png'}"
    )
    return {"eval": results, "seconds": timings}
