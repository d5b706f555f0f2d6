"""The MQAR model (Zoology's recipe): token embedding, L blocks of [short causal conv, sequence mixer] with pre-norm
residuals, no MLP, no positional embedding, a final LayerNorm and an output head tied to the embedding.

    h ← h + conv(LN(h));   h ← h + mixer(LN(h))          per block, h [B, T, d]
    logits = LN(h)[labelled] Eᵀ                           only at the labelled positions: [M, V]

Computing logits only where a label is (M = B·N rows instead of B·T) gives the same loss and accuracy and removes
most of the cost of the V-way head.

Mixers (`MIXERS`), all with 2 heads by default:

    attention         causal softmax attention (SDPA), no positional encoding
    ttt-linear        TTTLinear, mini-batch 16, the paper's layer (bias, LN, residual, learned W0, η gate, tf)
    ttt-mlp           TTTMLP, mini-batch 16, ttt_base_lr 0.1 (the paper's base rate for TTT-MLP)
    mamba             transformers' MambaMixer (state 16, expand 2, conv 4), run by a sequential scan
    linear-attention  z = η tril(Q Kᵀ) V (Theorem 1's form), ttt.experiments.mixers.LinearAttentionLayer
    delta-rule        W_t = W_{t−1} − η k_tᵀ(k_t W_{t−1} − v_t), z_t = q_t W_t: TTT-Linear with mini-batch 1, no
                      bias, LN or residual (ttt.experiments.mixers.DeltaRuleLayer, the chunked exact form)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ...layers import TTTMLP, CausalConv1d, TTTLinear
from ..fast_mamba import selective_ssm
from ..mixers import DeltaRuleLayer, LinearAttentionLayer
from .data import IGNORE

MIXERS = ("attention", "ttt-linear", "ttt-mlp", "mamba", "linear-attention", "delta-rule")
MAMBA_STATE, MAMBA_EXPAND, MAMBA_CONV = 16, 2, 4


class SoftmaxAttention(nn.Module):
    """Causal multi-head softmax attention: [B, T, d] -> [B, T, d]."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, seq_len, width = x.shape
        q, k, v = self.qkv(x).view(batch, seq_len, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # [B, H, T, D]
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(z.transpose(1, 2).reshape(batch, seq_len, width))


class MambaMixerWrapper(nn.Module):
    """transformers' MambaMixer (its parameters and init), run by `selective_ssm`: a plain sequential scan that is
    the same function as the mixer's own forward and ~100x faster than its pure-torch fallback on this CPU
    (tests/experiments/test_mqar.py checks the two agree). [B, T, d] -> [B, T, d]."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        from transformers import MambaConfig
        from transformers.models.mamba.modeling_mamba import MambaMixer

        config = MambaConfig(
            hidden_size=d_model,
            state_size=MAMBA_STATE,
            expand=MAMBA_EXPAND,
            conv_kernel=MAMBA_CONV,
            num_hidden_layers=1,
            vocab_size=8,
        )
        self.mixer = MambaMixer(config, layer_idx=0)

    def forward(self, x: Tensor) -> Tensor:
        return selective_ssm(self.mixer, x)


def build_mixer(name: str, d_model: int, num_heads: int, seq_len: int) -> nn.Module:
    if name == "attention":
        return SoftmaxAttention(d_model, num_heads)
    if name == "ttt-linear":
        return TTTLinear(d_model, num_heads, mini_batch_size=16)
    if name == "ttt-mlp":
        return TTTMLP(d_model, num_heads, mini_batch_size=16, ttt_base_lr=0.1)
    if name == "mamba":
        return MambaMixerWrapper(d_model)
    if name == "linear-attention":
        # RoPE at the position in the one mini-batch that holds the whole sequence, as the TTT special case
        return LinearAttentionLayer(d_model, num_heads, mini_batch_size=seq_len)
    if name == "delta-rule":
        return DeltaRuleLayer(d_model, num_heads, chunk=16)
    raise ValueError(f"unknown mixer {name!r}; mixers: {', '.join(MIXERS)}")


def mixer_state_bytes(name: str, d_model: int, num_heads: int, seq_len: int, num_layers: int = 2) -> int:
    """Bytes (float32) of one sequence's recurrent state in the mixers after `seq_len` tokens, all layers (the
    short convs before the mixers, d·3 values per layer and the same for every model, are not counted).

    attention: K and V caches, 2 T d. TTT with mini-batch b > 1: inner weights and their gradient sum, 2 H (inner);
    TTT-Linear inner = D² + D, TTT-MLP inner = 8 D² + 5 D. Delta rule (b = 1) and linear attention: H D².
    Mamba: d_inner · N (SSM) + d_inner · 3 (its conv), d_inner = 2 d."""
    heads, dim = num_heads, d_model // num_heads
    per_layer = {
        "attention": 2 * seq_len * d_model,
        "ttt-linear": 2 * heads * (dim * dim + dim),
        "ttt-mlp": 2 * heads * (8 * dim * dim + 5 * dim),
        "mamba": MAMBA_EXPAND * d_model * (MAMBA_STATE + MAMBA_CONV - 1),
        "linear-attention": heads * dim * dim,
        "delta-rule": heads * dim * dim,
    }
    if name not in per_layer:
        raise ValueError(f"unknown mixer {name!r}; mixers: {', '.join(MIXERS)}")
    return 4 * num_layers * per_layer[name]


class Block(nn.Module):
    def __init__(self, mixer: str, d_model: int, num_heads: int, seq_len: int, conv_kernel: int) -> None:
        super().__init__()
        self.conv_norm = nn.LayerNorm(d_model)
        self.conv = CausalConv1d(d_model, conv_kernel)
        self.mixer_norm = nn.LayerNorm(d_model)
        self.mixer = build_mixer(mixer, d_model, num_heads, seq_len)

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.conv(self.conv_norm(h))[0]
        return h + self.mixer(self.mixer_norm(h))


class MQARModel(nn.Module):
    """Embedding, `num_layers` conv + mixer blocks, final LN, tied head evaluated at labelled positions only."""

    def __init__(
        self,
        mixer: str,
        vocab_size: int,
        d_model: int,
        seq_len: int,
        num_heads: int = 2,
        num_layers: int = 2,
        conv_kernel: int = 4,
    ) -> None:
        super().__init__()
        if mixer not in MIXERS:
            raise ValueError(f"unknown mixer {mixer!r}; mixers: {', '.join(MIXERS)}")
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(mixer, d_model, num_heads, seq_len, conv_kernel) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def hidden(self, inputs: Tensor) -> Tensor:
        """inputs [B, T] -> final hidden states [B, T, d] (after the last LayerNorm)."""
        h = self.embed(inputs)
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    def forward(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean cross-entropy over the labelled positions, the number of correct argmax answers, and the number of
        labelled positions. inputs, labels: [B, T]."""
        mask = labels != IGNORE
        h = self.hidden(inputs)[mask]  # [M, d]
        logits = h @ self.embed.weight.T  # [M, V]
        target = labels[mask]
        loss = F.cross_entropy(logits.float(), target)
        correct = (logits.argmax(-1) == target).sum()
        return loss, correct, mask.sum()
