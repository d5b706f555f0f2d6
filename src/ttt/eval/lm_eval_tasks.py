"""Two local lm-evaluation-harness tasks made from the bundled corpus's held-out plays (no download; the validation
split of `ttt data prepare bundled` with its defaults, which training never sees):

- `ttt_bundled_ll` (loglikelihood): 64 next-word items from Henry VI part 3: a context of about 150 characters and
  the next word to score (`acc`: the word is the greedy continuation, as in LAMBADA);
- `ttt_bundled_rolling` (loglikelihood_rolling): 16 passages of 2,000 characters from Richard II, perplexity per byte
  and per word.

    python -m ttt.eval.lm_eval_tasks tasks/
    ttt lm-eval run --model hf --model_args pretrained=runs/x/final --include_path tasks/ \\
        --tasks ttt_bundled_ll,ttt_bundled_rolling --batch_size 4

Contexts end before a space (lm-eval would move trailing spaces into the continuation).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from ..data import bundled_documents, split_documents

TASK_YAML = {
    "ttt_bundled_ll": """task: ttt_bundled_ll
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/ttt_bundled_ll.jsonl
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{continuation}}}}"
metric_list:
  - metric: perplexity
  - metric: acc
""",
    "ttt_bundled_rolling": """task: ttt_bundled_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/ttt_bundled_rolling.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""",
}


def held_out_text(name: str) -> str:
    """The text of a held-out bundled document (validation split of `prepare`'s defaults: val_fraction 0.1, seed 0)."""
    (doc,) = [doc for doc in split_documents(bundled_documents(), 0.1, seed=0)["val"] if doc.id == name]
    return doc.text


def bundled_items(count: int = 64, context: int = 150) -> list[dict[str, str]]:
    """Next-word items from Henry VI part 3 (held out), one every 900 characters: about `context` characters ending
    before a space, and the next word (letters and apostrophes) with its leading space. lm-eval's `acc` is then the
    share of words the model's greedy decoding predicts whole (LAMBADA-style)."""
    text = held_out_text("henry_vi_part_3")
    items = []
    for i in range(1, count + 1):
        start = 900 * i
        cut = text.rfind(" ", start, start + context)
        while not re.match(r" [A-Za-z']+", text[cut:]):  # the next word must start right after the space
            cut = text.rfind(" ", start, cut)
        word = re.match(r" [A-Za-z']+", text[cut:])
        assert word is not None  # the loop above stops at a match
        items.append({"context": text[start:cut], "continuation": word.group(0)})
    return items


def bundled_passages(count: int = 16, length: int = 2000) -> list[dict[str, str]]:
    """Rolling-perplexity passages from Richard II (held out), every 5,000 characters."""
    text = held_out_text("richard_ii")
    return [{"text": text[5000 * i : 5000 * i + length]} for i in range(count)]


def write_tasks(folder: str | Path, items: list[dict[str, Any]] | None = None, passages=None) -> Path:
    """Write both tasks (YAML + JSONL) into `folder` (created); returns it. For `--include_path`."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    data = {"ttt_bundled_ll": items or bundled_items(), "ttt_bundled_rolling": passages or bundled_passages()}
    for name, rows in data.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        (folder / f"{name}.yaml").write_text(TASK_YAML[name].format(folder=folder), encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the bundled-corpus lm-eval tasks into a folder")
    parser.add_argument("folder")
    folder = write_tasks(parser.parse_args(argv).folder)
    print(f"wrote {', '.join(TASK_YAML)} to {folder} (use --include_path {folder})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
