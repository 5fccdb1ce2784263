"""Attention for padding-free batches that skips the cross-sequence blocks.

A padding-free batch is one row holding several sequences, told apart by `position_ids` restarting at 0.
transformers' sdpa path turns that into a dense [total, total] block-diagonal mask, so every layer computes (and
back-propagates) scores between tokens of different sequences only to mask them out. Here each sequence runs
its own causal `scaled_dot_product_attention`: the same result without the wasted blocks. A row counts as packed
only from its `position_ids` (a restart means a new sequence), never from the mask; rows without restarts,
batches of several rows, a KV cache (generation) and sliding-window or soft-capped layers take the stock sdpa
path with the stock mask.
"""
from __future__ import annotations

import torch

NAME = "swiftlike_varlen"


def _segments(position_ids: torch.Tensor) -> list[int] | None:
    """Lengths of the sequences in a one-row batch, or None when the row is a single sequence."""
    pos = position_ids[0]
    starts = (pos[1:] != pos[:-1] + 1).nonzero().squeeze(-1) + 1
    if starts.numel() == 0:
        return None
    bounds = [0, *starts.tolist(), pos.numel()]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def varlen_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Same signature and output layout ([batch, len, heads, dim]) as transformers' sdpa_attention_forward."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    plain = (position_ids is not None and query.shape[0] == 1
             and query.shape[2] == key.shape[2] == position_ids.shape[-1] and kwargs.get("sliding_window") is None
             and kwargs.get("softcap") is None and kwargs.get("position_bias") is None)
    segments = _segments(position_ids) if plain else None
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    gqa = query.shape[1] != key.shape[1]
    # split (not slicing): its backward is one cat instead of a zero-filled full-size gradient per piece
    outs = [torch.nn.functional.scaled_dot_product_attention(
        q, k, v, dropout_p=dropout if module.training else 0.0, scale=scaling, is_causal=True, enable_gqa=gqa)
        for q, k, v in zip(query.split(segments, 2), key.split(segments, 2), value.split(segments, 2))]
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


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
