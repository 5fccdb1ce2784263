"""Continuous batching: one thread admits requests between decode steps and runs every running request, whatever
its adapter, in one forward pass per step.

A new request is prefilled alone (exactly what `generate` computes for it), its KV copied into a free slot of the
running batch, and from then on it decodes together with the others. Finished and cancelled requests leave between
steps; their slots are reused.
"""
from __future__ import annotations

import collections
import inspect
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .kvcache import SlotCache
from .lora import LoraBatch, LoraContext
from .sampling import next_tokens

log = logging.getLogger("swiftlike.serve")


class QueueFull(Exception):
    pass


@dataclass(eq=False)
class Request:
    """One generation. `sink(token, finish_reason)` is called from the engine thread: a token (or None) and, on the
    last call, why it ended: stop | length | cancelled | error."""
    prompt_ids: list
    max_tokens: int
    sink: Callable
    adapter: object = None  # a lora.ResidentAdapter, held (and pinned) for the whole request
    temperature: float = 0.0
    top_p: float = 1.0
    seed: Optional[int] = None
    stop_ids: frozenset = frozenset()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    output: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    cancelled: bool = False
    generator: Optional[torch.Generator] = None
    admitted_at: float = 0.0

    def __post_init__(self):
        if self.temperature > 0:
            self.generator = torch.Generator()
            self.generator.manual_seed(self.seed if self.seed is not None else int.from_bytes(os.urandom(8), "little"))


class Engine:
    def __init__(self, model, ctx: LoraContext, *, max_batch_size: int = 32, max_queue: int = 256,
                 max_prefill_tokens: int = 8192, pad_token_id: int = 0):
        self.model = model
        self.ctx = ctx
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.max_prefill_tokens = max_prefill_tokens
        self.pad_token_id = pad_token_id
        self.device = next(model.parameters()).device
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.num_layers = config.num_hidden_layers
        # only the last position's logits are needed (what generate asks for, where the model supports it)
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters \
            else {}
        self.cache = SlotCache(self.num_layers, max_batch_size)
        self.slots: list[Optional[Request]] = [None] * max_batch_size
        self.waiting: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.stats = collections.Counter()  # decode_steps, decode_rows, prefills, prompt_tokens, generated_tokens
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    # -- control (any thread) -----------------------------------------------------------------------------------
    def start(self) -> "Engine":
        self._thread = threading.Thread(target=self._loop, name="swiftlike-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.cond:
            self._stopping = True
            self.cond.notify_all()
        if self._thread:
            self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, req: Request) -> None:
        with self.cond:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests waiting")
            self.waiting.append(req)
            self.cond.notify()

    def cancel(self, req: Request) -> None:
        req.cancelled = True  # leaves the batch before the next step
        with self.cond:
            self.cond.notify()

    @property
    def running(self) -> int:
        return sum(r is not None for r in self.slots)

    # -- engine thread ------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self.cond:
                    while not self._stopping and not self.waiting and not self.running:
                        self.cond.wait()
                    if self._stopping:
                        break
                    admitted = self._admit()
                try:
                    for slot, req in admitted:
                        self._prefill(slot, req)
                    self._drop_cancelled()
                    if self.running:
                        self._decode()
                    else:
                        self.cache.clear()
                except Exception as err:  # keep serving: fail what was running, start from an empty batch
                    log.exception("engine step failed")
                    self._reset(err)
        for req in list(self.waiting) + [r for r in self.slots if r is not None]:
            self._finish(req, "cancelled")

    def _admit(self) -> list:
        if any(r.cancelled for r in self.waiting):  # clients gone while queued: free their places now
            for req in [r for r in self.waiting if r.cancelled]:
                self._finish(req, "cancelled")
            self.waiting = collections.deque(r for r in self.waiting if not r.cancelled)
        free = [i for i, r in enumerate(self.slots) if r is None]
        out, budget = [], self.max_prefill_tokens
        while self.waiting and len(out) < len(free):
            req = self.waiting[0]
            if out and len(req.prompt_ids) > budget:
                break  # prefill the rest after the next decode step, so running requests keep moving
            self.waiting.popleft()
            budget -= len(req.prompt_ids)
            out.append((free[len(out)], req))
        return out

    def _prefill(self, slot: int, req: Request) -> None:
        if req.cancelled:
            self._finish(req, "cancelled")
            return
        req.admitted_at = time.perf_counter()
        try:
            ids = torch.tensor([req.prompt_ids], dtype=torch.long, device=self.device)
            with self.ctx.use(LoraBatch.of([req.adapter])):
                out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True,
                                 **self._last_only)
            token = next_tokens(out.logits[:, -1, :].float(), [req])[0]
        except Exception as err:  # a bad request must not take the server down
            log.exception("prefill failed")
            self._finish(req, "error", err)
            return
        self.stats["prefills"] += 1
        self.stats["prompt_tokens"] += len(req.prompt_ids)
        if self._emit(req, token):
            return
        layers = out.past_key_values.layers
        try:
            self.cache.insert(slot, [la.keys for la in layers], [la.values for la in layers])
        except Exception as err:  # e.g. out of memory growing the cache
            log.exception("could not add a request to the batch")
            self._finish(req, "error", err)
            return
        self.slots[slot] = req

    def _drop_cancelled(self) -> None:
        for i, req in enumerate(self.slots):
            if req is not None and req.cancelled:
                self.slots[i] = None
                self._finish(req, "cancelled")

    def _decode(self) -> None:
        active = [i for i, r in enumerate(self.slots) if r is not None]
        rows = active[-1] + 1
        self.cache.prepare_step(active)
        self.cache.rows = rows
        reqs = self.slots[:rows]
        ids = torch.tensor([[r.output[-1] if r else self.pad_token_id] for r in reqs], device=self.device)
        mask, positions = self.cache.decode_inputs(active, self.device)
        try:
            with self.ctx.use(LoraBatch.of([r.adapter if r else None for r in reqs], self.ctx.bank)):
                out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                 past_key_values=self.cache, use_cache=True, **self._last_only)
            self.cache.length += 1
            logits = out.logits[:, -1, :].float()
            tokens = next_tokens(logits[active], [reqs[i] for i in active])
        except Exception as err:
            log.exception("decode step failed; failing the running requests")
            self._reset(err)
            return
        self.stats["decode_steps"] += 1
        self.stats["decode_rows"] += len(active)
        for i, token in zip(active, tokens):
            if self._emit(self.slots[i], token):
                self.slots[i] = None

    def _reset(self, err: Exception) -> None:
        for i, req in enumerate(self.slots):
            if req is not None:
                self.slots[i] = None
                self._finish(req, "error", err)
        self.cache = SlotCache(self.num_layers, self.max_batch_size)

    def _emit(self, req: Request, token: int) -> bool:
        """Hand one token to the request; True when that ended it."""
        req.output.append(token)
        req.counts[token] = req.counts.get(token, 0) + 1
        self.stats["generated_tokens"] += 1
        finish = "stop" if token in req.stop_ids else "length" if len(req.output) >= req.max_tokens else None
        self._call(req, token, finish)
        return finish is not None

    def _finish(self, req: Request, reason: str, err: Exception | None = None) -> None:
        self._call(req, None, reason if err is None else f"error: {type(err).__name__}: {err}")

    @staticmethod
    def _call(req: Request, token, finish) -> None:
        try:
            req.sink(token, finish)
        except Exception:  # a consumer that went away must not stop the engine
            log.debug("request sink failed", exc_info=True)
