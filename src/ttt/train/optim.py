"""The paper's optimisation recipe: AdamW β = (0.9, 0.95), weight decay 0.1 on every parameter (as the official
JAX code; excluding norms and biases is an option), linear warmup then cosine decay to `end_lr`, and TTT-MLP's inner
learning-rate warmup.

    lr(s) = lr · s / warmup                                              s < warmup
    lr(s) = end_lr + ½ (lr − end_lr) (1 + cos(π (s − warmup) / (S − warmup)))   otherwise
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..layers import TTTBase
from .config import OptimSection


def param_groups(model: nn.Module, weight_decay: float, decay_norms_and_biases: bool) -> list[dict]:
    if decay_norms_and_biases:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # matrices decay; vectors (norm scales, biases) and per-head small tensors do not
        (decay if p.dim() >= 2 and "norm" not in name and not name.endswith(("b1", "b2")) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norms_and_biases)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)


def warmup_steps(total: int, cfg: OptimSection) -> int:
    """Steps of linear warmup; 0 (full lr from step 0) when warmup_fraction is 0 or rounds to 0 steps."""
    return max(0, round(cfg.warmup_fraction * total))


def lr_at(step: int, total: int, cfg: OptimSection) -> float:
    warmup = warmup_steps(total, cfg)
    if step < warmup:
        return cfg.lr * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return cfg.end_lr + 0.5 * (cfg.lr - cfg.end_lr) * (1 + math.cos(math.pi * progress))


def ttt_layers(model: nn.Module) -> list[TTTBase]:
    return [m for m in model.modules() if isinstance(m, TTTBase)]


class InnerLRWarmup:
    """TTT-MLP's inner learning rate: ttt_base_lr goes linearly from `init` to its configured value over the outer
    warmup (the official JAX scripts: 0.01 -> 0.1). A function of the step only, so resuming reproduces it."""

    def __init__(self, model: nn.Module, cfg: OptimSection, total: int) -> None:
        self.layers = ttt_layers(model)
        self.targets = [layer.ttt_base_lr for layer in self.layers]
        kinds = {type(layer).__name__ for layer in self.layers}
        init = cfg.ttt_base_lr_init
        if init < 0:
            init = 0.01 if kinds == {"TTTMLP"} else 0.0
        self.init = init
        self.warmup = warmup_steps(total, cfg)

    @property
    def active(self) -> bool:
        return self.init > 0 and bool(self.layers)

    def apply(self, step: int) -> None:
        if not self.active:
            return
        frac = min(1.0, step / self.warmup) if self.warmup else 1.0
        for layer, target in zip(self.layers, self.targets):
            layer.ttt_base_lr = self.init + frac * (target - self.init)
