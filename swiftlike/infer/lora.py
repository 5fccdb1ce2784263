"""Batched multi-LoRA on an un-wrapped base model: every nn.Linear adds the low-rank update of each row's adapter.

    y = x·Wᵀ + scaling_row · (x·A_rowᵀ)·B_rowᵀ        (rows without an adapter add nothing)

The engine sets a `LoraBatch` (one adapter or None per row) on the shared `LoraContext` around each forward pass.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import queue
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import SwiftlikeError

PEFT_PREFIX = "base_model.model."
_uids = itertools.count(1)


@dataclass(frozen=True, eq=False)
class LoraModule:
    A: torch.Tensor  # [r, in]
    B: torch.Tensor  # [out, r]
    scaling: float
    bias: Optional[torch.Tensor] = None  # lora_B bias (PEFT lora_bias=True)


@dataclass(frozen=True, eq=False)
class ResidentAdapter:
    """One immutable (name, version, weights) entry. A request holds it for its whole life, so replacing the adapter
    under the same name can never hand that request other weights (vLLM #47724)."""
    name: str
    version: int
    path: Path
    modules: Mapping[str, LoraModule]
    template: object
    rank: int
    nbytes: int
    load_seconds: float = 0.0
    uid: int = field(default_factory=lambda: next(_uids))  # never reused, unlike id()


def lora_config(path: Path) -> dict:
    """adapter_config.json, refusing what the batched path cannot run."""
    from ..checkpoint import PROMPT_LEARNING, adapter_config, refuse_reward_model

    refuse_reward_model(path, "be served or batched as a generating adapter")
    cfg = adapter_config(path)
    peft_type = cfg.get("peft_type", "LORA")
    if peft_type != "LORA":
        instead = (f"use it with `swiftlike infer --ckpt_dir {path}`" if peft_type in PROMPT_LEARNING else
                   f"merge it (`swiftlike merge-lora --ckpt_dir {path}`) and serve the merged model as --model")
        article = "an" if str(peft_type)[:1] in "AEIOU" else "a"
        raise SwiftlikeError(f"{path}: {article} {peft_type} adapter, which the batched engine (serve, eval) cannot "
                             f"swap in per request (it runs LoRA adapters only); {instead}")
    if cfg.get("use_dora"):
        raise SwiftlikeError(f"{path}: a DoRA adapter cannot be batched per row; merge it "
                             f"(`swiftlike merge-lora --ckpt_dir {path}`) and use the merged model")
    if cfg.get("modules_to_save") or cfg.get("trainable_token_indices") or cfg.get("target_parameters"):
        raise SwiftlikeError(f"{path}: the adapter also trains whole modules/tokens/parameters "
                             f"(modules_to_save, trainable_token_indices or target_parameters), which per-row "
                             f"batching cannot run; merge it and use the merged model")
    if cfg.get("bias") not in (None, "none"):
        raise SwiftlikeError(f"{path}: the adapter also trains the base layers' biases (--lora_bias "
                             f"{cfg.get('bias')}), which per-row batching cannot run; merge it and use the merged "
                             f"model")
    return cfg


def _pattern_value(patterns: dict, module: str, default):
    # PEFT's get_pattern_key: the first key that matches the end of the module name
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def read_lora(path: Path, targets: Mapping[str, nn.Linear], *, dtype=None, device=None) -> dict[str, LoraModule]:
    """{module name: LoraModule} from a PEFT LoRA dir; `targets` are the base model's (wrapped) Linear modules."""
    from safetensors.torch import load_file

    cfg = lora_config(path)
    tensors = load_file(str(path / "adapter_model.safetensors"))
    parts: dict[str, dict] = {}
    for key, value in tensors.items():
        name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
        for suffix, slot in ((".lora_A.weight", "A"), (".lora_B.weight", "B"), (".lora_B.bias", "bias")):
            if name.endswith(suffix):
                parts.setdefault(name[: -len(suffix)], {})[slot] = value
                break
        else:
            raise SwiftlikeError(f"{path}: tensor {key!r} is not a LoRA A/B weight of a Linear layer "
                                 f"(embedding LoRA, DoRA magnitudes and saved modules cannot be batched)")
    modules = {}
    for name, p in parts.items():
        if "A" not in p or "B" not in p:
            raise SwiftlikeError(f"{path}: module {name} has lora_A or lora_B missing; the adapter is damaged")
        base = targets.get(name)
        if base is None:
            raise SwiftlikeError(f"{path}: targets {name}, which is not a Linear layer of this base model")
        r = p["A"].shape[0]
        if p["A"].shape != (r, base.in_features) or p["B"].shape != (base.out_features, r):
            raise SwiftlikeError(f"{path}: {name} has LoRA shapes {tuple(p['A'].shape)}/{tuple(p['B'].shape)}, "
                                 f"the base layer is {base.in_features}->{base.out_features}: another base model")
        alpha = _pattern_value(cfg.get("alpha_pattern"), name, cfg.get("lora_alpha", 8))
        scaling = alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r
        # batched rows share matmuls: non-finite weights would spread NaN to other tenants' rows
        if not (isinstance(scaling, (int, float)) and math.isfinite(scaling)) or \
                not all(bool(torch.isfinite(t).all()) for t in p.values()):
            raise SwiftlikeError(f"{path}: {name} has non-finite LoRA weights or scaling; the adapter is damaged")
        dt = dtype or base.weight.dtype
        dev = device or base.weight.device
        bias = p.get("bias")
        modules[name] = LoraModule(p["A"].to(dev, dt).contiguous(), p["B"].to(dev, dt).contiguous(), float(scaling),
                                   bias.to(dev, dt) if bias is not None else None)
    if not modules:
        raise SwiftlikeError(f"{path}: the adapter has no LoRA weights")
    return modules


class LoraBatch:
    """Which adapter each row of the next forward pass uses.

    `bank`: the resident adapters. A batch of several of them uses all of them stacked (each layer concatenates the
    bank once per change of the resident set), so a new mix of resident adapters costs no copying; a batch with an
    adapter outside the bank (an old version finishing after a replacement) stacks just its own adapters."""

    def __init__(self, per_row: list, bank: tuple = ()):
        present = {a.uid: a for a in per_row if a is not None}
        self.single = next(iter(present.values())) if len(present) == 1 and None not in per_row else None
        if len(present) > 1 and present.keys() <= {a.uid for a in bank}:
            self.adapters = list(bank)
        else:
            self.adapters = list(present.values())
        index = {a.uid: i for i, a in enumerate(self.adapters)}
        # rows without an adapter point at the all-zero last row of each layer's selection table
        none = len(self.adapters)
        self.rows = torch.tensor([none if a is None else index[a.uid] for a in per_row], dtype=torch.long)
        self.key = tuple(index)
        self.masks: dict = {}  # per-row column masks of this batch, by layer layout (filled by the layers)

    @classmethod
    def of(cls, per_row: list, bank: tuple = ()) -> Optional["LoraBatch"]:
        return cls(per_row, bank) if any(a is not None for a in per_row) else None


class LoraContext:
    """The LoraBatch of the forward pass in progress, and the bank.

    One thread runs forwards (the engine's). It alone reads and writes the layers' stacked-weights caches: other
    threads only queue the uids of adapters that left memory (`forget`), and that thread drops them (`purge`, also
    run by every `use`) — no cache is shared between threads, so none needs a lock."""

    BANK_MAX_RANK = 256  # beyond this total rank, stacking every resident adapter costs more than it saves

    def __init__(self):
        self.batch: Optional[LoraBatch] = None
        self.bank: tuple = ()
        self.layers: list = []  # the BatchedLoraLinear layers reading this context
        self._forgotten: queue.SimpleQueue = queue.SimpleQueue()

    def forget(self, uid: int) -> None:
        """Any thread: adapter `uid` left memory; its stacked weights go at the forward thread's next purge."""
        self._forgotten.put(uid)

    @property
    def pending(self) -> bool:
        return not self._forgotten.empty()

    def purge(self) -> None:
        """The forward thread: drop the stacked weights of forgotten adapters."""
        if self._forgotten.empty():
            return
        gone = set()
        while True:
            try:
                gone.add(self._forgotten.get_nowait())
            except queue.Empty:
                break
        if gone:
            for layer in self.layers:
                layer.forget(gone)

    def set_resident(self, adapters) -> None:
        """Called when the resident set changes (any thread: one attribute assignment)."""
        adapters = tuple(sorted(adapters, key=lambda a: a.uid))
        self.bank = adapters if sum(a.rank for a in adapters) <= self.BANK_MAX_RANK else ()

    @contextlib.contextmanager
    def use(self, batch: Optional[LoraBatch]):
        self.purge()
        self.batch = batch
        try:
            yield
        finally:
            self.batch = None


class BatchedLoraLinear(nn.Module):
    """A base nn.Linear plus the per-row LoRA update of the current batch."""

    _CACHE = 3  # stacked weights kept per layer for this many recent adapter sets (the bank stays among them)

    def __init__(self, base: nn.Linear, name: str, ctx: LoraContext):
        super().__init__()
        self.base = base
        self.name = name
        self.ctx = ctx
        self._cat: dict = {}  # touched only by the thread running forwards (see LoraContext)

    @property
    def weight(self):  # code that reads `.weight` of a Linear (tying, dtype probes) keeps working
        return self.base.weight

    @property
    def in_features(self):
        return self.base.in_features

    @property
    def out_features(self):
        return self.base.out_features

    def forward(self, x):
        y = self.base(x)
        batch = self.ctx.batch
        if batch is None:
            return y
        if batch.single is not None:
            m = batch.single.modules.get(self.name)
            if m is None:
                return y
            # the operation order of PEFT's LoRA Linear: base + lora_B(lora_A(x)) * scaling
            return y + F.linear(F.linear(x, m.A), m.B, m.bias) * m.scaling
        cat = self._cat.get(batch.key)
        if cat is None:
            cat = self._concat(batch)
        elif next(reversed(self._cat), None) != batch.key:  # least recently used goes first
            self._cat.pop(batch.key, None)
            self._cat[batch.key] = cat
        if cat is False:
            return y
        a_cat, b_t, table, bias_table, layout = cat
        # One pair of matmuls for all adapters: project on every adapter's A, zero (and scale) the columns of the
        # other adapters row by row, project back. Cost does not grow with the number of distinct adapters.
        masks = batch.masks.get(layout)
        if masks is None:  # layers with the same adapters, ranks and scalings share one mask per step
            scale = table[batch.rows]
            masks = batch.masks[layout] = (scale, (scale == 0)[:, None, :])
        mask, other = masks
        x2 = x.reshape(-1, x.shape[-1])
        n = mask.shape[0]
        h = F.linear(x2, a_cat)
        hv = h.view(n, -1, h.shape[-1])
        hv.mul_(mask[:, None, :])
        # 0 * inf is NaN: zero other adapters' columns outright, so one adapter's overflow stays in its own rows
        hv.masked_fill_(other, 0.0)
        y.view(-1, y.shape[-1]).addmm_(h, b_t)  # y is this layer's fresh output: add in place
        if bias_table is not None:
            y.view(n, -1, y.shape[-1]).add_(bias_table[batch.rows][:, None, :])
        return y

    def _concat(self, batch: LoraBatch):
        mods = [a.modules.get(self.name) for a in batch.adapters]
        if all(m is None for m in mods):
            cat = False
        else:
            w = self.base.weight
            a_parts, b_parts, spans = [], [], []
            col = 0
            for m in mods:
                if m is not None:
                    a_parts.append(m.A)
                    b_parts.append(m.B)
                    spans.append((col, col + m.A.shape[0], m.scaling))
                    col += m.A.shape[0]
                else:
                    spans.append(None)
            table = torch.zeros(len(mods) + 1, col, dtype=w.dtype, device=w.device)
            for k, span in enumerate(spans):
                if span is not None:
                    table[k, span[0]:span[1]] = span[2]
            bias_table = None
            if any(m is not None and m.bias is not None for m in mods):
                bias_table = torch.zeros(len(mods) + 1, self.base.out_features, dtype=w.dtype, device=w.device)
                for k, m in enumerate(mods):
                    if m is not None and m.bias is not None:
                        bias_table[k] = m.bias * m.scaling
            layout = tuple(spans)
            cat = (torch.cat(a_parts, 0), torch.cat(b_parts, 1).t().contiguous(), table, bias_table, layout)
        if len(self._cat) >= self._CACHE:
            self._cat.pop(next(iter(self._cat)))
        self._cat[batch.key] = cat
        return cat

    def forget(self, uids: set) -> None:
        for key in [k for k in self._cat if uids.intersection(k)]:
            del self._cat[key]

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def wrap_linears(model: nn.Module, ctx: LoraContext) -> dict[str, BatchedLoraLinear]:
    """Replace every nn.Linear of `model` but the output head (in place) by a BatchedLoraLinear reading `ctx`."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if get_head else None  # tied to the input embeddings; PEFT's all-linear leaves it alone too
    found = [(name, mod) for name, mod in model.named_modules()
             if isinstance(mod, nn.Linear) and name and mod is not head]
    wrapped = {}
    for name, mod in found:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapper = BatchedLoraLinear(mod, name, ctx)
        setattr(parent, attr, wrapper)
        wrapped[name] = wrapper
    ctx.layers.extend(wrapped.values())
    return wrapped
