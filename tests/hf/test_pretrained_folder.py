"""A run's Hugging Face folder: written by the trainer at its last step (RUN/final) and by `ttt save-pretrained` for
any checkpoint; it loads with the Auto classes, gives the checkpoint's logits and carries the tokenizer's real ids."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ttt.cli import main
from ttt.eval import load_run_model


def test_final_folder_and_save_pretrained_command(tmp_path, bundled_bytes, capsys):
    run = tmp_path / "run"
    args = ["train", f"--train.out_dir={run}", f"--data.prepared_dir={bundled_bytes}", "--train.steps=4"]
    assert main(args + ["--train.batch_size=2", "--data.seq_len=32", "--train.ckpt_every=2", "--quiet"]) == 0
    reference, _, data, _ = load_run_model(run)
    ids = torch.tensor([[data.tokenizer.bos_id, *data.tokenizer.encode("ROMEO: what light")]])
    with torch.no_grad():
        expected = reference(ids).logits
    older = run / "checkpoints" / "step_00000002"
    assert main(["save-pretrained", str(older), str(tmp_path / "step2")]) == 0
    for folder in (run / "final", tmp_path / "step2"):
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert tokenizer("ROMEO: what light").input_ids == ids[0, 1:].tolist()
        config = json.loads((folder / "config.json").read_text())
        generation = json.loads((folder / "generation_config.json").read_text())
        assert (config["bos_token_id"], config["eos_token_id"]) == (256, 257)
        assert (generation["bos_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (256, 257, 257)
        with torch.no_grad():
            logits = model(ids).logits
        # the final folder is the last checkpoint; step 2 is an earlier one
        assert torch.equal(logits, expected) == (folder.name == "final")
    # an existing folder is not overwritten without --overwrite, and the message names it
    capsys.readouterr()
    assert main(["save-pretrained", str(run), str(tmp_path / "step2")]) == 2
    assert "step2" in capsys.readouterr().err
    assert main(["save-pretrained", str(run), str(tmp_path / "step2"), "--overwrite"]) == 0
