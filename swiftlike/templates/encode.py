"""Tokenize a rendered conversation once and derive labels from the supervised character spans."""
from __future__ import annotations

from typing import Any, Optional

IGNORE_INDEX = -100


class SequenceTooLong(ValueError):
    """Raised by encode() under truncation='delete' when a sample exceeds max_length (callers count and skip)."""

    def __init__(self, length: int, max_length: int):
        super().__init__(f"sequence of {length} tokens exceeds max_length={max_length}")
        self.length = length
        self.max_length = max_length


def supervised_spans(template, messages: list[dict], text_spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Pick the spans to train on from the per-turn spans, by loss mode and per-message `loss` flags."""
    assistants = [m for m in messages if m.get("role") == "assistant"]
    flags = [m.get("loss") for m in assistants]
    per_message = any(f is not None for f in flags) or template.loss_mode == "last_round"
    if not per_message:
        return list(text_spans)
    if len(text_spans) != len(assistants):
        if template.loss_mode == "last_round" and all(f is None for f in flags):
            return text_spans[-1:]
        raise ValueError(f"template {template.name!r} rendered {len(text_spans)} supervised turns for "
                         f"{len(assistants)} assistant messages; per-message 'loss' flags cannot be applied")
    chosen = []
    last = len(assistants) - 1
    for i, (span, flag) in enumerate(zip(text_spans, flags)):
        if flag is None:
            flag = i == last if template.loss_mode == "last_round" else True
        if flag:
            chosen.append(span)
    return chosen


def _tokenize(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    # Templates print their own bos/prefix tokens, so the tokenizer must not add them again.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def label_tokens(input_ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """A token is supervised when its characters overlap a supervised span (a leading-space piece like '▁Hi'
    starts one char before the reply but is the reply's first token)."""
    labels = [IGNORE_INDEX] * len(input_ids)
    j = 0
    spans = sorted(spans)
    for i, (start, end) in enumerate(offsets):
        if end <= start:
            continue
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        if j < len(spans) and spans[j][0] < end:
            labels[i] = input_ids[i]
    return labels


def encode(template, messages: list[dict], system: Optional[str] = None, tools: Optional[list] = None,
           add_generation_prompt: bool = False, **kwargs) -> dict[str, Any]:
    tokenizer = template._require_tokenizer()
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("swiftlike needs a fast tokenizer (offset mapping) to align labels")
    prepared = template.prepare_messages(messages, system)
    text, spans = template.render_with_spans(prepared, add_generation_prompt=add_generation_prompt, tools=tools,
                                             inject_system=False, **kwargs)
    chosen = supervised_spans(template, prepared, spans) if template.loss_mode != "all" else []
    # GLM-style templates print nothing after the final reply; training appends the stop text the model's own
    # fine-tuning code appends, so the model learns to stop. It is supervised with the final reply.
    last_is_reply = bool(prepared) and prepared[-1].get("role") == "assistant" and not add_generation_prompt
    if template.train_suffix and last_is_reply:
        end = len(text)
        text += template.train_suffix
        if spans and chosen and chosen[-1] == spans[-1] and spans[-1][1] == end:
            chosen[-1] = (chosen[-1][0], len(text))
    input_ids, offsets = _tokenize(tokenizer, text)
    labels = list(input_ids) if template.loss_mode == "all" else label_tokens(input_ids, offsets, chosen)
    input_ids, labels = _truncate(template, input_ids, labels)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": [1] * len(input_ids),
            "length": len(input_ids)}


def _truncate(template, input_ids: list[int], labels: list[int]):
    limit = template.max_length
    if limit is None or len(input_ids) <= limit:
        return input_ids, labels
    if template.truncation == "delete":
        raise SequenceTooLong(len(input_ids), limit)
    if template.truncation == "left":
        return input_ids[-limit:], labels[-limit:]
    return input_ids[:limit], labels[:limit]
