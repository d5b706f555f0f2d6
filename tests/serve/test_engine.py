"""The engine without HTTP: the queue counts free slots, a drain keeps a finished row's reason and a second drain
never extends the grace period, a scheduler error reaches the client as an id (the traceback goes to the log), and
rows of a float32 model do not depend on their batch-mates."""

from __future__ import annotations

import copy
import threading
import time

import pytest
import torch

from ttt.serve.engine import Engine, Event, QueueFull, Row, SessionRef
from ttt.serve.metrics import Metrics
from ttt.serve.sampling import SamplingParams
from ttt.serve.store import DiskStore

from .helpers import BOS, reference


class Sink:
    """Collects a row's events; `wait()` returns them once the row has ended."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.ended = threading.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if event.kind != "token":
            self.ended.set()

    def wait(self, timeout: float = 60) -> list[Event]:
        assert self.ended.wait(timeout), "the row did not end"
        return self.events

    def tokens(self) -> list[int]:
        return [e.token for e in self.wait() if e.kind == "token" and e.token is not None]


def make_row(tokenizer, prompt: list[int], max_tokens: int = 8, session: SessionRef | None = None) -> Row:
    return Row(
        prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0), Sink(), tokenizer, seed=0, session=session
    )


@pytest.fixture
def engine(model, tokenizer, tmp_path):
    made = Engine(model, tokenizer, DiskStore(tmp_path / "sessions"), Metrics(), max_batch=4, max_queue=4)
    yield made
    if made._thread is not None:
        made.stop()


def test_a_burst_is_not_refused_while_slots_are_free(engine, tokenizer):
    engine._running = True  # accepting, the scheduler not started: every row stays queued
    for i in range(8):  # 4 free slots + a queue of 4
        engine.submit([make_row(tokenizer, [BOS, i])])
    with pytest.raises(QueueFull):
        engine.submit([make_row(tokenizer, [BOS])])


def test_drain_keeps_the_reason_of_a_finished_row(engine, tokenizer):
    engine._running = True
    row = make_row(tokenizer, [BOS, 1, 2, 3], session=SessionRef("public", "sess_" + "a" * 24, None))
    engine.submit([row])
    engine._iteration()  # admitted, prompt read, first token taken
    assert row.phase == "decode"
    row.finish_reason, row.phase = "stop", "flush"  # as a stop string leaves it: its last token not read yet
    engine.begin_drain(0.0)
    engine._iteration()
    done = [e for e in row.emit.events if e.kind == "done"]
    assert [e.finish_reason for e in done] == ["stop"]
    done[0].saved.result(10)


def test_a_second_drain_does_not_extend_the_grace_period(engine):
    engine.begin_drain(10.0)
    first = engine._drain_deadline
    time.sleep(0.01)
    engine.begin_drain(10.0)
    assert engine._drain_deadline == first
    engine.begin_drain(0.0)
    assert engine._drain_deadline < first


def test_scheduler_error_gives_an_id_not_a_traceback(engine, tokenizer, monkeypatch):
    def broken(rows):
        raise RuntimeError("internal detail the client must not see")

    monkeypatch.setattr(engine, "_decode", broken)
    engine.start()
    row = make_row(tokenizer, [BOS, 5, 6])
    engine.submit([row])
    [error] = [e for e in row.emit.wait() if e.kind == "error"]
    assert error.status == 500 and "err_" in error.message
    assert "Traceback" not in error.message and "internal detail" not in error.message


def test_float32_rows_do_not_depend_on_batch_mates(model, tokenizer, tmp_path):
    model32 = copy.deepcopy(model).float()
    engine = Engine(model32, tokenizer, DiskStore(tmp_path / "s"), Metrics(), max_batch=4)
    engine.start()
    try:
        prompts = [[BOS, *range(7 + 5 * i, 20 + 9 * i)] for i in range(4)]
        alone = []
        for p in prompts:
            row = make_row(tokenizer, p, max_tokens=12)
            engine.submit([row])
            alone.append(row.emit.tokens())
        rows = [make_row(tokenizer, p, max_tokens=12) for p in prompts]
        engine.submit(rows)
        together = [row.emit.tokens() for row in rows]
    finally:
        engine.stop()
    assert together == alone
    with torch.no_grad():
        assert alone == [reference(model32, p, 12)[: len(a)] for p, a in zip(prompts, alone)]
