"""transformers' Trainer trains a TTT model on the bundled corpus; under gradient accumulation (4 micro-batches of 2
rows) one optimizer step sees the loss and the gradients of one batch of 8 rows (the model honours
`num_items_in_batch`: rows score different numbers of targets here, so a mean of means would differ)."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer, TrainingArguments

from ttt import TTTForCausalLM, get_preset
from ttt.data import load_prepared

pytest.importorskip("accelerate")


class Rows(torch.utils.data.Dataset):
    """Windows of the prepared corpus as {"input_ids", "labels"}; BOS targets are not scored (-100), as in ttt train,
    and each row has a different number of unscored targets."""

    def __init__(self, windows: list[torch.Tensor], bos_id: int) -> None:
        self.rows = []
        for i, window in enumerate(windows):
            labels = window.clone()
            labels[labels == bos_id] = -100
            labels[1 : 1 + 3 * i] = -100
            self.rows.append({"input_ids": window, "labels": labels})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.rows[i]


def model_for(data) -> TTTForCausalLM:
    torch.manual_seed(0)
    return TTTForCausalLM(get_preset("ttt-linear-tiny", vocab_size=data.tokenizer.vocab_size)).double()


def arguments(tmp_path, **kw) -> TrainingArguments:
    base = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        lr_scheduler_type="constant",
        warmup_steps=0,
    )
    return TrainingArguments(**{**base, **kw})


def test_trainer_trains_on_the_bundled_corpus(tmp_path, bundled_bytes):
    data = load_prepared(bundled_bytes)
    rows = Rows([data.windows("train", 64)[i] for i in range(160)], data.tokenizer.bos_id)
    model = model_for(data).float()
    args = arguments(tmp_path, per_device_train_batch_size=8, max_steps=20, learning_rate=3e-3)
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 20 and losses[-1] < 0.8 * losses[0]
    trainer.save_model(tmp_path / "saved")
    loaded = TTTForCausalLM.from_pretrained(tmp_path / "saved").eval()
    ids = rows[0]["input_ids"][None]
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model.eval()(ids).logits)


def step_deltas(tmp_path, data, rows, batch: int, accumulation: int) -> tuple[float, dict[str, torch.Tensor]]:
    """One SGD step (lr 1, no clipping) over the 8 rows; the parameter change is −gradient."""
    model = model_for(data)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = arguments(
        tmp_path / f"b{batch}",
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=1.0,
        optim="sgd",
        weight_decay=0.0,
        max_grad_norm=0.0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    loss = trainer.train().training_loss
    return loss, {n: before[n] - p.detach() for n, p in model.named_parameters()}


def test_gradient_accumulation_equals_one_batch(tmp_path, bundled_bytes):
    data = load_prepared(bundled_bytes)
    rows = Rows([data.windows("train", 64)[i] for i in range(8)], data.tokenizer.bos_id)
    one_loss, one = step_deltas(tmp_path, data, rows, batch=8, accumulation=1)
    acc_loss, accumulated = step_deltas(tmp_path, data, rows, batch=2, accumulation=4)
    # the reference: the model's loss over all 8 rows at once, and its gradients
    model = model_for(data)
    batch = torch.utils.data.default_collate([rows[i] for i in range(8)])
    loss = model(**batch).loss
    loss.backward()
    # the Trainer accumulates the reported loss in float32
    assert abs(one_loss - loss.item()) < 1e-6 and abs(acc_loss - loss.item()) < 1e-6
    for name, p in model.named_parameters():
        assert torch.allclose(one[name], p.grad, rtol=1e-9, atol=1e-12), name
        assert torch.allclose(accumulated[name], p.grad, rtol=1e-9, atol=1e-12), name
