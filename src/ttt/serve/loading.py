"""What `ttt serve` serves: a model folder (`save_pretrained` with its tokenizer, e.g. RUN/final) or a training run /
checkpoint folder (loaded as `ttt generate` loads it)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data import Tokenizer, load_tokenizer
from ..train.pretrained import TTT_TOKENIZER_FOLDER


def load_served_model(path: str | Path) -> tuple[nn.Module, Tokenizer, str]:
    """(model in eval mode, tokenizer, name) for MODEL_DIR. The name is the folder's name (a run's final folder is
    named after its run).

    Raises FileNotFoundError when `path` is neither kind of folder, ValueError when the model is not a TTT model
    (a baseline has no fixed-size state to serve)."""
    path = Path(path)
    if (path / "config.json").is_file() and (path / TTT_TOKENIZER_FOLDER).is_dir():
        from transformers import AutoModelForCausalLM

        import ttt  # noqa: F401  (registers the TTT classes with the Auto classes)

        model: nn.Module = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
        tokenizer = load_tokenizer(path / TTT_TOKENIZER_FOLDER)
    else:
        from ..eval import load_run_model

        model, _, data, _ = load_run_model(path)
        tokenizer = data.tokenizer
    if not hasattr(model, "allocate_inference_cache"):
        raise ValueError(
            f"{path} holds a {type(model).__name__}, not a TTT model: ttt serve serves models with a fixed-size state "
            "(serve a baseline with `transformers serve`)"
        )
    name = path.resolve().parent.name if path.name == "final" else path.resolve().name
    return model.eval(), tokenizer, name


@torch.no_grad()
def describe_model(model: nn.Module) -> str:
    """One line: class, parameters, dtype, device."""
    param = next(model.parameters())
    n = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__} {n / 1e6:.2f}M params, {param.dtype}, {param.device}"
