"""Built-in reward functions (registered by swiftlike.plugins.rewards). A reward function takes the completions and
the dataset's columns as keyword lists (TRL's signature) and returns one float per completion."""
from __future__ import annotations

import re

_NUMBER = re.compile(r"^[-+]?\d+(?:\.\d+)?$")


def _text(completion) -> str:
    """A completion as text (conversational completions are lists of messages)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    return str(completion or "")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".!")


def accuracy(completions, solution=None, **_) -> list[float]:
    """1.0 when the answer equals the row's `solution` (case and spacing aside) or contains it: a number as a whole
    number (67 is not in 167, 6.7, -67, 67/8 or 67,000), text as a phrase; rows without a solution score 0."""
    solutions = solution if isinstance(solution, list) else [solution] * len(completions)
    out = []
    for completion, sol in zip(completions, solutions):
        if sol is None or not str(sol).strip():
            out.append(0.0)
            continue
        text, sol = _norm(_text(completion)), _norm(str(sol))
        if text == sol:
            out.append(1.0)
        elif _NUMBER.match(sol):
            # a whole number: not part of -3, 1e3, 3/4, 3,000 or 3.5 (a negative solution keeps its sign)
            sign = "" if sol.startswith("-") else "(?<!-)"
            out.append(1.0 if re.search(rf"(?<![\w.,/]){sign}{re.escape(sol)}(?![\w]|[.,/]\d)", text) else 0.0)
        else:
            out.append(1.0 if re.search(rf"(?<!\w){re.escape(sol)}(?!\w)", text) else 0.0)
    return out


def format_reward(completions, pattern: str | None = None, **_) -> list[float]:
    """1.0 when the whole answer matches `pattern` (--reward_format; default: one non-empty line)."""
    regex = re.compile(pattern or r"[^\n]*\S[^\n]*", re.S)
    return [1.0 if regex.fullmatch(_text(c).strip()) else 0.0 for c in completions]


def length(completions, target: int = 20, **_) -> list[float]:
    """1.0 at `target` words (--reward_length), falling linearly to 0 at twice (or none of) that length."""
    target = max(1, int(target))
    return [max(0.0, 1.0 - abs(len(_text(c).split()) - target) / target) for c in completions]
