"""Continuous batching (what `swiftlike serve` and `swiftlike eval` generate with): one thread admits requests
between decode steps and runs every running request, whatever its adapter, in one forward pass per step.

New requests are prefilled together: prompts admitted in the same step go through one forward, right-padded (causal
attention never lets a real token see the padding after it, so every prompt token is computed as if alone), the
next-token logits read at each prompt's own last position. A prompt admitted alone, or longer than a prefill chunk,
is prefilled alone (exactly what `generate` computes for it; long prompts in chunks). Each prompt's KV is copied into
a free slot of the running batch, and from then on it decodes together with the others. Finished and cancelled
requests leave between steps; their slots are reused.

Memory: a request is admitted only when the KV cache the batch could then need (every row as long as the longest
reservation, prompt + max_tokens) fits `max_kv_bytes`; otherwise it waits. The cache is freed when the engine is idle.

Threads: the engine thread alone runs forwards, and so alone touches the LoRA layers' stacked-weights caches; other
threads ask it to forget an adapter through `forget_adapter`.
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

from .kvcache import PrefillCache, SlotCache
from .lora import LoraBatch, LoraContext
from .memory import human, release_memory
from .sampling import next_tokens

log = logging.getLogger(__name__)


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
    stop: tuple = ()  # stop strings: serve's TextStream cuts the text at them; vLLM (--infer_backend vllm) stops there
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0  # transformers' (infer's --repetition_penalty); 1 = none
    output: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    cancelled: bool = False
    generator: Optional[torch.Generator] = None
    admitted_at: float = 0.0
    total: int = 0  # KV columns reserved: prompt + max_tokens (set when queued)

    def __post_init__(self):
        if self.temperature > 0:
            self.generator = torch.Generator()
            self.generator.manual_seed(self.seed if self.seed is not None else int.from_bytes(os.urandom(8), "little"))


class _Held:
    """One request's keys and values of one layer, cut from a group prefill (SlotCache.insert empties it)."""
    __slots__ = ("keys", "values")

    def __init__(self, keys, values):
        self.keys, self.values = keys, values


class Engine:
    PREFILL_CHUNK = 512  # prompts longer than this are prefilled in pieces: activations stay small
    GROUP_PREFILL_TOKENS = 2048  # padded tokens of prompts prefilled in one forward

    def __init__(self, model, ctx: LoraContext, *, max_batch_size: int = 32, max_queue: int = 256,
                 max_prefill_tokens: int = 8192, pad_token_id: int = 0, max_kv_bytes: Optional[int] = None,
                 context_length: Optional[int] = None):
        self.model = model
        self.ctx = ctx
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.max_prefill_tokens = max_prefill_tokens
        self.pad_token_id = pad_token_id
        self.max_kv_bytes = max_kv_bytes
        self.device = next(model.parameters()).device
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.num_layers = config.num_hidden_layers
        self.context_length = context_length or int(getattr(config, "max_position_embeddings", 0) or 0) or None
        # only the last position's logits are needed (what generate asks for, where the model supports it)
        params = inspect.signature(model.forward).parameters
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._group_prefill = bool(self._last_only)  # needs logits_to_keep: each row's own last position
        self._cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers renamed it in 5.x
        self.kv_bytes_per_token = self._measure_kv()
        self.cache = self._new_cache()
        self.slots: list[Optional[Request]] = [None] * max_batch_size
        self.waiting: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.stats = collections.Counter()  # decode_steps, decode_rows, prefills, group_prefills, prompt/generated tokens
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

    def forget_adapter(self, uid: int) -> None:
        """An adapter left memory: the engine thread drops what its LoRA layers stacked from it."""
        self.ctx.forget(uid)
        if self.alive:
            with self.cond:
                self.cond.notify()
        else:  # no engine thread, so no forward can be running: drop it here
            self.ctx.purge()

    @property
    def running(self) -> int:
        return sum(r is not None for r in self.slots)

    def kv_bytes(self, rows: int, columns: int, prefill: int = 0) -> int:
        """KV memory of a batch of `rows` rows × `columns` columns while a `prefill`-token prompt is being added."""
        return (rows * columns + prefill) * self.kv_bytes_per_token

    def kv_token_limit(self, prompt_tokens: int) -> Optional[int]:
        """The most tokens (prompt + completion) one request may reserve within the KV budget, running alone."""
        if self.max_kv_bytes is None:
            return None
        return self.max_kv_bytes // self.kv_bytes_per_token - prompt_tokens

    def _measure_kv(self) -> int:
        """Bytes of KV cache per token (all layers, keys and values), from a one-token forward."""
        with torch.inference_mode():
            ids = torch.tensor([[self.pad_token_id]], device=self.device)
            out = self.model(input_ids=ids, use_cache=True, **self._last_only)
        kv = getattr(out, "cache", None) or out.past_key_values
        return sum(t.numel() * t.element_size() for la in kv.layers for t in (la.keys, la.values))

    def _new_cache(self) -> SlotCache:
        return SlotCache(self.num_layers, self.max_batch_size, max_columns=self.context_length)

    # -- engine thread ------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self.cond:
                    while not self._stopping and not self.waiting and not self.running and not self.ctx.pending:
                        self.cond.wait()
                    if self._stopping:
                        break
                    admitted = self._admit()
                try:
                    self.ctx.purge()
                    if admitted:
                        self.cache.fit()  # shed what finished requests left, before the prefills add theirs
                    self._prefill_all(admitted)
                    self._drop_cancelled()
                    if self.running:
                        self._decode()
                except Exception as err:  # keep serving: fail what was running, start from an empty batch
                    log.exception("engine step failed")
                    self._reset(err)
                if not self.running and self.cache.capacity:
                    self._idle()
        for req in list(self.waiting) + [r for r in self.slots if r is not None]:
            self._finish(req, "cancelled")

    def _idle(self) -> None:
        """Nothing running: give the KV cache's memory back."""
        self.cache.free()
        release_memory(self.device)

    def _admit(self) -> list:
        if any(r.cancelled for r in self.waiting):  # clients gone while queued: free their places now
            for req in [r for r in self.waiting if r.cancelled]:
                self._finish(req, "cancelled")
            self.waiting = collections.deque(r for r in self.waiting if not r.cancelled)
        busy = [i for i, r in enumerate(self.slots) if r is not None]
        free = [i for i, r in enumerate(self.slots) if r is None]
        rows = busy[-1] + 1 if busy else 0
        columns = max((self.slots[i].total for i in busy), default=0)
        out, budget, prefill = [], self.max_prefill_tokens, 0
        while self.waiting and len(out) < len(free):
            req = self.waiting[0]
            if out and len(req.prompt_ids) > budget:
                break  # prefill the rest after the next decode step, so running requests keep moving
            req.total = self._reservation(req)
            slot = free[len(out)]
            need = (max(rows, slot + 1), max(columns, req.total), max(prefill, len(req.prompt_ids)))
            if self.max_kv_bytes is not None and self.kv_bytes(*need) > self.max_kv_bytes:
                if busy or out:
                    break  # wait until running requests finish and free their share of the cache
                self.waiting.popleft()  # too big even alone (the HTTP layer refuses these before queueing)
                self._finish(req, "error", MemoryError(
                    f"the request needs {human(self.kv_bytes(1, req.total, len(req.prompt_ids)))} of KV cache, "
                    f"more than max_kv_memory {human(self.max_kv_bytes)}"))
                continue
            self.waiting.popleft()
            budget -= len(req.prompt_ids)
            rows, columns, prefill = need
            out.append((slot, req))
        if out:
            self.cache.limit = columns
            self.cache.plan_rows = self._plan_rows(rows, columns, prefill)
        return out

    def _reservation(self, req: Request) -> int:
        total = len(req.prompt_ids) + req.max_tokens
        return min(total, self.context_length) if self.context_length else total

    def _plan_rows(self, rows: int, columns: int, prefill: int) -> int:
        """Rows to allocate: room to grow (a power of two, so joining requests rarely reallocate) within budget, and
        the rows already allocated while they are at most twice that and within budget (no copy back and forth)."""
        def fits(n):
            return self.max_kv_bytes is None or self.kv_bytes(n, columns, prefill) <= self.max_kv_bytes

        plan = min(1 << max(rows - 1, 0).bit_length(), self.max_batch_size)
        while plan > rows and not fits(plan):
            plan -= 1
        plan = max(plan, rows)
        have = self.cache.alloc_rows
        return have if plan < have <= 2 * plan and fits(have) else plan

    def _prefill_all(self, admitted: list) -> None:
        """Prefill the requests admitted this step: short prompts of similar length in groups (one forward each,
        its padded size within the prefill and KV budgets), the rest alone."""
        live = []
        for slot, req in admitted:
            if req.cancelled:
                self._finish(req, "cancelled")
            else:
                live.append((slot, req))
        if not self._group_prefill or len(live) < 2:
            for slot, req in live:
                self._prefill(slot, req)
            return
        limit = min(self.max_prefill_tokens, self.GROUP_PREFILL_TOKENS)
        if self.max_kv_bytes is not None:  # the group's KV exists twice for a moment: its own and the batch's copy
            rows = max((i + 1 for i, r in enumerate(self.slots) if r is not None), default=0)
            rows = max([rows] + [slot + 1 for slot, _ in live])
            columns = max(r.total for r in [*(r for r in self.slots if r is not None), *(r for _, r in live)])
            spare = (self.max_kv_bytes - self.kv_bytes(rows, columns)) // self.kv_bytes_per_token
            limit = min(limit, spare)
        live.sort(key=lambda item: len(item[1].prompt_ids))
        group: list = []
        for item in live:
            n = len(item[1].prompt_ids)
            if group and (len(group) + 1) * n > limit:  # sorted by length: n is the group's padded width
                self._prefill_group(group)
                group = []
            if n > self.PREFILL_CHUNK or n > limit:
                self._prefill(*item)
            else:
                group.append(item)
        if group:
            self._prefill_group(group)

    def _prefill_group(self, group: list) -> None:
        if len(group) == 1:
            self._prefill(*group[0])
            return
        lengths = [len(req.prompt_ids) for _, req in group]
        width = max(lengths)
        ids = torch.full((len(group), width), self.pad_token_id, dtype=torch.long)
        for k, (_, req) in enumerate(group):
            ids[k, :lengths[k]] = torch.tensor(req.prompt_ids, dtype=torch.long)
        last = torch.tensor([[n - 1] for n in lengths], device=self.device)
        kv = PrefillCache(self.num_layers, width)
        started = time.perf_counter()
        try:
            with self.ctx.use(LoraBatch.of([req.adapter for _, req in group], self.ctx.bank)):
                # no attention mask: right padding under the causal mask leaves every real token exact
                out = self.model(input_ids=ids.to(self.device), use_cache=True, **{self._cache_arg: kv},
                                 logits_to_keep=last)
            logits = out.logits
            del out
        except Exception as err:  # prefill them one by one: a bad request fails alone
            log.debug("group prefill failed (%s: %s); prefilling alone", type(err).__name__, err)
            logits = None
        if logits is None or tuple(logits.shape[:2]) != (len(group), 1):
            if logits is not None:  # a model that slices logits_to_keep its own way: always prefill alone
                self._group_prefill = False
            for slot, req in group:
                self._prefill(slot, req)
            return
        self.stats["group_prefills"] += 1
        tokens = next_tokens(logits[:, -1, :].float(), [req for _, req in group])
        self._peak(self.cache.nbytes + len(group) * width * self.kv_bytes_per_token)
        for k, ((slot, req), token) in enumerate(zip(group, tokens)):
            req.admitted_at = started
            if isinstance(token, Exception):
                log.warning("prefill failed: %s: %s", type(token).__name__, token)
                self._finish(req, "error", token)
                continue
            self._join(slot, req, token, [_Held(la.keys[k:k + 1, :, :lengths[k]], la.values[k:k + 1, :, :lengths[k]])
                                          for la in kv.layers])

    def _prefill(self, slot: int, req: Request) -> None:
        if req.cancelled:
            self._finish(req, "cancelled")
            return
        req.admitted_at = time.perf_counter()
        n = len(req.prompt_ids)
        kv = PrefillCache(self.num_layers, n)
        try:
            ids = torch.tensor([req.prompt_ids], dtype=torch.long, device=self.device)
            with self.ctx.use(LoraBatch.of([req.adapter])):
                for at in range(0, n, self.PREFILL_CHUNK):  # one piece for most prompts: exactly generate's pass
                    part = ids[:, at:at + self.PREFILL_CHUNK]
                    mask = torch.ones(1, at + part.shape[1], dtype=torch.long, device=self.device)
                    out = self.model(input_ids=part, attention_mask=mask, use_cache=True,
                                     **{self._cache_arg: kv}, **self._last_only)
                    logits = out.logits[:, -1, :].float()
                    del out
            token = next_tokens(logits, [req])[0]
            if isinstance(token, Exception):
                raise token
        except Exception as err:  # a bad request must not take the server down
            log.warning("prefill failed: %s: %s", type(err).__name__, err)
            self._finish(req, "error", err)
            return
        self._peak(self.cache.nbytes + n * self.kv_bytes_per_token)
        self._join(slot, req, token, kv.layers)

    def _join(self, slot: int, req: Request, token: int, layers: list) -> None:
        """A prefilled request: counted, handed its first token and, unless that ended it, its KV (`layers`) copied
        into the running batch."""
        self.stats["prefills"] += 1
        self.stats["prompt_tokens"] += layers[0].keys.shape[-2]
        if self._emit(req, token):
            return
        try:
            self.cache.insert(slot, layers)
        except Exception as err:  # e.g. out of memory growing the cache
            log.exception("could not add a request to the batch")
            self._finish(req, "error", err)
            return
        self.slots[slot] = req
        self._peak(self.cache.nbytes)

    def _peak(self, nbytes: int) -> None:
        if nbytes > self.stats["kv_peak_bytes"]:
            self.stats["kv_peak_bytes"] = nbytes

    def _leave(self, slot: int) -> None:
        self.slots[slot] = None
        self.cache.release(slot)

    def _drop_cancelled(self) -> None:
        for i, req in enumerate(self.slots):
            if req is not None and req.cancelled:
                self._leave(i)
                self._finish(req, "cancelled")

    def _decode(self) -> None:
        active = [i for i, r in enumerate(self.slots) if r is not None]
        rows = active[-1] + 1
        self.cache.prepare_step(active)
        self._peak(self.cache.nbytes)
        self.cache.rows = rows
        reqs = self.slots[:rows]
        ids = torch.tensor([[r.output[-1] if r else self.pad_token_id] for r in reqs], device=self.device)
        mask, positions = self.cache.decode_inputs(active, self.device)
        try:
            with self.ctx.use(LoraBatch.of([r.adapter if r else None for r in reqs], self.ctx.bank)):
                out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                 **{self._cache_arg: self.cache}, **self._last_only)
            self.cache.length += 1
            logits = out.logits[:, -1, :].float()
        except Exception as err:
            log.exception("decode step failed; failing the running requests")
            self._reset(err)
            return
        # one row's sampling failing (non-finite logits from its adapter...) fails that row only
        tokens = next_tokens(logits if len(active) == rows else logits[active], [reqs[i] for i in active])
        self.stats["decode_steps"] += 1
        self.stats["decode_rows"] += len(active)
        for i, token in zip(active, tokens):
            req = self.slots[i]
            if isinstance(token, Exception):
                log.warning("request failed in decode: %s", token)
                self._leave(i)
                self._finish(req, "error", token)
            elif self._emit(req, token):
                self._leave(i)

    def _reset(self, err: Exception) -> None:
        for i, req in enumerate(self.slots):
            if req is not None:
                self.slots[i] = None
                self._finish(req, "error", err)
        self.cache = self._new_cache()

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
