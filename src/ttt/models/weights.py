"""Weights for memory-bound decode: the linear layers in bfloat16 or int8 (weight-only); what learns stays float32.

A decoded token reads every weight once, so ms/token is bounded below by the bytes of the weights over the memory
bandwidth. The linear layers (the q/k/v/o/gate projections, the SwiGLU MLPs and the LM head) hold nearly all of a
model's bytes but the embedding; storing them in bfloat16 halves those bytes, in int8 (torchao's weight-only int8,
one scale per output channel) quarters them. What the model learns at test time stays float32: the inner TTT state
and its updates, W0, the inner LayerNorm, the η gate and token factors, the norms, the convolutions and the
activations between layers (a bfloat16 linear layer casts its input to bfloat16, multiplies on the bf16 units, and
casts its output back). A tied LM head is untied first: the embedding stays float32 for the lookup.

    model = quantize_weights(TTTForCausalLM.from_pretrained(folder), "bfloat16")

The error against float32 is measured by `python -m ttt.bench.fast_decode` and bounded by tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHT_FORMATS = ("float32", "bfloat16", "int8")
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def bf16_linear(x: Tensor, weight: Tensor, bias: Tensor | None, product: Callable[..., Tensor] = F.linear) -> Tensor:
    """`product(x in weight's dtype, weight, bias in weight's dtype)` returned in x's dtype: [..., in] -> [..., out].
    `product` is F.linear, or `streaming.streaming_linear` in a small-batch decode package."""
    b = None if bias is None else bias.to(weight.dtype)
    return product(x.to(weight.dtype), weight, b).to(x.dtype)


class BF16Linear(nn.Linear):
    """An nn.Linear whose weight is bfloat16: y = (x in bf16) Wᵀ, returned in x's dtype. [..., in] -> [..., out]."""

    def forward(self, x: Tensor) -> Tensor:
        return bf16_linear(x, self.weight, self.bias)


def _untie_lm_head(model: nn.Module) -> None:
    head = getattr(model, "lm_head", None)
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embed = get_embeddings() if get_embeddings is not None else None
    if isinstance(head, nn.Linear) and embed is not None and head.weight is getattr(embed, "weight", None):
        head.weight = nn.Parameter(head.weight.detach().clone())
        config = getattr(model, "config", None)
        if config is not None:
            config.tie_word_embeddings = False


def _linear_layers(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear
    ]


@dataclass(frozen=True)
class WeightsSignature:
    """Which tensor each parameter slot holds, how often it was written in place, and the linear layers' format.
    `holds()` is False once the weights changed (training, `load_state_dict`, `.to(...)`, a parameter replaced): an
    AOT package holding the weights it was built with is then no longer used (`models/aot.py`). Checking walks a
    stored list, not the module tree, so it costs a few microseconds per decode step."""

    entries: tuple[tuple[nn.Module, str, Tensor, int], ...]
    weights_format: str

    def holds(self) -> bool:
        return all(module._parameters.get(name) is p and p._version == v for module, name, p, v in self.entries)


def weights_signature(model: nn.Module) -> WeightsSignature:
    """The signature of `model`'s weights as they are now (`WeightsSignature`)."""
    entries = tuple(
        (module, name, p, p._version)
        for module in model.modules()
        for name, p in module._parameters.items()
        if p is not None
    )
    return WeightsSignature(entries, weights_format(model))


def quantize_weights(model: ModuleT, weights: str) -> ModuleT:
    """Store `model`'s linear layers in `weights` ("float32": unchanged, "bfloat16", "int8"), in place; returns it.
    AOT decode packages attached to the model (`models/aot.py`) stay in use when the weights were as loaded: a
    package built for the format is then picked.

    Raises ValueError for another format name or a model that is not float32, ImportError naming the package for
    int8 without torchao (`pip install "ttt[quant]"`)."""
    artifacts = getattr(model, "_decode_artifacts", None)
    signature = getattr(model, "_artifact_weights", None)
    unchanged = bool(artifacts) and isinstance(signature, WeightsSignature) and signature.holds()
    _quantize(model, weights)
    use = getattr(model, "use_decode_artifacts", None)
    if artifacts and use is not None:
        use(artifacts if unchanged else {}, weights_signature(model))
    return model


def _quantize(model: nn.Module, weights: str) -> None:
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {weights!r}")
    first = next(model.parameters())
    if first.dtype != torch.float32:
        raise ValueError(f"quantize_weights starts from a float32 model, this one is {first.dtype}")
    if weights == "float32":
        return
    _untie_lm_head(model)
    if weights == "bfloat16":
        for parent, name, linear in _linear_layers(model):
            fast = BF16Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
            fast.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
            if linear.bias is not None:
                fast.bias = nn.Parameter(linear.bias.detach().to(torch.bfloat16), requires_grad=False)
            setattr(parent, name, fast)
        return
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as err:
        raise ImportError('int8 weights need torchao: pip install "ttt[quant]" (or torchao)') from err
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda module, _: type(module) is nn.Linear)


def weights_format(model: nn.Module) -> str:
    """The format `quantize_weights` left the model's linear layers in ("float32" when it never ran)."""
    if any(isinstance(m, BF16Linear) for m in model.modules()):
        return "bfloat16"
    head = getattr(model, "lm_head", None)
    if isinstance(head, nn.Linear) and type(head.weight).__name__ not in ("Parameter", "Tensor"):
        return "int8"
    return "float32"
