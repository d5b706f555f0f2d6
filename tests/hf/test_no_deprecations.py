"""Our own code calls transformers under the installed release's names: no deprecation message comes from ttt."""

from __future__ import annotations

import io

import torch

from ttt import TTTCache
from ttt.data.byte import ByteTokenizer
from ttt.generate import generate_text
from ttt.hf_compat import enable_activation_checkpointing, output_cache

from .helpers import deprecations, tiny_model


def test_generate_sessions_forward_and_checkpointing_emit_no_deprecation(tmp_path):
    model = tiny_model("ttt-mlp-tiny", vocab_size=258).float()
    tokenizer = ByteTokenizer()
    with deprecations() as found:
        session = tmp_path / "s.safetensors"
        first = generate_text(
            model, tokenizer, "ROMEO:", max_new_tokens=5, stream=io.StringIO(), save_state=str(session)
        )
        again = generate_text(model, tokenizer, "", max_new_tokens=5, stream=None, load_state=str(session))
        out = model(torch.randint(0, 258, (1, 9)), use_cache=True)
        assert isinstance(output_cache(out), TTTCache)
        assert isinstance(
            output_cache(
                model.generate(
                    torch.ones(1, 3, dtype=torch.long), max_new_tokens=2, return_dict_in_generate=True, pad_token_id=0
                )
            ),
            TTTCache,
        )
        model.train()
        enable_activation_checkpointing(model)
        model(torch.randint(0, 258, (2, 9)), labels=torch.randint(0, 258, (2, 9))).loss.backward()
    assert first == again
    assert found == []
