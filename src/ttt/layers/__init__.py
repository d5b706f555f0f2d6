"""Drop-in TTT layers ([B, T, C] -> [B, T, C]) and their building blocks."""

from .conv import CausalConv1d
from .packing import Packing
from .state import TTTLayerState
from .ttt import IMPLEMENTATIONS, TTT_LAYERS, TTTMLP, TTTBase, TTTLinear

__all__ = [
    "CausalConv1d",
    "IMPLEMENTATIONS",
    "Packing",
    "TTTBase",
    "TTTLayerState",
    "TTTLinear",
    "TTTMLP",
    "TTT_LAYERS",
]
