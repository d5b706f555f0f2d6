"""Inference-state sizes by formula: `state_bytes` (a TTT model's `TTTCache`, constant in the context) and
`kv_cache_bytes` (a Transformer's KV cache, linear in it). The one place the TTT formula lives; tests check it equals
`TTTCache.nbytes()` (the bytes of the actual tensors)."""

from __future__ import annotations

from typing import Any


def state_bytes(config: Any, batch_size: int = 1, bytes_per_value: int = 4) -> int:
    """Bytes of a TTTCache for `config` (the formula `TTTCache.nbytes` measures): per layer and head the inner
    weights and their gradient sums (TTT-Linear: 2 (d² + d); TTT-MLP: 2 (8d² + 5d)), plus the conv states and the
    int64 offsets. Constant in the context length."""
    from ..ops import BUFFERS

    heads, d = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    bias = getattr(config, "inner_bias", True)
    inner = d * d + d * bias if config.ttt_layer_type == "linear" else 8 * d * d + 5 * d * bias
    # weights, gradient sums and the inner optimizer's buffers (momentum: 1, adam: 2)
    copies = 2 + len(BUFFERS[getattr(config, "inner_optimizer", "gd")])
    convs = (1 if config.pre_conv else 0) + (2 if config.share_qk else 0)
    values = copies * heads * inner + convs * config.hidden_size * (config.conv_kernel - 1)
    if getattr(config, "forget_gate", False) or getattr(config, "inner_weight_decay", 0.0):
        values += heads  # the retention accumulated in the current mini-batch
    extra_ints = 1 if getattr(config, "inner_optimizer", "gd") == "adam" else 0  # closed mini-batches
    per_layer = values * bytes_per_value + 8 * (1 + extra_ints)
    return batch_size * per_layer * config.num_hidden_layers


def kv_cache_bytes(
    num_layers: int, hidden_size: int, seq_len: int, batch_size: int = 1, bytes_per_value: int = 4
) -> int:
    """Bytes of a Transformer's KV cache (full multi-head attention) after `seq_len` tokens."""
    return 2 * num_layers * seq_len * hidden_size * batch_size * bytes_per_value
