"""ttt: Test-Time Training (TTT) sequence models for PyTorch.

from ttt import TTTConfig, TTTForCausalLM, TTTLinear, TTTMLP, TTTCache, get_preset, from_official
"""

from .convert import from_official
from .layers import TTTMLP, TTTGeneric, TTTLayerState, TTTLinear, TTTNadarayaWatson
from .models import TTTCache, TTTConfig, TTTForCausalLM, TTTModel, get_preset, preset_names
from .ops import TTTState

__version__ = "0.1.0"

__all__ = [
    "TTTCache",
    "TTTConfig",
    "TTTForCausalLM",
    "TTTLayerState",
    "TTTGeneric",
    "TTTLinear",
    "TTTNadarayaWatson",
    "TTTMLP",
    "TTTModel",
    "TTTState",
    "__version__",
    "from_official",
    "get_preset",
    "preset_names",
]
