"""Next-token choice per row: greedy, or temperature/top-p sampling from the row's own seeded generator."""
from __future__ import annotations

import torch


def _penalise(row: torch.Tensor, req) -> torch.Tensor:
    if not (req.presence_penalty or req.frequency_penalty) or not req.counts:
        return row
    ids = torch.tensor(list(req.counts), dtype=torch.long, device=row.device)
    counts = torch.tensor(list(req.counts.values()), dtype=row.dtype, device=row.device)
    row = row.clone()
    row[ids] -= req.frequency_penalty * counts + req.presence_penalty  # OpenAI's definition
    return row


def next_tokens(logits: torch.Tensor, reqs: list) -> list[int]:
    """logits [n, vocab] (float32), one request per row."""
    if all(r.temperature <= 0 and not (r.presence_penalty or r.frequency_penalty) for r in reqs):
        return logits.argmax(-1).tolist()  # what HF generate does for greedy search
    out = []
    for row, req in zip(logits, reqs):
        row = _penalise(row, req)
        if req.temperature <= 0:
            out.append(int(row.argmax()))
            continue
        probs = torch.softmax(row / req.temperature, dim=-1)
        if req.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            # keep the smallest prefix whose mass reaches top_p (always at least the most likely token)
            drop = sorted_p.cumsum(0) - sorted_p >= req.top_p
            sorted_p[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
        out.append(int(torch.multinomial(probs, 1, generator=req.generator)))
    return out
