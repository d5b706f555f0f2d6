"""What differs between the transformers releases ttt supports, in one place.

transformers 5.24 renamed the cache argument and output field from `past_key_values` to `cache` (`generate` hands the
cache to `forward` as `cache=`, and both `generate(past_key_values=...)` and `output.past_key_values` warn). Earlier
releases (5.4-5.23) use `past_key_values` only. Our forwards accept both names; our own calls use whichever name the
installed release expects, so ttt never triggers the deprecation warning itself.

The releases tested by CI are in the README ("Tested transformers releases").
"""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers.modeling_outputs import BaseModelOutputWithPast

# the name of the cache argument / output field in the installed transformers
CACHE_NAME: str = (
    "cache" if "cache" in {f.name for f in dataclasses.fields(BaseModelOutputWithPast)} else "past_key_values"
)


def pick_cache(cache: Any, past_key_values: Any) -> Any:
    """The cache given under either name (`cache`, transformers ≥ 5.24; `past_key_values`, earlier); None if neither.

    Raises ValueError when two different objects are given under the two names."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("pass the cache once: as cache= or as past_key_values=, not two different objects")
    return cache if cache is not None else past_key_values


def cache_kwargs(cache: Any) -> dict[str, Any]:
    """`{name: cache}` for calling `generate` (or another transformers API) under the installed release's name."""
    return {CACHE_NAME: cache}


def output_cache(output: Any) -> Any:
    """The cache in a model output or a `generate(return_dict_in_generate=True)` output, without the deprecation
    warning of the old field name."""
    return output.get(CACHE_NAME) if hasattr(output, "get") else getattr(output, CACHE_NAME, None)


def reject_unknown(where: str, kwargs: dict[str, Any]) -> None:
    """Raise a TypeError naming every keyword in `kwargs` (what a forward did not declare)."""
    if kwargs:
        names = ", ".join(sorted(kwargs))
        raise TypeError(
            f"{where} got unexpected keyword argument(s): {names}. It accepts the documented arguments only (see its "
            "docstring); a misspelt or unsupported option is refused rather than ignored"
        )


def enable_activation_checkpointing(model: Any) -> None:
    """`model.activation_checkpointing_enable()` (transformers ≥ 5.24), or its earlier name
    `gradient_checkpointing_enable()`, so that ttt never calls the deprecated alias."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
