"""Padding-free preference batches with logits only where the loss reads them, for TRL's DPOTrainer.

TRL pads every pair to the longest row of the batch, runs the prompt twice (before the chosen and before the
rejected answer) and computes the vocabulary logits (and their log-softmax) at every position, prompt and padding
included, for the policy and again for the reference. Here a batch is one row with per-sequence positions, each
pair laid out as [prompt, chosen, rejected] with the rejected answer branching from the prompt (the varlen
attention reads the layout from the positions), and the output head runs only at the positions that predict
answer tokens. On the benchmark pairs (a 18-token prompt, 9- and 17-token answers) that is 44 tokens a pair
instead of 61 plus padding.

TRL's loss code is kept unchanged: it receives a *compact* layout it reads as usual, `input_ids[i] = [last prompt
token, answer tokens…, pad]` with `completion_mask` over the answer and `logits[i, j]` the logits that predict
`input_ids[i, j+1]`. The real (packed) inputs travel in extra keys that the model's forward picks up; the same
forward serves the reference pass (adapter disabled), so it gets both savings too.
"""
from __future__ import annotations

import types

import torch

PACKED_KEYS = ("swiftlike_packed_ids", "swiftlike_position_ids", "swiftlike_keep")


class PackedPairCollator:
    """Encoded pairs ({prompt_ids, chosen_ids, rejected_ids}[, ref_*_logps]) -> one packed row + compact views.

    With `share_prompt` (only for a model on swiftlike's varlen attention, which reads the layout), a pair is
    [prompt, chosen, rejected] with the rejected answer's positions continuing the prompt's: the prompt runs once."""

    def __init__(self, pad_token_id: int, share_prompt: bool = False):
        self.pad = pad_token_id
        self.share_prompt = share_prompt

    def __call__(self, features: list) -> dict:
        packed, positions = [], []
        chosen_rows, rejected_rows = [], []  # (start of the pair, positions predicting each answer token)
        for f in features:
            prompt, chosen, rejected = f["prompt_ids"], f["chosen_ids"], f["rejected_ids"]
            start, p = len(packed), len(prompt)
            last = start + p - 1  # the last prompt token predicts the first answer token
            packed += prompt + chosen
            positions += range(p + len(chosen))
            chosen_rows.append((start, prompt[-1], chosen, [last + j for j in range(len(chosen))]))
            if self.share_prompt:
                branch = len(packed)
                packed += rejected
                positions += range(p, p + len(rejected))
                reads = [last] + [branch + j for j in range(len(rejected) - 1)]
            else:
                start = len(packed)
                packed += prompt + rejected
                positions += range(p + len(rejected))
                reads = [start + p - 1 + j for j in range(len(rejected))]
            rejected_rows.append((start, prompt[-1], rejected, reads))
        rows = chosen_rows + rejected_rows  # TRL's order: the B chosen, then the B rejected
        width = max(len(answer) for _, _, answer, _ in rows) + 1
        keep, compact, mask = [], [], []
        for start, last_token, answer, reads in rows:
            n = len(answer)
            # slots past the answer point at a real position (finite logits); the mask zeroes them
            keep += reads + [start] * (width - n)
            compact.append([last_token, *answer] + [self.pad] * (width - 1 - n))
            mask.append([0] + [1] * n + [0] * (width - 1 - n))
        batch = {
            "input_ids": torch.tensor(compact), "completion_mask": torch.tensor(mask),
            "attention_mask": torch.tensor(mask),
            "swiftlike_packed_ids": torch.tensor([packed]), "swiftlike_position_ids": torch.tensor([positions]),
            "swiftlike_keep": torch.tensor(keep),
        }
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in features[0]:
                batch[key] = torch.tensor([f[key] for f in features])
        return batch


def packed_tokens(inputs: dict) -> int:
    """Tokens the model really ran on for this batch (the packed row's length)."""
    return int(inputs["swiftlike_packed_ids"].shape[-1])


def enable_packed_forward(model) -> None:
    """Let `model(**batch)` take a PackedPairCollator batch: the packed row runs through the model once and the
    head only at the kept positions; logits come back in the compact [2B, width, vocab] layout."""
    if "forward" in model.__dict__:
        return
    plain = model.forward

    def forward(self, *args, **kwargs):
        if "swiftlike_packed_ids" not in kwargs:
            return plain(*args, **kwargs)
        ids, pos, keep = (kwargs.pop(k) for k in PACKED_KEYS)
        compact = kwargs.pop("input_ids")
        kwargs.pop("attention_mask", None)
        out = plain(input_ids=ids, position_ids=pos, logits_to_keep=keep, **kwargs)
        out.logits = out.logits.view(compact.shape[0], compact.shape[1], -1)
        return out

    model.forward = types.MethodType(forward, model)
