"""Next-token choice per row: greedy, or temperature/top-p sampling from the row's own seeded generator.

Rows are independent: a row whose logits are not finite (a broken adapter) or whose sampling fails gets an exception
in its place in the result, and its neighbours their tokens.
"""
from __future__ import annotations

import torch

MIN_TEMPERATURE = 1e-5  # below this, sampling is greedy (dividing by it would overflow to inf)


class NonFiniteLogits(ArithmeticError):
    pass


def _penalise(row: torch.Tensor, req) -> torch.Tensor:
    if _repetition(req):  # transformers' definition: every prompt or generated token, divided (or, if < 0, times)
        seen = torch.tensor(sorted(set(req.prompt_ids) | set(req.counts)), dtype=torch.long, device=row.device)
        row = row.clone()
        score = row[seen]
        row[seen] = torch.where(score < 0, score * req.repetition_penalty, score / req.repetition_penalty)
    if not (req.presence_penalty or req.frequency_penalty) or not req.counts:
        return row
    ids = torch.tensor(list(req.counts), dtype=torch.long, device=row.device)
    counts = torch.tensor(list(req.counts.values()), dtype=row.dtype, device=row.device)
    row = row.clone()
    row[ids] -= req.frequency_penalty * counts + req.presence_penalty  # OpenAI's definition
    return row


def _repetition(req) -> bool:
    return getattr(req, "repetition_penalty", 1.0) not in (None, 1.0)


def _greedy(req) -> bool:
    return not req.temperature or req.temperature < MIN_TEMPERATURE


def _sample(row: torch.Tensor, req) -> int:
    row = _penalise(row, req)
    top = row.max()
    if not torch.isfinite(top):  # +inf, or only NaN/-inf left after the penalties
        raise NonFiniteLogits("the model produced no finite logits for this request")
    if _greedy(req):
        return int(row.argmax())
    scaled = row / req.temperature
    if not torch.isfinite(scaled.max()):  # overflowed: the limit of sampling as the temperature falls is greedy
        return int(row.argmax())
    probs = torch.softmax(scaled, dim=-1)
    if req.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the most likely token)
        drop = sorted_p.cumsum(0) - sorted_p >= req.top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=req.generator))


def next_tokens(logits: torch.Tensor, reqs: list) -> list:
    """logits [n, vocab] (float32), one request per row -> per row a token id, or the exception that row raised."""
    # one pass over the vocabulary: max propagates NaN, so a finite row maximum means a row free of NaN and +inf;
    # its index is the first maximal one, argmax's (what HF generate does for greedy search)
    top, first = logits.max(-1)
    finite = torch.isfinite(top)
    plain = all(_greedy(r) and not (r.presence_penalty or r.frequency_penalty or _repetition(r)) for r in reqs)
    if plain and bool(finite.all()):
        return first.tolist()
    out = []
    for row, ok, req in zip(logits, finite.tolist(), reqs):
        try:
            if not ok:
                raise NonFiniteLogits("the model produced non-finite logits for this request")
            out.append(_sample(row, req))
        except Exception as err:  # this row only
            out.append(err)
    return out
