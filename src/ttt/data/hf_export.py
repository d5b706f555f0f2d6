"""Our tokenizers as Hugging Face tokenizers (`PreTrainedTokenizerFast`, from the `tokenizers` library), so that
clients that load a model folder with AutoTokenizer (lm-evaluation-harness, pipelines, servers) encode exactly as
training did.

- byte: ids 0-255 are the UTF-8 bytes (a byte-level BPE with no merges whose symbol for byte b has id b), then
  "<|bos|>" = 256 and "<|eos|>" = 257.
- bpe: the trained `tokenizers` pipeline itself, with its "<|bos|>" / "<|eos|>" specials.
- hf: the Hugging Face (fast) tokenizer it wraps, without its post-processor (training added no BOS/EOS through
  it) and with the BOS/EOS that training used (a tokenizer with only an EOS, like GPT-2's, frames with it twice).

`tokenizer(text)` gives exactly `Tokenizer.encode(text)`: no BOS/EOS added, and text that spells a special token is
ordinary text (`split_special_tokens=True`). Training frames each document as BOS + text (+ EOS), so prepend
`bos_token_id` to a prompt; lm-evaluation-harness prepends it to rolling-perplexity windows itself. Tested equal on
the bundled corpus and on arbitrary Unicode and bytes (tests/hf/test_tokenizer_export.py).
"""

from __future__ import annotations

from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from .bpe import BOS_TOKEN, EOS_TOKEN, BPETokenizer
from .byte import BYTE_BOS_ID, BYTE_EOS_ID, ByteTokenizer
from .hf_tokenizer import HFTokenizer
from .tokenizer import Tokenizer


def _byte_backend() -> Backend:
    # byte b -> the printable character GPT-2's byte-level pre-tokenizer writes for it; that character gets id b
    symbol = bytes_to_unicode()
    assert sorted(symbol.values()) == sorted(pre_tokenizers.ByteLevel.alphabet()), "ByteLevel's mapping changed"
    backend = Backend(models.BPE(vocab={symbol[b]: b for b in range(256)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([BOS_TOKEN, EOS_TOKEN])
    assert backend.token_to_id(BOS_TOKEN) == BYTE_BOS_ID and backend.token_to_id(EOS_TOKEN) == BYTE_EOS_ID
    return backend


def to_hf_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerBase:
    """A Hugging Face tokenizer that encodes and decodes as `tokenizer` does (see the module docstring).

    Raises TypeError for a tokenizer kind this does not know."""
    if isinstance(tokenizer, HFTokenizer):
        backend = getattr(tokenizer.hf, "backend_tokenizer", None)
        if backend is None:
            raise TypeError(
                f"tokenizer {tokenizer.name} is a slow (Python) Hugging Face tokenizer: only fast ones can be saved "
                "so that they encode exactly as training did"
            )
        # training encoded with add_special_tokens=False: drop the post-processor (e.g. Llama's BOS) from the copy
        backend = Backend.from_str(backend.to_str())
        backend.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B", special_tokens=[])
        bos, eos = backend.id_to_token(tokenizer.bos_id), backend.id_to_token(tokenizer.eos_id)
    elif isinstance(tokenizer, ByteTokenizer):
        backend, bos, eos = _byte_backend(), BOS_TOKEN, EOS_TOKEN
    elif isinstance(tokenizer, BPETokenizer):
        backend, bos, eos = Backend.from_str(tokenizer.backend.to_str()), tokenizer.bos_token, tokenizer.eos_token
    else:
        raise TypeError(f"no Hugging Face export for tokenizer {tokenizer!r}")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=eos,  # batching clients need a pad token; the attention mask hides it
        split_special_tokens=True,
        clean_up_tokenization_spaces=False,
        model_max_length=int(1e30),  # no positional limit in a TTT model
    )
