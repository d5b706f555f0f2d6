"""Build a benchmark model from a ModelSpec and drive its inference state (TTTCache, or transformers' cache).

Every model family goes through the same three calls: `prefill(model, ids, cache)` (logits for the last token only,
as generation does), `decode_step(model, token, cache)` and `measured_state_bytes(cache)` (bytes of the actual state
tensors: the TTT state, the Transformer's KV cache, Mamba's conv and SSM states; `ttt.models.state_bytes` is the TTT
formula they are tested against).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..hf_compat import CACHE_NAME
from .spec import AOT, SIZES, ModelSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel

VOCAB = {"tiny": 256, "small": 1000}


def vocab_size(size: str) -> int:
    return SIZES[size][1].get("vocab_size", VOCAB.get(size, 32000))


def ttt_config(spec: ModelSpec):
    """Our TTTConfig for a TTT (or official) model spec, with the implementation set."""
    from ..models import get_preset

    overrides: dict[str, Any] = dict(SIZES[spec.size][1])
    overrides["vocab_size"] = vocab_size(spec.size)
    if spec.impl is not None:
        overrides["ttt_implementation"] = "auto" if spec.impl == AOT else spec.impl
    return get_preset(spec.preset, **overrides)


def build(spec: ModelSpec, seed: int = 0) -> PreTrainedModel:
    """A freshly initialised model (seeded: speed does not depend on the weights) in eval mode."""
    from ..models import TTTForCausalLM
    from ..train import build_model

    torch.manual_seed(seed)
    if spec.family == "ttt":
        return TTTForCausalLM(ttt_config(spec)).eval()
    if spec.family == "official":
        raise ValueError("the official model is built by its own worker (ttt.bench.official_worker)")
    base, overrides = SIZES[spec.size]
    # baselines match ttt-linear-SIZE; only the shape fields carry over (the FFN width is solved for)
    keep = ("hidden_size", "num_attention_heads") if spec.family == "transformer++" else ("hidden_size",)
    shape = {k: v for k, v in overrides.items() if k in keep}
    return build_model(f"{spec.family}-{base}", vocab_size(spec.size), shape).eval()


def attach_packages(model: PreTrainedModel, spec: ModelSpec, batch: int, dtype: str, folder: Path) -> float:
    """For an `aot` spec: save `model` in `folder`, build its decode package for `batch` rows (`ttt export`; with
    dtype bfloat16 the linear layers' weights become bfloat16 and the package is built for them) and attach it.
    Returns the export's seconds (0 for other specs, which are left as they are)."""
    if spec.impl != AOT:
        return 0.0
    from ..models import TTTForCausalLM, attach_decode_artifacts, export_decode, quantize_weights

    if not isinstance(model, TTTForCausalLM):
        raise TypeError(f"an aot spec builds a TTTForCausalLM, got {type(model).__name__}")
    weights = "bfloat16" if dtype == "bfloat16" else "float32"
    model.save_pretrained(folder)
    start = time.perf_counter()
    export_decode(model, folder, [batch], weights=[weights], log=lambda _: None)
    seconds = time.perf_counter() - start
    if attach_decode_artifacts(model, folder) != 1:
        raise RuntimeError(f"the package exported to {folder} was not attached")
    quantize_weights(model, weights)  # keeps the package: it was built for these weights in this format
    return seconds


def new_cache(model: PreTrainedModel, family: str, batch: int) -> Any:
    if family == "ttt":
        from ..models import TTTCache

        return TTTCache.from_model(model, batch)
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _cache_kwargs(family: str, cache: Any) -> dict[str, Any]:
    if CACHE_NAME == "cache":  # transformers >= 5.24: one name for every model
        return {"cache": cache}
    return {"cache_params": cache} if family == "mamba" else {"past_key_values": cache}


def prefill(model: PreTrainedModel, family: str, ids: Tensor, cache: Any | None) -> Tensor:
    """Logits of the last token [B, V] after reading ids [B, T] (into `cache` when given)."""
    kwargs = _cache_kwargs(family, cache) if cache is not None else {}
    return model(ids, use_cache=cache is not None, logits_to_keep=1, **kwargs).logits[:, -1]


def decode_step(model: PreTrainedModel, family: str, token: Tensor, cache: Any) -> Tensor:
    """One token per row [B, 1] through the cache: logits [B, V]."""
    return model(token, use_cache=True, logits_to_keep=1, **_cache_kwargs(family, cache)).logits[:, -1]


def measured_state_bytes(cache: Any) -> int:
    """Bytes of every tensor the inference state holds (TTTCache.nbytes for ours; the cache layers' tensors for
    transformers' caches: keys and values, or conv and recurrent states)."""
    if hasattr(cache, "nbytes") and callable(cache.nbytes):
        return int(cache.nbytes())
    total = 0
    for layer in cache.layers:
        for value in vars(layer).values():
            # keys / values are tensors; Mamba's conv and recurrent states are dicts of tensors
            items = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else [value]
            total += sum(t.numel() * t.element_size() for t in items if isinstance(t, Tensor))
    return total


def synthetic_cache(model: PreTrainedModel, family: str, batch: int, seq_len: int, seed: int = 0) -> Any:
    """The state after `seq_len` tokens without running the prefill, for decode timing at a large batch.

    Transformer++: a KV cache of seq_len random keys and values per layer (the exact shapes a prefill makes; the
    cost of a decode step depends on them, not on their values). TTT and Mamba: their state has a fixed size, so a
    real prefill of min(seq_len, 64) tokens makes it (same tensors, same per-step work as after seq_len tokens)."""
    if family != "transformer++":
        cache = new_cache(model, family, batch)
        ids = torch.randint(0, model.config.vocab_size, (batch, min(seq_len, 64)))
        prefill(model, family, ids, cache)
        return cache
    cfg = model.config
    cache = new_cache(model, family, batch)
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    gen = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    for layer in range(cfg.num_hidden_layers):
        k = torch.randn(batch, kv_heads, seq_len, head_dim, generator=gen, dtype=dtype)
        v = torch.randn(batch, kv_heads, seq_len, head_dim, generator=gen, dtype=dtype)
        cache.update(k, v, layer)
    return cache
