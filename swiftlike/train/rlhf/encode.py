"""Preference and KTO rows encoded by swiftlike's own templates: the prompt and answer tokens of a pair are exactly
those `swiftlike sft` trains on for the same conversation (the answer = the final reply's supervised tokens, its
end-of-turn token included)."""
from __future__ import annotations

from ...data.errors import Problem
from ...templates import IGNORE_INDEX


class TooLong(ValueError):
    pass


TOO_LONG = "prompt and answer are"  # how a row over --max_length is reported


def encode_answer(template, messages: list, answer: str, tools=None) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of `messages` followed by the assistant `answer`, as sft encodes the conversation
    (loss on the last round): the answer is the supervised run, the prompt everything before it."""
    enc = template.encode([*messages, {"role": "assistant", "content": answer}], tools=tools)
    supervised = [i for i, label in enumerate(enc["labels"]) if label != IGNORE_INDEX]
    if not supervised:
        raise ValueError("the answer renders to no tokens")
    start, end = supervised[0], supervised[-1] + 1
    return enc["input_ids"][:start], enc["input_ids"][start:end]


def _common(a: list, b: list) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode_pair(template, row: dict, max_length: int | None, truncation: str = "delete") -> dict:
    """{"prompt_ids", "chosen_ids", "rejected_ids"} for a canonical preference row."""
    tools = row.get("tools")
    p_c, chosen = encode_answer(template, row["messages"], row["chosen"], tools)
    p_r, rejected = encode_answer(template, row["messages"], row["rejected"], tools)
    if p_c != p_r:  # the prompt tokenized differently before the two answers: split where they part
        k = _common(p_c, p_r)
        p_c, chosen, rejected = p_c[:k], p_c[k:] + chosen, p_r[k:] + rejected
    prompt = _fit(p_c, max(len(chosen), len(rejected)), max_length, truncation)
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}


def encode_kto(template, row: dict, max_length: int | None, truncation: str = "delete") -> dict:
    """{"prompt_ids", "completion_ids", "label"} for a canonical KTO row."""
    prompt, completion = encode_answer(template, row["messages"], row["completion"], row.get("tools"))
    return {"prompt_ids": _fit(prompt, len(completion), max_length, truncation), "completion_ids": completion,
            "label": bool(row["label"])}


def _fit(prompt: list, answer_len: int, max_length: int | None, truncation: str) -> list:
    if max_length is None or len(prompt) + answer_len <= max_length:
        return prompt
    room = max_length - answer_len
    if truncation == "left" and room > 0:
        return prompt[-room:]  # keep the end of the prompt: the question next to its answer
    raise TooLong(f"{TOO_LONG} {len(prompt) + answer_len} tokens, over --max_length {max_length}"
                  + ("" if truncation == "left" else " (--truncation_strategy left keeps the end of the prompt)"))


def encode_rows(rows: list, fn, *args) -> tuple[list, list]:
    """(encoded rows, problems at their file:line) for `fn(template, row, ...)` over rows."""
    out, problems = [], []
    for row in rows:
        try:
            out.append(fn(*args[:1], row, *args[1:]))
        except (TooLong, ValueError) as err:
            problems.append(Problem(row.get("location", "?"), str(err)))
    return out, problems
