"""The KV cache of the running batch: a fixed number of row slots sharing one column axis.

Row i holds its tokens in columns [start[i], length); a decode step writes every row's new key/value at column
`length` in place (no per-step concatenation), and an explicit mask hides each row's columns before its start. A new
request's prefill cache is copied in right-aligned; columns that no running row still needs are dropped now and then.
"""
from __future__ import annotations

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
    """KV storage [slots, heads, capacity, head_dim] per layer; `rows` leading slots take part in a forward."""

    GROW = 128  # capacity headroom, in columns

    def __init__(self, num_layers: int, slots: int):
        super().__init__(layers=[_SlotLayer(self) for _ in range(num_layers)])
        self.slots = slots
        self.length = 0  # columns in use
        self.rows = 0
        self.start = [0] * slots  # first column of each slot's tokens
        self.capacity = 0

    # -- storage ------------------------------------------------------------------------------------------------
    def _resize(self, capacity: int, shift: int = 0) -> None:
        """Reallocate to `capacity` columns, moving columns [shift, length) to the left edge."""
        keep = self.length - shift
        for layer in self.layers:
            for attr in ("keys", "values"):
                old = getattr(layer, attr)
                new = old.new_zeros(old.shape[0], old.shape[1], capacity, old.shape[3])
                new[:, :, :keep] = old[:, :, shift:self.length]
                setattr(layer, attr, new)
        self.capacity = capacity
        self.length = keep
        self.start = [max(0, s - shift) for s in self.start]

    def _allocate(self, like_k, like_v, capacity: int) -> None:
        for layer, k, v in zip(self.layers, like_k, like_v):
            layer.keys = k.new_zeros(self.slots, k.shape[1], capacity, k.shape[3])
            layer.values = v.new_zeros(self.slots, v.shape[1], capacity, v.shape[3])
        self.capacity = capacity

    def insert(self, slot: int, keys: list, values: list) -> None:
        """Copy one request's prefill KV (per layer [1, heads, L, dim]) into `slot`, right-aligned at `length`."""
        n = keys[0].shape[-2]
        if self.capacity == 0:
            self._allocate(keys, values, n + self.GROW)
        if n > self.length:  # this prompt is longer than the columns in use: shift everything right
            grow = n - self.length
            if n + 1 > self.capacity:
                cap = n + self.GROW
                for layer in self.layers:
                    for attr in ("keys", "values"):
                        old = getattr(layer, attr)
                        new = old.new_zeros(old.shape[0], old.shape[1], cap, old.shape[3])
                        new[:, :, grow:n] = old[:, :, :self.length]
                        setattr(layer, attr, new)
                self.capacity = cap
            elif self.length:
                for layer in self.layers:
                    layer.keys[:, :, grow:n] = layer.keys[:, :, :self.length].clone()
                    layer.values[:, :, grow:n] = layer.values[:, :, :self.length].clone()
            self.start = [s + grow for s in self.start]
            self.length = n
        at = self.length - n
        for layer, k, v in zip(self.layers, keys, values):
            layer.keys[slot, :, at:self.length] = k[0]
            layer.values[slot, :, at:self.length] = v[0]
        self.start[slot] = at

    def clear(self) -> None:
        """No request running: start the column axis over (and free a cache grown for long requests)."""
        self.length = 0
        self.start = [0] * self.slots
        if self.capacity > 4 * self.GROW:
            for layer in self.layers:
                layer.keys = layer.values = None
            self.capacity = 0

    def prepare_step(self, active: list[int]) -> None:
        """Before a decode step: room for one more column, and drop columns no active row needs any more."""
        first = min((self.start[i] for i in active), default=self.length)
        if first >= self.GROW and first * 2 >= self.length:
            cap = self.capacity if self.capacity <= 4 * (self.length - first + self.GROW) else \
                self.length - first + self.GROW
            self._resize(cap, shift=first)
        elif self.length + 1 > self.capacity:
            self._resize(max(self.capacity * 2, self.length + self.GROW))
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
