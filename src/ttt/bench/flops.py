"""FLOP counts by formula (2 FLOPs per multiply-add; elementwise work is not counted unless said).

TTT inner loop, dual form, per token and head (head_dim d, mini-batch b), TTT-Linear (f(x) = x W + b, W [d, d]):

    Z = K W            2 b d²      keys through the start weights                       per mini-batch of b tokens
    Q Kᵀ               2 b² d      the read-outs' attention to the keys of the mini-batch
    Q W                2 b d²      the read-outs through the start weights
    (η ⊙ (Q Kᵀ + 1)) G 2 b² d      the η-weighted gradients of earlier tokens in the mini-batch
    Kᵀ (lr ⊙ G)        2 b d²      the gradient sum that closes the mini-batch
    ---------------------------------------------
    per token:         6 d² + 4 b d

TTT-MLP (f(x) = gelu(x W1 + b1) W2 + b2, hidden 4d): each of the linear form's three weight products happens for
both layers (2·(2 b d · 4d) each: 16 b d² per product → 48 b d²), the backward through W2 adds G2 W2ᵀ (8 b d²); the
two attention-like products are X̄_l X_lᵀ (2 b² d for layer 1, 8 b² d for layer 2, whose inputs are 4d wide) and
(η ⊙ ·) G_l (8 b² d for G1 of width 4d, 2 b² d for G2):

    per token:         56 d² + 20 b d

Both are the exact matmul count of `ttt.ops.ttt_dual` (tests/bench check them against torch's FlopCounterMode).
The issue's rounder "6 d² + 6 b d" for TTT-Linear also counts the η ⊙ and LayerNorm work as matmul-sized.

Model forward per token (T tokens, batch B): 2 × the weights of every nn.Linear except the LM head, plus

    TTT layer:      H · inner(d, b) + 2 C H            (above; 2 C H: the η gate x θ_lr, an einsum, not a Linear)
                    + 2 k C per causal conv (Mamba backbone: 3 convs)
    attention:      2 · C · (T + 1)                    per layer, causal: token t attends to t keys (QKᵀ and AV)
    Mamba scan:     7 · E · N                          per layer (E = expand·C channels, state N; elementwise,
                                                       counted because it is the scan's work), + 2 k E for the conv
    LM head:        2 C V for each token whose logits are computed (prefill: the last one; training: all)

Training = 3 × forward (backward ≈ 2 × forward). MFU = forward FLOPs / time / the GEMM rate measured in the same run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def ttt_inner_flops(layer: str, head_dim: int, mini_batch_size: int) -> int:
    """Matmul FLOPs of the dual form per token and head: 6d² + 4bd (linear), 56d² + 20bd (mlp)."""
    d, b = head_dim, mini_batch_size
    if layer == "linear":
        return 6 * d * d + 4 * b * d
    if layer == "mlp":
        return 56 * d * d + 20 * b * d
    raise ValueError(f"no FLOP formula for TTT layer type {layer!r}; known: linear, mlp")


def attention_flops(seq_len: int, hidden_size: int) -> float:
    """Causal attention FLOPs per token per layer, averaged over a prefill of seq_len tokens: 2 C (T + 1)."""
    return 2.0 * hidden_size * (seq_len + 1)


def linear_weights(model: PreTrainedModel) -> tuple[int, int]:
    """(weights of nn.Linear layers except the LM head, weights of the LM head)."""
    head = model.get_output_embeddings()
    body = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear) and m is not head)
    return body, (head.weight.numel() if head is not None else 0)


def mixer_flops(model: PreTrainedModel, family: str, seq_len: int) -> float:
    """FLOPs per token of the sequence mixers outside nn.Linear layers (inner loop, attention, scan, convs)."""
    cfg = model.config
    layers, width = cfg.num_hidden_layers, cfg.hidden_size
    if family in ("ttt", "official"):
        heads = cfg.num_attention_heads
        inner = heads * ttt_inner_flops(cfg.ttt_layer_type, width // heads, cfg.mini_batch_size)
        inner += 2 * width * heads if getattr(cfg, "lr_gate", True) else 0
        convs = int(cfg.pre_conv) + 2 * int(cfg.share_qk)
        return layers * (inner + convs * 2 * cfg.conv_kernel * width)
    if family == "transformer++":
        return layers * attention_flops(seq_len, width)
    if family == "mamba":
        return layers * (7 * cfg.intermediate_size * cfg.state_size + 2 * cfg.conv_kernel * cfg.intermediate_size)
    raise ValueError(f"no FLOP formula for model family {family!r}")


def forward_flops(model: PreTrainedModel, family: str, seq_len: int, batch: int = 1, logits_tokens: int = 1) -> float:
    """Forward FLOPs of `model` over batch × seq_len tokens, logits computed for `logits_tokens` per row."""
    body, head = linear_weights(model)
    per_token = 2 * body + mixer_flops(model, family, seq_len)
    return batch * (seq_len * per_token + logits_tokens * 2 * head)


def train_flops(model: PreTrainedModel, family: str, seq_len: int, batch: int = 1) -> float:
    """Forward + backward FLOPs of one training step: 3 × the forward with logits at every position."""
    return 3 * forward_flops(model, family, seq_len, batch, logits_tokens=seq_len)


def gemm_flops(m: int, k: int, n: int, batch: int = 1) -> int:
    """[batch, m, k] @ [batch, k, n]: 2 m k n per batch entry."""
    return 2 * batch * m * k * n
