"""`TTTConfig`: one typed config with the official field names, validated where it is made, and named presets.

Presets: the paper's sizes on the Mamba backbone (its default) as `ttt-linear-125m`, `ttt-mlp-1.3b`, ...; a `-T`
suffix for the Transformer backbone (`ttt-mlp-350m-T`); `tiny` sizes for tests and smoke runs. The JAX code's block
names are aliases: `ttt_linear` / `ttt_mlp` (Mamba backbone), `ttt_linear_base` / `ttt_mlp_base` (Transformer).
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

from ..layers import INNER_MODELS, TTT_LAYERS, TTTLayerConfig
from ..layers import LAYER_DEFAULTS as _LAYER

PRESET_LAYER_TYPES = ("linear", "mlp")


class TTTConfig(PreTrainedConfig):
    r"""Configuration of a TTT causal LM. Defaults are the official ttt-lm-pytorch defaults (Transformer backbone).

    Backbone switches, kept separate as in the JAX code: `pre_conv` (causal conv block before each TTT layer),
    `share_qk` (one Q/K projection followed by two causal convs), `use_gate` (gelu_tanh(W_g x) ⊙ output),
    `tie_word_embeddings`. `remat_mini_batch_group_size` (the JAX name and meaning): mini-batches per gradient
    checkpoint group in the dual form, 0 = off. `ttt_implementation`: "auto" (dual for several tokens, primal step
    for one), "compiled" (the same with each mini-batch / decode step through torch.compile: the fast path on CPU),
    "triton" (fused Triton kernels for TTT-Linear and TTT-MLP on CUDA: ttt.ops.triton, docs/triton.md), or force
    "dual", "primal" or "naive" (the slow oracle).

    Ablations: `inner_bias`, `inner_norm`, `inner_residual`, `learnable_init` (W0 learned or 0), `lr_gate` (learned
    η gate or the constant ttt_base_lr / head_dim), `token_factor` ("learned", "harmonic" 1/(i+1), "one").
    Inner optimizer: `inner_optimizer` ("gd" the paper, "momentum", "adam", "muon") with `inner_momentum` (β, β1 or
    μ), `inner_beta2` (Adam), `inner_lr` (the step size of adam and muon); `inner_weight_decay` (constant retention
    1 − λ) and `forget_gate` (learned retention). See ttt.layers.ttt and ttt.ops.inner_optim.

    Inference: `ttt_prefill_chunk_size` (tokens, 0 = off): a forward without autograd over more tokens than this reads
    them in chunks of this many through the whole model, carrying the state (exact: the model is recurrent), so its
    time per token and its memory do not grow with the prompt length (`TTTModel.forward`; docs/fast_inference.md).
    """

    model_type = "ttt"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    vocab_size: int = 32000
    hidden_size: int = 2048
    intermediate_size: int = 5504
    num_hidden_layers: int = 24
    num_attention_heads: int = 32
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = _LAYER["initializer_range"]
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = True
    rope_theta: float = _LAYER["rope_theta"]
    use_gate: bool = _LAYER["use_gate"]
    share_qk: bool = _LAYER["share_qk"]
    ttt_layer_type: str = "linear"
    ttt_base_lr: float = _LAYER["ttt_base_lr"]
    mini_batch_size: int = _LAYER["mini_batch_size"]
    pre_conv: bool = False
    conv_kernel: int = _LAYER["conv_kernel"]
    remat_mini_batch_group_size: int = _LAYER["remat_mini_batch_group_size"]
    ttt_implementation: str = _LAYER["implementation"]
    # ablation switches (the paper's Table 1), default: the paper's layer
    inner_bias: bool = _LAYER["inner_bias"]
    inner_norm: bool = _LAYER["inner_norm"]
    inner_residual: bool = _LAYER["inner_residual"]
    learnable_init: bool = _LAYER["learnable_init"]
    lr_gate: bool = _LAYER["lr_gate"]
    token_factor: str = _LAYER["token_factor"]
    # beyond the paper: the inner optimizer and retention (ttt.ops.inner_optim)
    inner_optimizer: str = _LAYER["inner_optimizer"]
    inner_momentum: float = _LAYER["inner_momentum"]
    inner_beta2: float = _LAYER["inner_beta2"]
    inner_lr: float = _LAYER["inner_lr"]
    inner_weight_decay: float = _LAYER["inner_weight_decay"]
    forget_gate: bool = _LAYER["forget_gate"]
    # ttt_layer_type "generic": the inner model by name (ttt.layers.learners.INNER_MODELS)
    inner_model: str = "swiglu"
    # inference only (no autograd): longer inputs run through the model in chunks of this many tokens; 0 = off
    ttt_prefill_chunk_size: int = 2048

    def __post_init__(self, **kwargs):
        self._validate_ttt()
        super().__post_init__(**kwargs)

    def _validate_ttt(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TTTConfig.{name} must be a positive integer, got {value!r}")

        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            positive(name)

        def number(name: str, minimum: float, strict: bool) -> None:
            value = getattr(self, name)
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or value < minimum
                or (strict and value == minimum)
            ):
                bound = f"> {minimum}" if strict else f">= {minimum}"
                raise ValueError(f"TTTConfig.{name} must be a number {bound}, got {value!r}")

        number("rms_norm_eps", 0.0, strict=True)
        from transformers.activations import ACT2FN

        if self.hidden_act not in ACT2FN:
            raise ValueError(f"TTTConfig.hidden_act {self.hidden_act!r} is not a known activation (e.g. 'silu')")
        # linear, mlp, generic (`inner_model`), nadaraya_watson, and any added with ttt.layers.register_ttt_layer
        if self.ttt_layer_type not in TTT_LAYERS:
            raise ValueError(
                f"TTTConfig.ttt_layer_type must be one of {tuple(TTT_LAYERS)}, got {self.ttt_layer_type!r}"
            )
        if self.ttt_layer_type == "generic":
            if self.inner_model not in INNER_MODELS:
                raise ValueError(
                    f"TTTConfig.inner_model must be one of {tuple(INNER_MODELS)}, got {self.inner_model!r}"
                )
        chunk = self.ttt_prefill_chunk_size
        if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 0:
            raise ValueError(f"TTTConfig.ttt_prefill_chunk_size must be an integer >= 0 (0: off), got {chunk!r}")
        if self.pre_conv and (not isinstance(self.conv_kernel, int) or self.conv_kernel < 1):
            raise ValueError(f"TTTConfig.conv_kernel must be >= 1 with pre_conv, got {self.conv_kernel!r}")
        # every layer option, in the one place that defines them (the layers take the same object)
        try:
            TTTLayerConfig.from_config(self)
        except ValueError as err:
            raise ValueError(f"TTTConfig: {err}") from None

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TTTConfig:
        return get_preset(name, **overrides)


SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=256),
    "125m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12),
    "350m": dict(hidden_size=1024, intermediate_size=2736, num_hidden_layers=24, num_attention_heads=16),
    "760m": dict(hidden_size=1536, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
    "1.3b": dict(hidden_size=2048, intermediate_size=5504, num_hidden_layers=24, num_attention_heads=32),
}
BACKBONES: dict[str, dict[str, bool]] = {
    "mamba": dict(pre_conv=True, share_qk=True, use_gate=True),
    "transformer": dict(pre_conv=False, share_qk=False, use_gate=False),
}
# The paper trains TTT-MLP with a smaller base inner learning rate (JAX configs: 1.0 linear, 0.1 mlp).
BASE_LR = {"linear": 1.0, "mlp": 0.1}
JAX_BLOCK_ALIASES = {
    "ttt_linear": ("linear", "mamba"),
    "ttt_mlp": ("mlp", "mamba"),
    "ttt_linear_base": ("linear", "transformer"),
    "ttt_mlp_base": ("mlp", "transformer"),
}


def preset_names() -> list[str]:
    names = []
    for layer in PRESET_LAYER_TYPES:
        for size in SIZES:
            names += [f"ttt-{layer}-{size}", f"ttt-{layer}-{size}-T"]
    return names


def get_preset(name: str, **overrides) -> TTTConfig:
    """`ttt-{linear,mlp}-{tiny,125m,350m,760m,1.3b}[-T]`, or a JAX block name with a size (`ttt_mlp_base-125m`)."""
    base, _, size = name.rpartition("-") if name.split("-")[0] in JAX_BLOCK_ALIASES else ("", "", "")
    if base in JAX_BLOCK_ALIASES:
        layer, backbone = JAX_BLOCK_ALIASES[base]
    else:
        parts = name.split("-")
        backbone = "transformer" if parts[-1] == "T" else "mamba"
        parts = parts[:-1] if parts[-1] == "T" else parts
        if len(parts) != 3 or parts[0] != "ttt" or parts[1] not in PRESET_LAYER_TYPES:
            raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
        layer, size = parts[1], parts[2]
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} in preset {name!r}; sizes: {', '.join(SIZES)}")
    fields: dict[str, Any] = dict(
        ttt_layer_type=layer, ttt_base_lr=BASE_LR[layer], **SIZES[size], **BACKBONES[backbone]
    )
    fields.update(overrides)
    return TTTConfig(**fields)
