"""A trained model as a Hugging Face folder: `save_pretrained` weights and config, the tokenizer as a
`PreTrainedTokenizerFast`, and a generation config with the tokenizer's real special-token ids.

What clients load with `AutoModelForCausalLM.from_pretrained(DIR)` / `AutoTokenizer.from_pretrained(DIR)` after
`import ttt` (lm-evaluation-harness through `ttt lm-eval`, transformers' pipelines and Trainer). The trainer writes
one to `RUN/final` when training ends; `ttt save-pretrained RUN_OR_CHECKPOINT OUT` makes one from any checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import PreTrainedModel
from transformers.utils import logging as hf_logging

from ..atomic import atomic_dir
from ..data import Tokenizer, to_hf_tokenizer
from ..integrity import write_manifest

FINAL_FOLDER = "final"  # RUN/final: written by the trainer at the last step
TTT_TOKENIZER_FOLDER = "ttt_tokenizer"  # our own tokenizer files (what `ttt` commands load), beside HF's


def save_pretrained_folder(
    model: PreTrainedModel,
    tokenizer: Tokenizer,
    out: str | os.PathLike,
    state_dict: dict[str, torch.Tensor] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `model` (a transformers PreTrainedModel: a TTT model or a baseline) and `tokenizer` into `out`,
    atomically (built beside it, then renamed into place). `state_dict`: the full weights when the model's own are
    sharded (FSDP). The config's and generation config's bos/eos ids become the tokenizer's, and the generation
    config pads with EOS; the model's own pad_token_id (its embedding's padding_idx) is left as it is.

    Raises FileExistsError when `out` exists and is not empty, unless `overwrite`."""
    hf_tokenizer = to_hf_tokenizer(tokenizer)
    model.config.bos_token_id, model.config.eos_token_id = tokenizer.bos_id, tokenizer.eos_id
    generation = model.generation_config
    generation.bos_token_id, generation.eos_token_id = tokenizer.bos_id, tokenizer.eos_id
    generation.pad_token_id = tokenizer.eos_id
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one small file: no "Writing model shards" bar inside the trainer's
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            model.save_pretrained(tmp, state_dict=state_dict)
            hf_tokenizer.save_pretrained(tmp)
            tokenizer.save(tmp / TTT_TOKENIZER_FOLDER)
            write_manifest(tmp)  # over the tokenizer files too
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return Path(out)
