"""`TTTLayerConfig`: every option of a TTT layer, validated in one place.

A `TTTConfig` produces one (`TTTLayerConfig.from_config`, which is also how `TTTConfig` validates its layer
options), and the layers take one (`TTTLinear(hidden_size, num_heads, **options)` builds it from keyword arguments).
Frozen: a layer's shape-defining options never change after it is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..ops import IMPLEMENTATIONS, OPTIMIZERS, InnerOptimizer, check_triton_tiles

TOKEN_FACTORS = ("learned", "harmonic", "one")
# TTTConfig's names for the fields whose layer name differs
CONFIG_NAMES = {"num_heads": "num_attention_heads", "implementation": "ttt_implementation"}


@dataclass(frozen=True)
class TTTLayerConfig:
    """The options of one TTT layer (the paper's names; see `TTTConfig` for their meaning).

    Raises ValueError naming the option and its valid values (for a field that `TTTConfig` names differently, both
    names) when an option is out of range."""

    hidden_size: int
    num_heads: int
    mini_batch_size: int = 16
    ttt_base_lr: float = 1.0
    share_qk: bool = False
    use_gate: bool = False
    conv_kernel: int = 4
    rope_theta: float = 10000.0
    initializer_range: float = 0.02
    remat_mini_batch_group_size: int = 0
    implementation: str = "auto"
    # ablation switches (the paper's Table 1); the default is the paper's layer
    inner_bias: bool = True
    inner_norm: bool = True
    inner_residual: bool = True
    learnable_init: bool = True
    lr_gate: bool = True
    token_factor: str = "learned"
    # beyond the paper: the inner optimizer and retention
    inner_optimizer: InnerOptimizer = field(default_factory=InnerOptimizer)
    inner_weight_decay: float = 0.0
    forget_gate: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.inner_optimizer, str):
            if self.inner_optimizer not in OPTIMIZERS:
                raise ValueError(f"inner_optimizer must be one of {OPTIMIZERS}, got {self.inner_optimizer!r}")
            object.__setattr__(self, "inner_optimizer", InnerOptimizer(self.inner_optimizer))
        for name in ("hidden_size", "num_heads", "mini_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{self._name(name)} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by {self._name('num_heads')} ({self.num_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim = hidden_size / num_heads = {self.head_dim} must be even (RoPE pairs)")
        remat = self.remat_mini_batch_group_size
        if not isinstance(remat, int) or isinstance(remat, bool) or remat < 0:
            raise ValueError(f"remat_mini_batch_group_size must be an integer >= 0 (0 = no remat), got {remat!r}")
        for name, low, strict in (("ttt_base_lr", 0.0, False), ("rope_theta", 0.0, True)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < low or (strict and not value):
                raise ValueError(f"{name} must be a number {'>' if strict else '>='} {low}, got {value!r}")
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"{self._name('implementation')} must be one of {IMPLEMENTATIONS}, got {self.implementation!r}"
            )
        if self.implementation == "triton":
            self._check_triton()
        if self.token_factor not in TOKEN_FACTORS:
            raise ValueError(f"token_factor must be one of {TOKEN_FACTORS}, got {self.token_factor!r}")
        for name in ("share_qk", "use_gate", "inner_bias", "inner_norm", "inner_residual", "learnable_init"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("lr_gate", "forget_gate"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        decay = self.inner_weight_decay
        if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0.0 <= decay < 1.0:
            raise ValueError(f"inner_weight_decay must be a number in [0, 1), got {decay!r}")
        if self.share_qk and (not isinstance(self.conv_kernel, int) or self.conv_kernel < 1):
            raise ValueError(f"conv_kernel must be >= 1 with share_qk, got {self.conv_kernel!r}")

    def _check_triton(self) -> None:
        """The Triton kernels (`ttt.ops.triton`) run the paper's layer with power-of-two tiles; name what differs."""
        name = self._name("implementation")
        unsupported = {
            "inner_optimizer": self.inner_optimizer.name != "gd",
            "inner_norm": not self.inner_norm,
            "inner_residual": not self.inner_residual,
            "inner_bias": not self.inner_bias,
            "inner_weight_decay": self.inner_weight_decay > 0,
            "forget_gate": self.forget_gate,
        }
        for option, differs in unsupported.items():
            if differs:
                value = self.inner_optimizer.name if option == "inner_optimizer" else getattr(self, option)
                raise ValueError(
                    f"{name}='triton' runs the paper's inner loop (gd, inner_norm, inner_residual, inner_bias, no "
                    f"retention); {option}={value!r} needs another implementation ('auto')"
                )
        check_triton_tiles(self.mini_batch_size, self.head_dim)

    @staticmethod
    def _name(name: str) -> str:
        return f"{name} (TTTConfig.{CONFIG_NAMES[name]})" if name in CONFIG_NAMES else name

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_config(cls, config: Any) -> TTTLayerConfig:
        """The layer options of a `TTTConfig` (or anything with its field names; a missing one takes its default).
        Its inner-optimizer fields (inner_optimizer, inner_momentum, inner_beta2, inner_lr) become one
        `InnerOptimizer`, validated by it."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = CONFIG_NAMES.get(f.name, f.name)
            if f.name == "inner_optimizer" or not hasattr(config, name):
                continue
            values[f.name] = getattr(config, name)
        optimizer = getattr(config, "inner_optimizer", "gd")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"inner_optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        defaults = InnerOptimizer()
        settings: dict[str, Any] = {
            "momentum": getattr(config, "inner_momentum", defaults.momentum),
            "beta2": getattr(config, "inner_beta2", defaults.beta2),
            "lr": getattr(config, "inner_lr", defaults.lr),
        }
        try:
            values["inner_optimizer"] = InnerOptimizer(optimizer, **settings)
        except (ValueError, TypeError) as err:
            given = ", ".join(f"inner_{k}={v!r}" for k, v in settings.items())
            raise ValueError(f"inner optimizer settings ({given}): {err}") from None
        return cls(**values)

    def kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments (shallow: the optimizer stays an `InnerOptimizer`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _defaults() -> dict[str, Any]:
    values = {f.name: f.default for f in dataclasses.fields(TTTLayerConfig) if f.default is not dataclasses.MISSING}
    optimizer = InnerOptimizer()
    values.update(
        inner_optimizer=optimizer.name,
        inner_momentum=optimizer.momentum,
        inner_beta2=optimizer.beta2,
        inner_lr=optimizer.lr,
    )
    return values


# The layer options' defaults (the inner optimizer as TTTConfig's four inner_* fields): TTTConfig takes its
# layer-option defaults from here, so they are written once.
LAYER_DEFAULTS: dict[str, Any] = _defaults()
