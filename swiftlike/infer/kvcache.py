"""The KV cache of the running batch: row slots sharing one column axis, stored only for the rows in use.

Row i holds its tokens in columns [start[i], length); a decode step writes every row's new key/value at column
`length` in place (no per-step concatenation), and an explicit mask hides each row's columns before its start. A new
request's prefill cache is copied in right-aligned. Storage is `alloc_rows` rows × `capacity` columns: the engine
sizes the rows (`plan_rows`) and caps the columns (`limit`, the longest reservation of a running request), columns no
running row still needs are dropped when the storage is reallocated, and `free` gives everything back when idle.
Reallocation goes one layer at a time, so it never holds two copies of the whole cache.
"""
from __future__ import annotations

from typing import Optional

import torch
from transformers.cache_utils import Cache, DynamicLayer


class _SlotLayer(DynamicLayer):
    def __init__(self, owner: "SlotCache"):
        super().__init__()
        self.owner = owner
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        o = self.owner
        col, n, q = o.length, o.rows, key_states.shape[-2]
        self.keys[:n, :, col:col + q] = key_states
        self.values[:n, :, col:col + q] = value_states
        return self.keys[:n, :, :col + q], self.values[:n, :, :col + q]

    def get_seq_length(self) -> int:
        return self.owner.length


class SlotCache(Cache):
    """KV storage [alloc_rows, heads, capacity, head_dim] per layer; `rows` leading rows take part in a forward."""

    GROW = 128  # column headroom added when the storage grows

    def __init__(self, num_layers: int, slots: int, max_columns: Optional[int] = None):
        super().__init__(layers=[_SlotLayer(self) for _ in range(num_layers)])
        self.slots = slots
        self.max_columns = max_columns  # never more columns than this (the context length)
        self.limit = max_columns  # columns the running requests can still need (set by the engine)
        self.plan_rows = 0  # rows the storage should have (set by the engine when it admits requests)
        self.length = 0  # columns in use
        self.rows = 0
        self.start = [0] * slots  # first column of each slot's tokens
        self.busy: set[int] = set()
        self.alloc_rows = 0
        self.capacity = 0
        self.nbytes = 0  # storage allocated (an int, so other threads can read it while the storage changes)

    # -- accounting ---------------------------------------------------------------------------------------------
    def _first(self) -> int:
        return min((self.start[i] for i in self.busy), default=self.length)

    def _columns(self, want: int, at_least: int) -> int:
        cap = want
        for bound in (self.limit, self.max_columns):
            if bound:
                cap = min(cap, bound)
        return max(cap, at_least)

    # -- storage ------------------------------------------------------------------------------------------------
    def _relayout(self, rows: int, capacity: int, end: int, incoming: Optional[tuple] = None) -> None:
        """New storage of `rows` × `capacity`, the busy rows' columns [first, length) moved to end at `end`; with
        `incoming` (slot, prefill layers), also copy that prompt in, right-aligned at `end`. Layer by layer: each old
        layer (and prefill layer) is freed before the next new one is allocated."""
        first = self._first()
        span = self.length - first
        offset = end - span
        keep = min(rows, self.alloc_rows)
        assert span <= end <= capacity and all(i < rows for i in self.busy)
        for i, layer in enumerate(self.layers):
            for attr in ("keys", "values"):
                old = getattr(layer, attr) if self.capacity else None
                src = getattr(incoming[1][i], attr) if incoming is not None else None
                like = old if old is not None else src
                new = like.new_zeros(rows, like.shape[1], capacity, like.shape[3])
                if old is not None and span:
                    new[:keep, :, offset:end] = old[:keep, :, first:self.length]
                if src is not None:
                    new[incoming[0], :, end - src.shape[-2]:end] = src[0]
                    setattr(incoming[1][i], attr, None)
                setattr(layer, attr, new)  # this layer's old tensor is freed here
                del old, src, like, new
        self.start = [self.start[i] - first + offset if i in self.busy else end for i in range(self.slots)]
        self.alloc_rows, self.capacity, self.length = rows, capacity, end
        self.nbytes = sum(t.numel() * t.element_size() for la in self.layers for t in (la.keys, la.values))

    def insert(self, slot: int, layers: list) -> None:
        """Copy one request's prefill KV (`layers`: per layer a holder of [1, heads, L, dim] keys and values, emptied
        as they are copied) into `slot`, right-aligned at `length`."""
        n = layers[0].keys.shape[-2]
        rows = max(self.plan_rows, slot + 1, max(self.busy, default=-1) + 1)
        if not self.capacity:
            self.busy.clear()
            self.length = 0
            self._relayout(rows, self._columns(n + self.GROW, n + 1), n, (slot, layers))
        elif n > self.length or rows != self.alloc_rows or (self.limit and self.capacity > self.limit):
            end = max(self.length - self._first(), n)
            fits = end + 1 <= self.capacity and not (self.limit and self.capacity > self.limit)
            self._relayout(rows, self.capacity if fits else self._columns(end + self.GROW, end + 1), end,
                           (slot, layers))
        else:
            for layer, src in zip(self.layers, layers):
                layer.keys[slot, :, self.length - n:self.length] = src.keys[0]
                layer.values[slot, :, self.length - n:self.length] = src.values[0]
                src.keys = src.values = None  # this layer's prefill copy is not needed any more
        self.start[slot] = self.length - n
        self.busy.add(slot)

    def release(self, slot: int) -> None:
        """The request in `slot` left the batch."""
        self.busy.discard(slot)
        self.start[slot] = self.length

    def free(self) -> None:
        """No request running: drop the storage (the engine then hands the memory back to the OS)."""
        for layer in self.layers:
            layer.keys = layer.values = None
        self.busy.clear()
        self.length = self.rows = self.alloc_rows = self.capacity = self.nbytes = 0
        self.start = [0] * self.slots

    def fit(self) -> None:
        """Before prefilling newly admitted requests: no more storage than the engine planned (rows, limit)."""
        if self.capacity and (self.alloc_rows > max(self.plan_rows, max(self.busy, default=-1) + 1)
                              or (self.limit and self.capacity > self.limit)):
            span = self.length - self._first()
            rows = max(self.plan_rows, max(self.busy, default=-1) + 1)
            self._relayout(rows, self._columns(self.capacity, span + 1), span)

    def prepare_step(self, active: list[int]) -> None:
        """Before a decode step: room for one more column (dropping columns no active row needs any more)."""
        if self.length + 1 > self.capacity:
            first = self._first()
            span = self.length - first
            if first >= self.GROW and span + 1 <= self.capacity:
                cap = self.capacity  # dropping the dead columns gives enough room
            else:
                cap = self._columns(max(self.capacity * 2, span + self.GROW), span + 1)
            self._relayout(self.alloc_rows, cap, span)
        busy = set(active)
        for i in range(self.slots):
            if i not in busy:
                self.start[i] = self.length  # an idle slot sees only its own (ignored) column

    def decode_inputs(self, active: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
        """(attention mask [rows, 1, 1, length+1] bool, position_ids [rows, 1]) for a decode step."""
        start = torch.tensor(self.start[: self.rows], dtype=torch.long, device=device)
        cols = torch.arange(self.length + 1, device=device)
        mask = (cols[None, :] >= start[:, None])[:, None, None, :]
        return mask, (self.length - start)[:, None]


class _PrefillLayer(DynamicLayer):
    """One layer of a prompt's KV, preallocated for the whole prompt and filled chunk by chunk (no concatenation)."""

    def __init__(self, total: int):
        super().__init__()
        self.total = total
        self.seen = 0

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            b, h, _, d = key_states.shape
            self.keys = key_states.new_empty(b, h, self.total, d)
            self.values = value_states.new_empty(b, value_states.shape[1], self.total, value_states.shape[3])
            self.device = key_states.device
            self.is_initialized = True
        q = key_states.shape[-2]
        self.keys[:, :, self.seen:self.seen + q] = key_states
        self.values[:, :, self.seen:self.seen + q] = value_states
        self.seen += q
        return self.keys[:, :, :self.seen], self.values[:, :, :self.seen]

    def get_seq_length(self) -> int:
        return self.seen


class PrefillCache(Cache):
    """The cache one prompt's prefill writes into, `total` tokens long."""

    def __init__(self, num_layers: int, total: int):
        super().__init__(layers=[_PrefillLayer(total) for _ in range(num_layers)])
