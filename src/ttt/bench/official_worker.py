"""The prefill / decode / train jobs of `worker.py`, for the official ttt-lm-pytorch model (its `ttt.py`).

    OFFICIAL_PYTHON src/ttt/bench/official_worker.py '{"job": {...}, "official_path": ..., "config": {...}}'

It runs under the official code's own interpreter (transformers < 4.50), so it imports nothing from this project:
only `procstat` (standard library), found next to this file. The model comes from the official file's TTTConfig /
TTTForCausalLM with the field values of our matching preset (`config`); nothing of the official code is copied here.
Prefill computes the last token's logits only (base model, then lm_head on the last position), as our worker does.
"""

from __future__ import annotations

import importlib
import json
import statistics
import sys
import traceback

from procstat import emit, is_oom, limit_memory, peak_rss_bytes, reset_peak_rss, timed

WARMUP_DECODE_STEPS = 2


def official_cache_bytes(cache) -> int:
    """Bytes of the official implementation's cache tensors (its TTT params / gradients and conv states), measured."""
    tensors = [t for group in cache.ttt_params_dict.values() for t in group.values()]
    tensors += [t for group in cache.conv_states_dic.values() for t in group.values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def main(argv: list[str]) -> int:
    p = json.loads(argv[0])
    if p.get("mem_gib"):
        limit_memory(p["mem_gib"])
    sys.path.insert(0, p["official_path"])
    import torch

    # the official single-file implementation, not this project (imported by name: a static `import ttt` would
    # name this project's package to type checkers)
    official = importlib.import_module("ttt")

    torch.set_num_threads(p["threads"])
    job = p["job"]
    seq_len, batch = job["seq_len"], job["batch"]
    try:
        torch.manual_seed(p["seed"])
        model = official.TTTForCausalLM(official.TTTConfig(**p["config"])).eval()
        vocab = model.config.vocab_size

        def prefill(ids, cache):
            h = model.model(input_ids=ids, cache_params=cache, use_cache=cache is not None).last_hidden_state
            return model.lm_head(h[:, -1:])

        if job["kind"] == "prefill":
            ids = torch.randint(0, vocab, (1, seq_len))
            with torch.no_grad():
                prefill(ids if seq_len < p["long_from"] else ids[:, :512], official.TTTCache(model.model, 1))
                cache = official.TTTCache(model.model, 1)
                reset_peak_rss()
                seconds = timed(lambda: prefill(ids, cache))
                emit(
                    dict(
                        phase="prefill",
                        seconds=seconds,
                        peak_rss=peak_rss_bytes(),
                        state_bytes=official_cache_bytes(cache),
                    )
                )
                if p["decode_steps"] > 0:
                    token = torch.zeros(1, 1, dtype=torch.long)
                    reset_peak_rss()
                    times = []
                    for i in range(WARMUP_DECODE_STEPS + p["decode_steps"]):
                        t = timed(lambda: model(input_ids=token, cache_params=cache, use_cache=True))
                        if i >= WARMUP_DECODE_STEPS:
                            times.append(t)
                    emit(dict(phase="decode", seconds=statistics.median(times), times=times, peak_rss=peak_rss_bytes()))
        elif job["kind"] == "train":
            model.train()
            ids = torch.randint(0, vocab, (batch, seq_len))

            def step():
                model.zero_grad(set_to_none=True)
                model(input_ids=ids, labels=ids, use_cache=False).loss.backward()

            step()
            reset_peak_rss()
            emit(dict(phase="train", seconds=timed(step), peak_rss=peak_rss_bytes()))
        else:
            raise ValueError(f"the official worker runs prefill and train jobs, not {job['kind']!r}")
    except Exception as err:
        emit(dict(phase="failed", status="oom" if is_oom(err) else "error", error=f"{type(err).__name__}: {err}"[:300]))
        traceback.print_exc()
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
