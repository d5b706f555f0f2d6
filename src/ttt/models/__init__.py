"""Config, cache and causal LM; registered with transformers' Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .aot import AOT_FOLDER, attach_decode_artifacts, export_decode
from .cache import TTTCache
from .configuration import BASE_LR, JAX_BLOCK_ALIASES, SIZES, TTTConfig, get_preset, preset_names
from .decode import compiled_step, decode_step
from .modeling import TTTForCausalLM, TTTModel, TTTPreTrainedModel
from .state_size import kv_cache_bytes, state_bytes
from .weights import WEIGHT_FORMATS, quantize_weights, weights_format

AutoConfig.register("ttt", TTTConfig, exist_ok=True)
AutoModel.register(TTTConfig, TTTModel, exist_ok=True)
AutoModelForCausalLM.register(TTTConfig, TTTForCausalLM, exist_ok=True)

__all__ = [
    "AOT_FOLDER",
    "BASE_LR",
    "JAX_BLOCK_ALIASES",
    "SIZES",
    "TTTCache",
    "TTTConfig",
    "TTTForCausalLM",
    "TTTModel",
    "TTTPreTrainedModel",
    "WEIGHT_FORMATS",
    "quantize_weights",
    "weights_format",
    "attach_decode_artifacts",
    "export_decode",
    "compiled_step",
    "decode_step",
    "get_preset",
    "kv_cache_bytes",
    "preset_names",
    "state_bytes",
]
