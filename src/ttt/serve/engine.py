"""The engine: one scheduler thread owns the model and a pool of `max_batch` state slots (continuous batching).

Each iteration:
1. free the slots of rows whose client went away (their session stored as far as it got, or not at all when the
   prompt was not read yet);
2. admit queued rows into free slots (a fresh state, or the session's state);
3. prefill: each row still reading its prompt reads its next chunk (≤ `prefill_chunk` tokens, ≤ `prefill_budget`
   tokens over all rows), rows with chunks of the same length in one forward; a row that finishes its prompt
   samples its first token;
4. decode: one batched step over every decoding row (its last token in, the next token out);
5. rows that end (EOS, stop string, max_tokens) leave their slot; a row with a session first reads its last token
   (one more step) so that the stored state holds prompt + completion, then the state is stored (a saver thread)
   and the client gets its final event once it is stored.

A single-token forward may run at more rows than take part: the compiled decode graph is traced at the pool size,
and an AOT decode package (`ttt export`) exists for some batch sizes only, so the step is padded up to such a size
with copies of the first row's state; only the real rows are scattered back, so padding never touches a slot.

Rows are gathered from the pool for a forward and scattered back (`SlotPool`), each row samples with its own
generator: a row's tokens do not depend on its batch-mates. A forward that raises is retried row by row, so only
the failing row gets the error; a row whose logits are not finite fails alone (HTTP 500), the others go on.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..data import Tokenizer
from ..models import weights_format
from ..ops import layer_weight
from .codec import SessionCodec
from .metrics import Metrics
from .sampling import SamplingParams, TextTracker, choose, logprob_info
from .slots import RowState, SlotPool
from .store import SessionStore

log = logging.getLogger("ttt.serve")


class QueueFull(Exception):
    """More rows waiting than the queue holds (HTTP 429)."""


class Unavailable(Exception):
    """The engine is shutting down or not running (HTTP 503)."""


@dataclass
class Event:
    """What a row tells its client: kind "token" (text, token, logprob), "done" (text still held back,
    finish_reason, `saved`: the future of the session's store when it has one) or "error" (status, message)."""

    kind: str
    text: str = ""
    token: int | None = None
    logprob: dict[str, Any] | None = None
    finish_reason: str | None = None
    status: int = 500
    message: str = ""
    saved: Future[None] | None = None


@dataclass
class SessionRef:
    """The session a row continues: where it is stored and its state (None: a new, empty session)."""

    owner: str
    sid: str
    state: RowState | None


@dataclass
class Row:
    """One sequence being generated (one choice of a request). `emit` is called from the engine thread."""

    prompt: list[int]
    params: SamplingParams
    emit: Callable[[Event], None]
    tokenizer: Tokenizer
    seed: int | None = None
    session: SessionRef | None = None
    arrived: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    slot: int = -1
    phase: str = "queued"  # queued -> prefill -> decode [-> flush] -> done
    read: int = 0  # prompt tokens read
    tokens: int = 0  # tokens in the state (session history included)
    generated: list[int] = field(default_factory=list)
    pending: int | None = None  # the last sampled token, not read yet
    finish_reason: str | None = None
    stop_hit: bool = False  # a stop string ended the text (what follows it is never sent)
    last_token_at: float = 0.0
    order: int = 0

    def __post_init__(self) -> None:
        self.text = TextTracker(self.tokenizer, self.params.stops)
        self.generator = torch.Generator().manual_seed(secrets.randbits(63) if self.seed is None else self.seed)
        if self.session is not None and self.session.state is not None:
            self.tokens = self.session.state.tokens


class _CountedArtifact:
    """An AOT decode package whose steps are counted (`ttt_decode_package_steps_total`)."""

    def __init__(self, artifact: Any, metrics: Metrics) -> None:
        self.artifact, self.metrics = artifact, metrics

    def step(self, input_ids: Tensor, cache: Any, model: Any) -> Tensor | None:
        logits = self.artifact.step(input_ids, cache, model)
        if logits is not None:
            self.metrics.package_steps.inc()
        return logits


class Engine:
    """Continuous batching over a fixed pool of state slots for `model` (a TTTForCausalLM, eval mode).

    max_batch: slots (rows decoded together); max_queue: rows that may wait for a slot (beyond: QueueFull);
    prefill_chunk / prefill_budget: prompt tokens per row / over all rows per iteration. `start()` runs the scheduler
    thread; `submit` queues rows; `begin_drain` stops admitting and cuts the rows still running after the grace
    period; `stop()` ends the thread after storing the sessions still being saved."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        store: SessionStore,
        metrics: Metrics,
        max_batch: int = 8,
        max_queue: int = 64,
        prefill_chunk: int = 512,
        prefill_budget: int = 2048,
    ) -> None:
        self.model, self.tokenizer, self.store, self.metrics = model, tokenizer, store, metrics
        self.config: Any = getattr(model, "config")  # noqa: B009  (a TTTConfig; nn.Module types attributes as Tensor | Module)
        self.pool = SlotPool(model, max_batch)
        self.codec = SessionCodec(model, self.pool.fresh, self.config.mini_batch_size)
        self.max_batch, self.max_queue = max_batch, max_queue
        self.prefill_chunk, self.prefill_budget = prefill_chunk, max(prefill_budget, prefill_chunk)
        # the compiled decode graph is traced per batch size: decode every step at the full pool size
        self.fixed_decode_batch = getattr(self.config, "ttt_implementation", "") == "compiled"
        self.decode_sizes = self._packaged_sizes(model, metrics)
        self.eos_id = tokenizer.eos_id
        self.slots: list[Row | None] = [None] * max_batch
        self._queue: deque[Row] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._running = False
        self._draining = False
        self._drain_deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._saver = ThreadPoolExecutor(1, thread_name_prefix="ttt-session-saver")
        self._sessions_in_use: set[tuple[str, str]] = set()
        self._admitted = 0
        metrics.pool_bytes.set(self.pool.nbytes())

    def _packaged_sizes(self, model: nn.Module, metrics: Metrics) -> list[int]:
        """The batch sizes of the model's AOT decode packages that fit the pool's state dtype and the model's weight
        format (the rest of a package's key, as `TTTForCausalLM._artifact_decode` looks it up), sorted; their steps
        get counted."""
        artifacts = getattr(model, "_decode_artifacts", None)
        use = getattr(model, "use_decode_artifacts", None)
        if not artifacts or use is None:
            return []
        rest = (layer_weight(self.pool.cache.layers[0].ttt.params, 0).dtype, weights_format(model))
        use({key: _CountedArtifact(a, metrics) for key, a in artifacts.items()}, getattr(model, "_artifact_weights"))  # noqa: B009
        return sorted(key[0] for key in artifacts if tuple(key[1:]) == rest)

    def _decode_rows(self, n: int) -> int:
        """The batch size a single-token forward of `n` rows runs at (padded up to a packaged or compiled size)."""
        if self.fixed_decode_batch:
            return self.max_batch
        return next((b for b in self.decode_sizes if b >= n), n)

    @property
    def draining(self) -> bool:
        return self._draining

    # -- called from other threads --------------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="ttt-engine", daemon=True)
        self._thread.start()

    def submit(self, rows: list[Row]) -> None:
        """Queue `rows` (all or none). Raises QueueFull or Unavailable."""
        with self._lock:
            if self._draining or not self._running:
                raise Unavailable("the server is shutting down")
            # rows that will find a free slot at the next iteration do not wait
            free = sum(r is None for r in self.slots)
            if len(self._queue) + len(rows) > self.max_queue + free:
                raise QueueFull(f"{len(self._queue)} requests are waiting (the queue holds {self.max_queue})")
            self._queue.extend(rows)
            self.metrics.queued.set(len(self._queue))
        self._wake.set()

    def cancel(self, row: Row) -> None:
        """The client of `row` went away: free its slot at the next iteration."""
        row.cancelled = True
        self._wake.set()

    def claim_session(self, owner: str, sid: str) -> bool:
        """Mark a session as in use by a request of this process; False when another request holds it."""
        with self._lock:
            if (owner, sid) in self._sessions_in_use:
                return False
            self._sessions_in_use.add((owner, sid))
            return True

    def release_session(self, owner: str, sid: str) -> None:
        with self._lock:
            self._sessions_in_use.discard((owner, sid))

    def begin_drain(self, grace_s: float) -> None:
        """Stop admitting: queued rows are refused (503); rows in slots go on for `grace_s` seconds, then are cut
        (finish_reason "length", sessions stored as far as they got). A second call never extends the deadline."""
        with self._lock:
            self._draining = True
            self._drain_deadline = min(self._drain_deadline, time.monotonic() + grace_s)
        self._wake.set()

    def idle(self) -> bool:
        """No row in a slot or in the queue."""
        with self._lock:
            return not self._queue and all(r is None for r in self.slots)

    def stop(self) -> None:
        """End the scheduler thread (rows still there are cut) and wait for the sessions being stored."""
        self.begin_drain(0.0)
        self._running = False
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self._saver.shutdown(wait=True)

    # -- the scheduler thread --------------------------------------------------------------------------------------

    def _loop(self) -> None:
        with torch.inference_mode():
            while self._running or any(r is not None for r in self.slots):
                try:
                    busy = self._iteration()
                except Exception:  # a bug in the scheduler itself: fail every row, keep serving
                    # the traceback goes to the server's log, the clients get its id
                    error_id = "err_" + secrets.token_hex(6)
                    log.exception("engine error %s", error_id)
                    for row in [r for r in self.slots if r is not None]:
                        self._fail(row, 500, f"internal engine error (id {error_id}, in the server's log)")
                    busy = False
                if not busy:
                    self._wake.wait(0.05)
                    self._wake.clear()

    def _iteration(self) -> bool:
        self._reap()
        self._drain()
        self._admit()
        active = [r for r in self.slots if r is not None]
        self.metrics.active.set(len(active))
        self.metrics.state_bytes.set(len(active) * self.pool.row_nbytes)
        if not active:
            return False
        self._prefill([r for r in active if r.phase == "prefill"])
        self._decode([r for r in self.slots if r is not None and r.phase in ("decode", "flush")])
        return True

    def _reap(self) -> None:
        with self._lock:
            gone = [r for r in self._queue if r.cancelled]
            for row in gone:
                self._queue.remove(row)
            self.metrics.queued.set(len(self._queue))
        for row in gone:
            self._end_session(row, save=False)
        for row in [r for r in self.slots if r is not None and r.cancelled]:
            # a prompt read in part is not a state worth keeping: store the session only after the prompt
            self._release(row, "cancelled", save=row.phase != "prefill")

    def _drain(self) -> None:
        if not self._draining:
            return
        with self._lock:
            refused = list(self._queue)
            self._queue.clear()
            self.metrics.queued.set(0)
        for row in refused:
            self._end_session(row, save=False)
            row.emit(Event("error", status=503, message="the server is shutting down"))
        if time.monotonic() >= self._drain_deadline:
            for row in [r for r in self.slots if r is not None]:
                # a row that already ended (waiting to read its last token) keeps its reason
                self._release(row, row.finish_reason or "length", save=row.phase != "prefill")

    def _admit(self) -> None:
        free = [i for i, r in enumerate(self.slots) if r is None]
        while free:
            with self._lock:
                if not self._queue:
                    break
                row = self._queue.popleft()
                self.metrics.queued.set(len(self._queue))
            slot = free.pop(0)
            try:
                self.pool.load(slot, row.session.state if row.session is not None else None)
            except ValueError as err:
                self._end_session(row, save=False)
                row.emit(Event("error", status=500, message=f"the session's state does not fit: {err}"))
                continue
            row.slot, row.phase, row.order = slot, "prefill", self._admitted
            self._admitted += 1
            self.slots[slot] = row

    def _forward(self, rows: list[Row], ids: list[list[int]]) -> list[Tensor | Exception]:
        """Last-position logits [V] per row after reading `ids` (same length for all rows) into their slots; an
        exception for a row whose forward failed (the batch is retried row by row) or whose logits are not finite."""
        try:
            return self._forward_batch(rows, ids)
        except Exception as err:
            if len(rows) == 1:
                return [err]
        out: list[Tensor | Exception] = []
        for row, seq in zip(rows, ids):
            try:
                out += self._forward_batch([row], [seq])
            except Exception as err:
                out.append(err)
        return out

    def _forward_batch(self, rows: list[Row], ids: list[list[int]]) -> list[Tensor | Exception]:
        n = len(rows)
        slots = [r.slot for r in rows]
        if len(ids[0]) == 1:
            # padding rows: copies of the first row's state and input (a real state, so the step is a plain one a
            # package runs); they are not scattered back
            pad = self._decode_rows(n) - n
            slots += [slots[0]] * pad
            ids = ids + [ids[0]] * pad
        self.metrics.batch_rows.observe(n)
        device = self.pool.cache.layers[0].ttt.offset.device
        index = torch.tensor(slots, dtype=torch.long, device=device)
        sub = self.pool.gather(index)
        inputs = torch.tensor(ids, dtype=torch.long, device=device)
        logits = self.model(input_ids=inputs, cache=sub, use_cache=True, logits_to_keep=1).logits[:, -1]
        self.pool.scatter(index[:n], sub, n)
        finite = torch.isfinite(logits).all(-1).tolist()
        return [
            logits[i] if finite[i] else FloatingPointError("the model's output is not finite (the state has blown up)")
            for i in range(len(rows))
        ]

    def _prefill(self, rows: list[Row]) -> None:
        budget = self.prefill_budget
        groups: dict[int, list[Row]] = {}
        for row in sorted(rows, key=lambda r: r.order):
            if budget <= 0:
                break
            n = min(len(row.prompt) - row.read, self.prefill_chunk, budget)
            groups.setdefault(n, []).append(row)
            budget -= n
        for n, group in groups.items():
            chunks = [r.prompt[r.read : r.read + n] for r in group]
            for row, out in zip(group, self._forward(group, chunks)):
                if isinstance(out, Exception):
                    self._fail(row, 500, f"{type(out).__name__}: {out}")
                    continue
                row.read += n
                row.tokens += n
                if row.read == len(row.prompt):
                    self.metrics.prompt_tokens.inc(len(row.prompt))
                    self._take(row, out)

    def _decode(self, rows: list[Row]) -> None:
        if not rows:
            return
        outs = self._forward(rows, [[r.pending if r.pending is not None else self.eos_id] for r in rows])
        for row, out in zip(rows, outs):
            if isinstance(out, Exception):
                self._fail(row, 500, f"{type(out).__name__}: {out}")
                continue
            row.pending = None
            row.tokens += 1
            if row.phase == "flush":
                self._release(row, row.finish_reason or "stop", save=True)
            else:
                self._take(row, out)

    def _take(self, row: Row, logits: Tensor) -> None:
        """Choose the row's next token from its logits, send it, and end the row when it is done."""
        token = choose(logits, row.params, row.generator)
        lp = None
        if row.params.logprobs is not None:
            lp = logprob_info(logits, token, row.params.logprobs, self.tokenizer)
        row.generated.append(token)
        row.pending = token
        text, stopped = row.text.add(token)
        row.stop_hit = stopped
        now = time.monotonic()
        if len(row.generated) == 1:
            self.metrics.ttft.observe(now - row.arrived)
        else:
            self.metrics.itl.observe(now - row.last_token_at)
        row.last_token_at = now
        self.metrics.generated_tokens.inc()
        row.emit(Event("token", text=text, token=token, logprob=lp))
        if (token == self.eos_id and not row.params.ignore_eos) or stopped:
            row.finish_reason = "stop"
        elif len(row.generated) >= row.params.max_tokens:
            row.finish_reason = "length"
        else:
            row.phase = "decode"
            return
        if row.session is not None:
            row.phase = "flush"  # read the last token too, so the stored state holds the whole completion
        else:
            self._release(row, row.finish_reason, save=False)

    def _release(self, row: Row, reason: str, save: bool) -> None:
        """Free the row's slot; store its session (when `save`) and send the final event once it is stored."""
        state = self.pool.read(row.slot, row.tokens) if save and row.session is not None else None
        self.slots[row.slot] = None
        row.phase = "done"
        tail = "" if row.stop_hit else row.text.flush()
        saved = self._end_session(row, save=state is not None, state=state)
        row.emit(Event("done", text=tail, finish_reason=reason, saved=saved))

    def _fail(self, row: Row, status: int, message: str) -> None:
        if row.slot >= 0 and self.slots[row.slot] is row:
            self.slots[row.slot] = None
        row.phase = "done"
        self._end_session(row, save=False)
        row.emit(Event("error", status=status, message=message))

    def _end_session(self, row: Row, save: bool, state: RowState | None = None) -> Future[None] | None:
        if row.session is None:
            return None
        ref = row.session
        if not save or state is None:
            self.release_session(ref.owner, ref.sid)
            return None

        def store() -> None:
            try:
                self.store.put(ref.owner, ref.sid, self.codec.encode(state))
            finally:
                self.release_session(ref.owner, ref.sid)

        return self._saver.submit(store)
