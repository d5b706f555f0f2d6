"""Write a model in the official ttt-lm-pytorch format (config.json with its fields, model.safetensors with its
parameter names), so users can cross-check against the official code."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save_file

from ..atomic import atomic_dir
from ..models.modeling import TTTForCausalLM
from ..models.official import OFFICIAL_FIELDS, RENAMES


def to_official(model: TTTForCausalLM, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    ours_to_official = {ours: official for official, ours in RENAMES.items()}
    state = {ours_to_official.get(k, k): v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    config = {name: getattr(model.config, name) for name in OFFICIAL_FIELDS}
    config.update(model_type="ttt", architectures=["TTTForCausalLM"], scan_checkpoint_group_size=0, use_cache=False)
    with atomic_dir(out_dir, overwrite) as tmp:
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
    return Path(out_dir)
