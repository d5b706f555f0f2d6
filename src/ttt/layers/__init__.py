"""Drop-in TTT layers ([B, T, C] -> [B, T, C]) and their building blocks."""

from .learners import INNER_MODELS, TTTGeneric, TTTNadarayaWatson  # noqa: I001 (registers in TTT_LAYERS)
from .conv import CausalConv1d
from .packing import Packing
from .layer_state import TTTLayerState
from .config import IMPLEMENTATIONS, LAYER_DEFAULTS, TTTLayerConfig
from .ttt import TTT_LAYERS, TTTMLP, TTTBase, TTTLinear, register_ttt_layer

__all__ = [
    "CausalConv1d",
    "IMPLEMENTATIONS",
    "TTTLayerConfig",
    "INNER_MODELS",
    "LAYER_DEFAULTS",
    "Packing",
    "TTTBase",
    "TTTGeneric",
    "TTTNadarayaWatson",
    "TTTLayerState",
    "TTTLinear",
    "TTTMLP",
    "TTT_LAYERS",
    "register_ttt_layer",
]
