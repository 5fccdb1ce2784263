"""Attention for padding-free batches that skips the cross-sequence blocks.

A padding-free batch is one row holding several sequences, told apart by `position_ids` restarting at 0.
transformers' sdpa path turns that into a dense [total, total] block-diagonal mask, so every layer computes (and
back-propagates) scores between tokens of different sequences only to mask them out. Here each sequence runs
its own causal `scaled_dot_product_attention`: the same result without the wasted blocks. A row counts as packed
only from its `position_ids` (a restart means a new sequence), never from the mask; rows without restarts,
batches of several rows, a KV cache (generation) and sliding-window or soft-capped layers take the stock sdpa
path with the stock mask.

A sequence may also *branch* from the one before it: when the positions drop to v > 0 instead of 0, the new
segment continues the first v tokens of the last segment that started at 0 (its root) and attends to them, not to
the root's own continuation. The preference stages lay a pair out as [prompt, chosen, rejected] this way, so the
prompt runs once for both answers (rlhf/packed_pairs.py). Only this attention understands branches: a layout with
them is made only for a model on it.

On a CUDA GPU with PyTorch's flash varlen kernel (`torch.nn.attention.varlen`, bf16/fp16), all sequences of the row
run in that one kernel instead of one sdpa call per sequence. A branch gets its root's first v keys gathered in
front of its own, and the kernel's causal mask (aligned to the end of the keys when a sequence has more keys than
queries) does the rest; the first row with branches is also run the per-sequence way and compared, and if the two
disagree (a kernel with another alignment) branches keep the per-sequence path, with one warning.

The segments are read once per forward (the first layer; every layer gets the same `position_ids`): reading them
copies to the host, which on a GPU waits for the queued work, so doing it in each layer kept the host from running
ahead of the GPU.
"""
from __future__ import annotations

import inspect
import os
import threading

import torch

NAME = "swiftlike_varlen"
_last = threading.local()  # the segments of the last position_ids seen, and their cu_seqlens per device


def _segments(position_ids: torch.Tensor) -> list[tuple[int, int]] | None:
    """(length, first position) of each sequence in a one-row batch, or None when the row is one sequence. A first
    position v > 0 marks a branch sharing the first v tokens of the last root (a segment starting at 0)."""
    pos = position_ids[0]
    starts = (pos[1:] != pos[:-1] + 1).nonzero().squeeze(-1) + 1
    if starts.numel() == 0:
        return None
    bounds = [0, *starts.tolist(), pos.numel()]
    firsts = pos[bounds[:-1]].tolist()
    return [(b - a, first) for a, b, first in zip(bounds[:-1], bounds[1:], firsts)]


def _segments_once(position_ids: torch.Tensor):
    """`_segments`, computed once per forward: every layer receives the same position_ids tensor."""
    try:
        version = position_ids._version
    except RuntimeError:  # an inference-mode tensor has no version counter (and cannot change in place)
        version = None
    cached = getattr(_last, "key", None)
    if cached is None or cached[0] is not position_ids or cached[1] != version:
        _last.key, _last.segments, _last.cu = (position_ids, version), _segments(position_ids), {}
    return _last.segments


def _flash_varlen():
    """PyTorch's flash varlen attention and how this version spells causal, GQA and scale; None without it."""
    if os.environ.get("SWIFTLIKE_FLASH_VARLEN", "1") == "0":  # the per-sequence sdpa path (bench/gpu_check.py)
        return None
    fn = getattr(_flash_varlen, "fn", False)
    if fn is False:
        try:
            from torch.nn.attention.varlen import varlen_attn

            params = inspect.signature(varlen_attn).parameters
            fn = (varlen_attn, "window_size" in params, "enable_gqa" in params, "scale" in params)
            if not (fn[1] or "is_causal" in params):
                fn = None
        except (ImportError, AttributeError, TypeError, ValueError):
            fn = None
        _flash_varlen.fn = fn
    return fn


def _flash_capable(query) -> bool:
    return query.is_cuda and query.dtype in (torch.bfloat16, torch.float16) and query.shape[-1] <= 256


_branches = {"flash": None}  # None: not checked yet; then whether the flash kernel got branches right


def _use_flash(query, segments, dropout) -> bool:
    return (dropout == 0.0 and _flash_capable(query) and _flash_varlen() is not None
            and (_branches["flash"] is not False or all(first == 0 for _, first in segments)))


def _layout(segments, device):
    """Cumulative query and key lengths, the longest of each, and for a row with branches the index of each key in
    the row (a branch's keys: its root's first `first` keys, then its own). Read once per forward and device."""
    cached = _last.cu.get(device)
    if cached is not None:
        return cached
    cu_q, cu_k, index, start, root, branched = [0], [0], [], 0, None, False
    for n, first in segments:  # the same rule as _per_sequence
        if first == 0 or root is None or first > root[1]:
            keys = range(start, start + n)
            root = (start, n) if first == 0 else None
        else:
            keys = [*range(root[0], root[0] + first), *range(start, start + n)]
            branched = True
        index.extend(keys)
        cu_q.append(cu_q[-1] + n)
        cu_k.append(cu_k[-1] + len(keys))
        start += n
    ints = lambda x: torch.tensor(x, dtype=torch.int32, device=device)  # noqa: E731
    layout = (ints(cu_q), ints(cu_k), max(b - a for a, b in zip(cu_q, cu_q[1:])),
              max(b - a for a, b in zip(cu_k, cu_k[1:])),
              torch.tensor(index, dtype=torch.long, device=device) if branched else None)
    _last.cu[device] = layout
    return layout


def _flash_attention(query, key, value, segments, scale, gqa):
    """Every sequence of the row in one flash varlen call: [1, heads, total, dim] in, [1, total, heads, dim] out."""
    fn, window, has_gqa, has_scale = _flash_varlen()
    cu_q, cu_k, max_q, max_k, index = _layout(segments, query.device)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [total, heads, dim]
    if index is not None:
        k, v = k.index_select(0, index), v.index_select(0, index)
    if gqa and not has_gqa:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    kwargs = {"window_size": (-1, 0)} if window else {"is_causal": True}
    if has_gqa and gqa:
        kwargs["enable_gqa"] = True
    if has_scale:
        kwargs["scale"] = scale
    elif scale is not None:
        q = q * (scale * query.shape[-1] ** 0.5)  # a version without `scale` uses 1/sqrt(dim)
    return fn(q, k, v, cu_q, cu_k, max_q, max_k, **kwargs).unsqueeze(0)


def _per_sequence(query, key, value, segments, dropout, scale, gqa):
    lengths = [n for n, _ in segments]
    outs, root = [], None
    # split (not slicing): its backward is one cat instead of a zero-filled full-size gradient per piece
    for (n, first), q, k, v in zip(segments, query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2)):
        if first == 0 or root is None or first > root[0].shape[2]:
            outs.append(torch.nn.functional.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout, scale=scale, is_causal=True, enable_gqa=gqa))
            root = (k, v) if first == 0 else None
        else:
            outs.append(_branch_attention(q, k, v, *root, first, dropout, scale, gqa))
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous()


def _flash_checked(query, key, value, segments, scale, gqa):
    """The flash call; the first row with branches is also run per sequence and compared (see the module doc)."""
    out = _flash_attention(query, key, value, segments, scale, gqa)
    if _branches["flash"] is not None or all(first == 0 for _, first in segments):
        return out
    ref = _per_sequence(query, key, value, segments, 0.0, scale, gqa)
    err = (out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1e-6)
    _branches["flash"] = bool(err < 0.05)
    if _branches["flash"]:
        return out
    import warnings

    warnings.warn(f"swiftlike: this torch's flash varlen kernel does not mask shared-prompt rows as expected "
                  f"(relative difference {float(err):.3f}); they keep the per-sequence attention", stacklevel=2)
    return ref


def _branch_attention(q, k, v, root_k, root_v, prefix, dropout, scale, gqa):
    """A branch's queries over the root's first `prefix` keys and its own, causally (bottom-right aligned)."""
    n = q.shape[2]
    keys, values = torch.cat([root_k[:, :, :prefix], k], 2), torch.cat([root_v[:, :, :prefix], v], 2)
    mask = torch.ones(n, prefix + n, dtype=torch.bool, device=q.device).tril(prefix)
    return torch.nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=dropout,
                                                            scale=scale, enable_gqa=gqa)


def varlen_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Same signature and output layout ([batch, len, heads, dim]) as transformers' sdpa_attention_forward."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    plain = (position_ids is not None and query.shape[0] == 1
             and query.shape[2] == key.shape[2] == position_ids.shape[-1] and kwargs.get("sliding_window") is None
             and kwargs.get("softcap") is None and kwargs.get("position_bias") is None)
    segments = _segments_once(position_ids) if plain else None
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    gqa = query.shape[1] != key.shape[1]
    p = dropout if module.training else 0.0
    if _use_flash(query, segments, p):
        return _flash_checked(query, key, value, segments, scaling, gqa), None
    return _per_sequence(query, key, value, segments, p, scaling, gqa), None


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, varlen_attention_forward)
    # The stock sdpa mask is still built (once per forward, cheap): it is what the fallback path uses.
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def enable_varlen_attention(model) -> bool:
    """Switch a model that uses sdpa to the per-sequence attention; False (unchanged) when it does not apply."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "use_sliding_window", True) and getattr(text, "sliding_window", None) \
            or getattr(text, "attn_logit_softcapping", None) or getattr(text, "layer_types", None) and any(
                t != "full_attention" for t in text.layer_types):
        return False
    register()
    model.set_attn_implementation(NAME)
    return True
