"""lm-evaluation-harness on a trained run's final folder, the documented way (`ttt lm-eval run --model hf ...` in its
own process): loglikelihood items and rolling perplexity from the bundled corpus; batch size 1 equals 4, and both
equal the log-likelihoods computed with the model directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ttt.cli import main
from ttt.eval.lm_eval_tasks import bundled_items, bundled_passages, write_tasks

pytest.importorskip("lm_eval")

TASKS = ("ttt_bundled_ll", "ttt_bundled_rolling")


@pytest.fixture(scope="module")
def run_and_tasks(tmp_path_factory, bundled_bytes):
    root = tmp_path_factory.mktemp("lm_eval")
    run = root / "run"
    code = main(
        ["train", f"--train.out_dir={run}", f"--data.prepared_dir={bundled_bytes}", "--train.steps=30", "--quiet"]
        + ["--train.batch_size=4", "--data.seq_len=128"]
    )
    assert code == 0 and (run / "final" / "tokenizer.json").is_file()
    items, passages = bundled_items(count=8), bundled_passages(count=4, length=700)
    return run / "final", write_tasks(root / "tasks", items, passages), items, passages


def lm_eval(model_dir: Path, tasks: Path, batch_size: int) -> dict[str, list]:
    """Per-item log-likelihoods of both tasks from `ttt lm-eval` in a fresh process (no `import ttt` beforehand)."""
    out = tasks / f"out_bs{batch_size}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tasks / "datasets_cache")}
    command = [sys.executable, "-m", "ttt.cli", "lm-eval", "run", "--model", "hf"]
    command += ["--model_args", f"pretrained={model_dir},dtype=float32", "--tasks", ",".join(TASKS)]
    command += ["--include_path", str(tasks), "--batch_size", str(batch_size), "--device", "cpu"]
    command += ["--output_path", str(out), "--log_samples"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    found = {}
    for name in TASKS:
        (path,) = out.rglob(f"samples_{name}_*.jsonl")
        rows = sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda r: r["doc_id"])
        found[name] = [row["filtered_resps"][0] for row in rows]  # ll: [logprob, greedy]; rolling: logprob
    return found


@torch.no_grad()
def direct(model_dir: Path, items: list[dict], docs: list[dict]) -> dict[str, list]:
    """The same quantities from the model itself: the continuation's summed log-probability after the context (no
    BOS: lm-eval encodes the context as the tokenizer does), and each document's after BOS (one rolling window)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def scored(prefix: list[int], target: list[int]) -> tuple[float, bool]:
        ids = torch.tensor([prefix + target])
        logprobs = model(ids, use_cache=False).logits[0, len(prefix) - 1 : -1].log_softmax(-1)
        picked = logprobs.gather(-1, torch.tensor(target)[:, None])
        return picked.sum().item(), bool((logprobs.argmax(-1) == torch.tensor(target)).all())

    ll = [scored(tokenizer(i["context"]).input_ids, tokenizer(i["continuation"]).input_ids) for i in items]
    rolling = [scored([tokenizer.bos_token_id], tokenizer(d["text"]).input_ids)[0] for d in docs]
    return {"ttt_bundled_ll": ll, "ttt_bundled_rolling": rolling}


def test_lm_eval_batch_sizes_agree_and_equal_the_model(run_and_tasks):
    model_dir, tasks, items, docs = run_and_tasks
    one, four = lm_eval(model_dir, tasks, 1), lm_eval(model_dir, tasks, 4)
    expected = direct(model_dir, items, docs)
    ll_one = [float(r[0]) for r in one["ttt_bundled_ll"]]
    ll_four = [float(r[0]) for r in four["ttt_bundled_ll"]]
    assert len(ll_one) == len(items)
    assert max(abs(a - b) for a, b in zip(ll_one, ll_four)) < 1e-5
    assert max(abs(a - e[0]) for a, e in zip(ll_one, expected["ttt_bundled_ll"])) < 1e-4
    assert [r[1] == "True" for r in one["ttt_bundled_ll"]] == [e[1] for e in expected["ttt_bundled_ll"]]
    roll_one, roll_four = (
        [float(r) for r in one["ttt_bundled_rolling"]],
        [float(r) for r in four["ttt_bundled_rolling"]],
    )
    assert len(roll_one) == len(docs)
    assert max(abs(a - b) for a, b in zip(roll_one, roll_four)) < 1e-5
    assert max(abs(a - e) / abs(e) for a, e in zip(roll_one, expected["ttt_bundled_rolling"])) < 1e-5
