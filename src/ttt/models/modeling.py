"""TTT causal language model (Hugging Face conventions): embeddings, N blocks, final RMSNorm, LM head.

Block (Mamba backbone when pre_conv / share_qk / use_gate are on; Transformer backbone when off):

    h = h + Conv(RMSNorm(h))            only with pre_conv: depthwise causal conv, kernel conv_kernel, bias
    h = h + TTT(RMSNorm(h))             TTTLinear or TTTMLP
    h = h + SwiGLU(RMSNorm(h))          W_down (silu(W_gate h) ⊙ W_up h)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from ..hf_compat import CACHE_NAME, cache_kwargs, output_cache, pick_cache, reject_unknown
from ..integrity import DamagedFileError, verify_manifest, write_manifest
from ..layers import TTT_LAYERS, CausalConv1d, Packing, TTTBase, TTTLayerState
from ..ops import layer_weight
from .aot import AOT_FOLDER, ArtifactKey, DecodeArtifact, attach_decode_artifacts
from .cache import TTTCache
from .configuration import TTTConfig
from .decode import decode_step
from .weights import WeightsSignature


class RMSNorm(nn.Module):
    """y = w ⊙ x / sqrt(mean(x²) + ε), computed in at least float32."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float() if x.element_size() < 4 else x
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


class SwiGluMLP(nn.Module):
    def __init__(self, config: TTTConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class PreConv(nn.Module):
    """The Mamba backbone's conv block before the TTT layer: Conv(RMSNorm(h)), causal, padding-aware."""

    def __init__(self, config: TTTConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.conv = CausalConv1d(config.hidden_size, config.conv_kernel)

    def forward(self, h: Tensor, packing: Packing | None, state: TTTLayerState | None) -> Tensor:
        x = self.norm(h)
        x = x if packing is None else packing.pack(x)
        y, new_state = self.conv(
            x, None if state is None else state.conv["pre_conv"], None if packing is None else packing.lengths
        )
        if state is not None:
            state.conv["pre_conv"] = new_state
        return y if packing is None else packing.unpack(y)


class Block(GradientCheckpointingLayer):
    def __init__(self, config: TTTConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.pre_conv = config.pre_conv
        if config.pre_conv:
            self.conv = PreConv(config)
        self.seq_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.seq_modeling_block: TTTBase = TTT_LAYERS[config.ttt_layer_type].from_config(config, layer_idx)
        self.ffn_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = SwiGluMLP(config)

    def allocate_inference_cache(self, batch_size: int, dtype=None, device=None) -> TTTLayerState:
        state = self.seq_modeling_block.allocate_inference_cache(batch_size, dtype, device)
        if self.pre_conv:
            state.conv["pre_conv"] = self.conv.conv.empty_state(
                batch_size, dtype or self.conv.conv.weight.dtype, device or self.conv.conv.weight.device
            )
        return state

    def check_cache(self, state: TTTLayerState, batch_size: int) -> None:
        """Raise a clear error when `state` was not made for this block and batch size (no device synchronisation)."""
        if not isinstance(state, TTTLayerState):
            raise TypeError(f"cache layer {self.layer_idx} is a {type(state).__name__}, not a TTTLayerState")
        self.seq_modeling_block._check_state(state, batch_size, self.seq_modeling_block.state_dtype)
        if self.pre_conv:
            conv = state.conv.get("pre_conv")
            if conv is None or conv.shape[1:] != self.conv.conv.empty_state(1).shape[1:]:
                raise ValueError(
                    f"the cache's conv state does not fit block {self.layer_idx}: made for another config?"
                )

    def forward(
        self, hidden_states: Tensor, packing: Packing | None = None, state: TTTLayerState | None = None
    ) -> Tensor:
        """hidden_states [B, T, C]; packing: the model's padding layout (None: no padding); state: this block's
        layer state (checked by the model), updated in place."""
        h = hidden_states
        if self.pre_conv:
            h = h + self.conv(h, packing, state)
        h = h + self.seq_modeling_block(self.seq_norm(h), packing=packing, state=state)
        return h + self.mlp(self.ffn_norm(h))


class TTTPreTrainedModel(PreTrainedModel):
    config_class = TTTConfig
    config: TTTConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    # the state folds every token into the inner weights and cannot be rolled back (cropped): transformers refuses
    # assisted / prompt-lookup decoding for stateful models with a clear message
    _is_stateful = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The official JAX training code's init (see `TTTBase.reset_parameters` for the TTT layer)."""
        std = self.config.initializer_range
        if isinstance(module, TTTBase):
            module.reset_parameters()
        elif isinstance(module, CausalConv1d):
            module.reset_parameters()
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """transformers' save_pretrained, then a checksum manifest of the folder (`checksums.json`, see
        ttt.integrity) that `from_pretrained` verifies."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            # the AOT decode packages keep their own manifest (and go stale, not damaged, with new weights)
            write_manifest(save_directory, exclude=(AOT_FOLDER,))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' from_pretrained; a local folder's checksum manifest is verified first, and a weights file
        that cannot be decoded is named. A causal LM loads the folder's AOT decode packages when `ttt export` made
        them (`models/aot.py`; a one-line notice when they were built for another torch, CPU or weights).

        Raises DamagedFileError (a ValueError) naming the damaged file."""
        folder = Path(str(pretrained_model_name_or_path))
        if folder.is_dir():
            verify_manifest(folder)
        try:
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except Exception as err:
            if type(err).__name__ != "SafetensorError" and "safetensors" not in type(err).__module__:
                raise
            weights = sorted(folder.glob("*.safetensors")) if folder.is_dir() else [folder]
            raise DamagedFileError(weights[0] if weights else folder, f"cannot be read: {err}") from err
        if folder.is_dir() and isinstance(model, TTTForCausalLM):
            attach_decode_artifacts(model, folder)
        return model

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate must not build a DynamicCache: the model builds its own fixed-size TTTCache
        return False


class TTTModel(TTTPreTrainedModel):
    """The TTT backbone: token embeddings, `num_hidden_layers` blocks (optional causal conv, TTT layer, SwiGLU MLP,
    each pre-normed and residual) and a final RMSNorm. input_ids [B, T] (or inputs_embeds [B, T, C]) -> hidden states
    [B, T, C]; with a `TTTCache` it continues a sequence from its state. Errors: see `forward`."""

    embed_tokens: nn.Module  # an nn.Embedding unless replaced (transformers' set_input_embeddings takes any module)

    def __init__(self, config: TTTConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList([Block(config, i) for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    @property
    def _blocks(self) -> list[Block]:
        """`layers` as the `Block`s they are (nn.ModuleList yields plain modules to the type checker)."""
        return cast("list[Block]", list(self.layers))

    def _check_inputs(self, input_ids: Tensor | None, inputs_embeds: Tensor | None) -> Tensor:
        """Check the inputs; returns the one given (input_ids or inputs_embeds)."""
        given = input_ids if input_ids is not None else inputs_embeds
        if given is None or (input_ids is not None and inputs_embeds is not None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        if given.dim() >= 1 and given.shape[0] == 0:
            raise ValueError("the input has no rows (batch size 0): give at least one sequence")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be 2-D [batch, seq_len], got shape {tuple(input_ids.shape)}")
            if input_ids.is_floating_point():
                raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
            if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
                raise ValueError(
                    f"input_ids must lie in [0, vocab_size={self.config.vocab_size}), got values in "
                    f"[{int(input_ids.min())}, {int(input_ids.max())}]"
                )
        elif given.dim() != 3 or given.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"inputs_embeds must be [batch, seq_len, {self.config.hidden_size}], got {tuple(given.shape)}"
            )
        return given

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: TTTCache | None = None,
        inputs_embeds: Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: TTTCache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast | tuple:
        """Run the blocks over input_ids [B, T] (or inputs_embeds [B, T, C]); returns the final hidden states [B, T, C]
        and, with a cache, the cache (updated in place).

        cache / past_key_values: a `TTTCache` (either name: transformers ≥ 5.24 passes `cache=`, earlier releases
        `past_key_values=`; the output field is named the same way). attention_mask: [B, ≥T] of 0/1, padding anywhere.
        Positions come from the cache and attention_mask (each row counts from its first real token);
        `position_ids`, which transformers passes, are checked to be consecutive over each row's real tokens
        (packed sequences, whose positions restart inside a row, are refused). `output_attentions=True` is refused:
        TTT layers compute no attention weights.
        Without autograd, an input longer than `config.ttt_prefill_chunk_size` runs through the blocks in chunks of
        that many tokens, the state carried between them (the same result; time per token and memory stay flat in T).

        Raises TypeError for any other keyword argument, ValueError for inputs of the wrong shape, dtype or range and
        for a cache made for another config, batch size, dtype or device.
        """
        reject_unknown(f"{type(self).__name__}.forward", kwargs)
        past_key_values = pick_cache(cache, past_key_values)
        given = self._check_inputs(input_ids, inputs_embeds)
        if output_attentions:
            raise ValueError("output_attentions=True: TTT layers compute no attention weights")
        if position_ids is not None:
            check_position_ids(position_ids, attention_mask, given.shape[0], given.shape[1])
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        cacheable = all(block.seq_modeling_block.supports_cache for block in self._blocks)
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training and cacheable
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if self.gradient_checkpointing and self.training:
            if past_key_values is not None:
                raise ValueError(
                    "gradient checkpointing recomputes each block in backward, which would replay the cache's "
                    "updates: train without a cache (cache=None) or disable gradient checkpointing"
                )
            use_cache = False
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if past_key_values is None and use_cache:
            past_key_values = TTTCache.from_model(self, h.shape[0], h.dtype, h.device)
        if past_key_values is not None:
            if not isinstance(past_key_values, TTTCache):
                raise TypeError(
                    f"the cache must be a TTTCache (TTTCache.from_model), got {type(past_key_values).__name__}"
                )
            if len(past_key_values.layers) != len(self.layers):
                raise ValueError(
                    f"the cache has {len(past_key_values.layers)} layers, the model {len(self.layers)}: "
                    "it was made for another config"
                )
            # once per call, for every layer (the blocks then pass each layer its state unchecked)
            for block, cached in zip(self._blocks, past_key_values.layers):
                block.check_cache(cached, h.shape[0])

        if past_key_values is not None and self._fast_decode(h, attention_mask, past_key_values, output_hidden_states):
            h = decode_step(self, h, past_key_values)
            return (
                BaseModelOutputWithPast(last_hidden_state=h, **cache_kwargs(past_key_values))
                if return_dict
                else (h, past_key_values)
            )
        hidden_states: tuple[Tensor, ...] | None = (h,) if output_hidden_states else None
        # the padding layout, once for all blocks (and the mask checked); each block gets its own layer's state
        packing = Packing.from_mask(attention_mask, h.shape[0], h.shape[1], h.device)
        chunk = self._prefill_chunk(h, output_hidden_states, cacheable)
        if chunk:
            return_cache = past_key_values
            if past_key_values is None:  # use_cache=False: a state to carry between the chunks, dropped after
                past_key_values = TTTCache.from_model(self, h.shape[0], h.dtype, h.device)
            h = self._chunked(h, attention_mask, past_key_values, chunk)
            return (
                BaseModelOutputWithPast(last_hidden_state=h, **cache_kwargs(return_cache))
                if return_dict
                else tuple(x for x in (h, return_cache) if x is not None)
            )
        states: Sequence[TTTLayerState | None] = (
            past_key_values.layers if past_key_values is not None else [None] * len(self.layers)
        )
        for block, state in zip(self._blocks, states):
            h = block(h, packing, state)
            if hidden_states is not None:
                hidden_states += (h,)
        h = self.norm(h)
        if hidden_states is not None:
            # HF convention: the last entry is after the final norm
            hidden_states = hidden_states[:-1] + (h,)
        cache = past_key_values if use_cache or past_key_values is not None else None
        if not return_dict:
            return tuple(x for x in (h, cache, hidden_states) if x is not None)
        return BaseModelOutputWithPast(last_hidden_state=h, hidden_states=hidden_states, **cache_kwargs(cache))

    def _prefill_chunk(self, h: Tensor, output_hidden_states: bool | None, cacheable: bool) -> int:
        """The chunk length for this call (0: the whole input at once): `config.ttt_prefill_chunk_size` when the call
        reads more tokens than that without autograd (inference), with layers that carry a state and without
        per-layer hidden states to return."""
        chunk = self.config.ttt_prefill_chunk_size
        if not chunk or h.shape[1] <= chunk or not cacheable or output_hidden_states:
            return 0
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return 0
        return chunk

    def _chunked(self, h: Tensor, attention_mask: Tensor | None, cache: TTTCache, chunk: int) -> Tensor:
        """Final hidden states [B, T, C] of h [B, T, C] read `chunk` tokens at a time through every block (and the
        final norm), `cache` carrying the state from one chunk to the next: the same result as reading h at once (a
        recurrent model), with the intermediates of `chunk` tokens instead of T alive. attention_mask: [B, ≥T]
        (already checked), its last T columns split with h."""
        seq_len = h.shape[1]
        mask = None if attention_mask is None else attention_mask[:, attention_mask.shape[1] - seq_len :]
        out = torch.empty_like(h)
        for start in range(0, seq_len, chunk):
            x = h[:, start : start + chunk]
            rows = None if mask is None else mask[:, start : start + chunk]
            packing = Packing.from_mask(rows, x.shape[0], x.shape[1], x.device)
            for block, state in zip(self._blocks, cache.layers):
                x = block(x, packing, state)
            out[:, start : start + chunk] = self.norm(x)
        return out

    def _fast_decode(self, h: Tensor, attention_mask, cache, output_hidden_states: bool | None) -> bool:
        """Single-token steps through the compiled decode graph (`ttt_implementation="compiled"`, inference)."""
        if self.config.ttt_implementation != "compiled" or cache is None or output_hidden_states:
            return False
        if h.shape[1] != 1 or torch.is_grad_enabled() or self.training or torch.compiler.is_compiling():
            return False
        return attention_mask is None or bool(attention_mask[:, -1].bool().all())


class TTTForCausalLM(TTTPreTrainedModel, GenerationMixin):
    """A TTT language model (`TTTModel` + LM head, tied to the embeddings by default) with transformers' `generate`,
    `save_pretrained` / `from_pretrained` (checksum-verified) and the Auto classes after `import ttt`.
    input_ids [B, T] -> logits [B, T, vocab_size], and the next-token loss given labels. Stateful: its cache cannot
    be rolled back, so transformers refuses assisted decoding. Errors: see `forward` and `generate`."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    # forward honours num_items_in_batch (Σ NLL / items of the whole accumulated batch): transformers' Trainer passes
    # it and leaves the loss unscaled under gradient accumulation
    accepts_loss_kwargs = True

    def __init__(self, config: TTTConfig) -> None:
        super().__init__(config)
        self.model = TTTModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        if not all(block.seq_modeling_block.supports_cache for block in self.model.layers):
            # no fixed-size state (generic / Nadaraya-Watson layers): generate recomputes the sequence each step
            self.generation_config.use_cache = False

    def generate(self, inputs: Tensor | None = None, *args, **kwargs):
        """transformers' `generate`. The cache may be passed as `cache=` or `past_key_values=` on every supported
        release. An empty prompt is refused (a TTT model needs at least one token to read: give the BOS id) instead
        of failing inside transformers. Raises ValueError for a prompt of zero tokens or rows, or two different
        caches."""
        # the cache under the installed transformers' name: from 5.24 `cache=`, before `past_key_values=`. An older
        # release would not recognise `cache=` as the cache and would feed the whole prompt into it again.
        other = "past_key_values" if CACHE_NAME == "cache" else "cache"
        if other in kwargs:
            given = pick_cache(kwargs.get(CACHE_NAME), kwargs.pop(other))
            kwargs[CACHE_NAME] = given
        prompt = inputs if inputs is not None else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        if isinstance(prompt, Tensor) and prompt.dim() >= 2 and (prompt.shape[0] == 0 or prompt.shape[1] == 0):
            raise ValueError(
                f"generate needs a prompt of at least one token per row, got shape {tuple(prompt.shape)}: start "
                f"from the BOS token (bos_token_id={self.config.bos_token_id})"
            )
        return super().generate(inputs, *args, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def allocate_inference_cache(self, batch_size: int, dtype=None, device=None) -> TTTCache:
        return TTTCache.from_model(self, batch_size, dtype or self.dtype, device or self.device)

    def use_decode_artifacts(
        self, artifacts: dict[ArtifactKey, DecodeArtifact], signature: WeightsSignature | None
    ) -> None:
        """Run single-token cached calls through these AOT decode packages (`models/aot.py`) while the weights keep
        `signature` (`weights.weights_signature` when they were loaded); {} turns them off."""
        self._decode_artifacts = dict(artifacts)
        self._artifact_weights = signature

    def _artifact_decode(self, input_ids: Tensor | None, attention_mask: Tensor | None, cache) -> Tensor | None:
        """Logits [B, 1, V] from an AOT decode package for this call, or None when the call is not a plain cached
        single-token step of a batch size and dtype a package was built for (the eager path then runs)."""
        artifacts = getattr(self, "_decode_artifacts", None)
        if not artifacts or input_ids is None or input_ids.dim() != 2 or input_ids.shape[1] != 1:
            return None
        if not isinstance(cache, TTTCache) or torch.is_grad_enabled() or self.training:
            return None
        signature = self._artifact_weights
        if signature is None or not signature.holds():
            return None
        state_dtype = layer_weight(cache.layers[0].ttt.params, 0).dtype if cache.layers else self.dtype
        artifact = artifacts.get((input_ids.shape[0], state_dtype, signature.weights_format))
        if artifact is None or input_ids.device.type != "cpu":
            return None
        if attention_mask is not None and not bool(attention_mask[:, -1].bool().all()):
            return None
        self.model._check_inputs(input_ids, None)
        return artifact.step(input_ids, cache, self)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: TTTCache | None = None,
        inputs_embeds: Tensor | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | Tensor = 0,
        shift_labels: Tensor | None = None,
        num_items_in_batch: int | Tensor | None = None,
        past_key_values: TTTCache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits [B, T', V] (T' = T, or the last `logits_to_keep` positions) and, with `labels`, the next-token loss.

        The inputs, the cache (`cache=` or `past_key_values=`) and the errors are those of `TTTModel.forward`.
        labels: [B, T] in the Hugging Face convention (shifted inside; -100 is ignored). shift_labels: [B, T], the
        targets already aligned with the logits (transformers passes them in sequence / context-parallel training;
        `labels` is then not shifted). num_items_in_batch: the number of scored targets over a whole accumulated batch
        (transformers' Trainer passes it under gradient accumulation): the loss is Σ NLL / num_items_in_batch instead
        of the mean over this call's targets, so accumulated micro-batches add up to the loss of the whole batch.
        Every keyword argument not listed here raises TypeError.
        """
        reject_unknown(f"{type(self).__name__}.forward", kwargs)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if labels is None and shift_labels is None and inputs_embeds is None and not output_hidden_states:
            cached = pick_cache(cache, past_key_values)
            logits = self._artifact_decode(input_ids, attention_mask, cached)
            if logits is not None:
                if not return_dict:
                    return (logits, cached)
                return CausalLMOutputWithPast(logits=logits, **{CACHE_NAME: cached})
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=pick_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        h = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(h[:, keep])
        loss = None
        if labels is not None or shift_labels is not None:
            full = logits if logits.shape[1] == h.shape[1] else self.lm_head(h)
            loss = causal_lm_loss(full, labels, shift_labels, num_items_in_batch)
        cache_out = output_cache(outputs)
        if not return_dict:
            out = tuple(x for x in (logits, cache_out, outputs.hidden_states) if x is not None)
            return (loss, *out) if loss is not None else out
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, **{CACHE_NAME: cache_out}
        )


def causal_lm_loss(
    logits: Tensor,
    labels: Tensor | None,
    shift_labels: Tensor | None = None,
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """Next-token cross-entropy of logits [B, T, V] (computed in at least float32; -100 targets ignored).

    labels [B, T] are shifted inside (logits at t predict labels at t + 1); shift_labels [B, T] are used as given.
    The mean over the scored targets, or Σ / num_items_in_batch when that is given (as transformers' `ForCausalLMLoss`).
    Raises ValueError for targets of the wrong shape."""
    if shift_labels is None:
        if labels is None:
            raise ValueError("causal_lm_loss needs labels or shift_labels")
        if labels.shape != logits.shape[:2]:
            raise ValueError(f"labels must have shape {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
        logits, targets = logits[:, :-1], labels[:, 1:]
    else:
        if shift_labels.shape != logits.shape[:2]:
            raise ValueError(f"shift_labels must have shape {tuple(logits.shape[:2])}, got {tuple(shift_labels.shape)}")
        targets = shift_labels
    if logits.element_size() < 4:
        logits = logits.float()
    flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(flat_logits, flat_targets)
    total = F.cross_entropy(flat_logits, flat_targets, reduction="sum")
    if isinstance(num_items_in_batch, Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def check_position_ids(position_ids: Tensor, attention_mask: Tensor | None, batch: int, seq_len: int) -> None:
    """Refuse position_ids [B, T] (or [T]) that restart or skip inside a row's real tokens: a TTT layer takes its
    positions from the cache and the mask, so such positions (packed sequences) would be silently ignored."""
    if position_ids.is_floating_point() or position_ids.dim() not in (1, 2):
        raise ValueError(
            f"position_ids must be integer, [batch, seq_len] or [seq_len], got {position_ids.dtype} of shape "
            f"{tuple(position_ids.shape)}"
        )
    ids = position_ids if position_ids.dim() == 2 else position_ids.reshape(1, -1)
    if ids.shape[1] != seq_len or ids.shape[0] not in (1, batch):
        raise ValueError(
            f"position_ids of shape {tuple(position_ids.shape)} do not fit the input [batch={batch}, seq_len={seq_len}]"
        )
    if attention_mask is not None and (
        attention_mask.dim() != 2 or attention_mask.shape[0] != batch or attention_mask.shape[1] < seq_len
    ):
        return  # the mask itself is refused, with its own message, where it is used
    if ids.shape[-1] < 2:
        return
    if attention_mask is None:
        bad = ids[:, 1:] - ids[:, :-1] != 1
    else:
        mask = attention_mask[:, attention_mask.shape[1] - ids.shape[1] :].bool()
        # between consecutive real tokens (padding between them is skipped by the packed layout)
        real_before = mask.long().cumsum(1)
        pos = torch.where(mask, ids - real_before, 0)
        first = torch.where(mask, pos, torch.iinfo(pos.dtype).max).amin(1, keepdim=True)
        bad = mask & (pos != first)
    if bool(bad.any()):
        raise ValueError(
            "position_ids must be consecutive over each row's real tokens: TTT derives positions from the cache and "
            "attention_mask, and packed sequences (positions restarting inside a row) are not supported; pass "
            "separate rows with padding and an attention_mask instead"
        )
