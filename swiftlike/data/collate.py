"""Batch collators: right padding, and padding-free (all sequences in one row).

Padding-free relies on transformers' packed-sequence detection (masking_utils._preprocess_mask_arguments and
find_packed_sequence_indices): when `attention_mask is None`, `position_ids` are given and there is no KV cache,
every place where position_ids do not increase by 1 starts a new sequence and attention is kept inside each one
(sdpa, eager, flex; flash-attention reads the same position_ids). An attention mask or a cache turns that off and
the sequences would attend to each other, so the batch carries no attention_mask and `use_cache=False`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

IGNORE_INDEX = -100


def _sequences(features: list) -> list:
    """Flatten: a feature is an encoded row or a bin (list of rows) from `pack`."""
    out = []
    for f in features:
        out.extend(f if isinstance(f, (list, tuple)) else [f])
    return out


@dataclass
class PaddingFreeCollator:
    """One row of all sequences: input_ids, labels, position_ids of shape [1, total_length]."""
    use_cache_false: bool = True  # put use_cache=False in the batch so `model(**batch)` cannot build a cache

    def __call__(self, features: list) -> dict:
        import torch

        input_ids, labels, position_ids = [], [], []
        for seq in _sequences(features):
            ids = list(seq["input_ids"])
            lab = list(seq.get("labels", ids))
            # The model shifts labels left; the first label of a sequence would be predicted from the previous
            # sequence's last token, so it is ignored.
            lab[0] = IGNORE_INDEX
            input_ids += ids
            labels += lab
            position_ids += range(len(ids))
        batch = {"input_ids": torch.tensor([input_ids], dtype=torch.long),
                 "labels": torch.tensor([labels], dtype=torch.long),
                 "position_ids": torch.tensor([position_ids], dtype=torch.long)}
        if self.use_cache_false:
            batch["use_cache"] = False
        return batch


@dataclass
class PaddingCollator:
    """Right (or left) padding to the longest sequence, rounded up to pad_to_multiple_of; labels padded -100."""
    pad_token_id: int = 0
    pad_to_multiple_of: Optional[int] = None
    padding_side: str = "right"

    def __call__(self, features: list) -> dict:
        import torch

        seqs = _sequences(features)
        length = max(len(s["input_ids"]) for s in seqs)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids, labels, mask = [], [], []
        for s in seqs:
            n = length - len(s["input_ids"])
            pad = lambda row, value: (row + [value] * n) if self.padding_side == "right" else ([value] * n + row)
            ids.append(pad(list(s["input_ids"]), self.pad_token_id))
            labels.append(pad(list(s.get("labels", s["input_ids"])), IGNORE_INDEX))
            mask.append(pad([1] * len(s["input_ids"]), 0))
        return {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long),
                "attention_mask": torch.tensor(mask, dtype=torch.long)}
