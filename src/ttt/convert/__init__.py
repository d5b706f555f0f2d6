"""Checkpoint conversion: official JAX (EasyLM streaming msgpack) checkpoints in; the official PyTorch format in
(`from_official`) and out (`to_official`)."""

from .jax import config_from_flags, config_from_jax, from_jax
from .official import config_from_official, from_official, to_official
from .safe_pickle import safe_load
from .streaming import CheckpointFormatError, iter_records

__all__ = [
    "CheckpointFormatError",
    "config_from_flags",
    "config_from_jax",
    "config_from_official",
    "from_jax",
    "from_official",
    "iter_records",
    "safe_load",
    "to_official",
]
