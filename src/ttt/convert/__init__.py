"""Checkpoint conversion: official JAX (EasyLM streaming msgpack) checkpoints in, official PyTorch format out."""

from .export import to_official
from .jax import config_from_flags, config_from_jax, from_jax
from .safe_pickle import safe_load
from .streaming import CheckpointFormatError, iter_records

__all__ = [
    "CheckpointFormatError",
    "config_from_flags",
    "config_from_jax",
    "from_jax",
    "iter_records",
    "safe_load",
    "to_official",
]
