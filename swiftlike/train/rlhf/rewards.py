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


# ms-swift's (DeepSeek-R1's) format: reasoning in <think>, then the answer in <answer>, nothing after it
R1_FORMAT = r"<think>.*?</think>\s*<answer>.*?</answer>"


def final_answer(text: str) -> str | None:
    """The answer a reply marks as final: the last `\\boxed{...}` (braces balanced), else the last
    `<answer>...</answer>`; None when it marks none."""
    start = text.rfind("\\boxed{")
    if start >= 0:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1:j].strip()
    tags = re.findall(r"<answer>(.*?)</answer>", text, re.S)
    return tags[-1].strip() if tags else None


def _same(a: str, b: str) -> bool:
    """Equal answers: as text (case, spacing, a final full stop aside) or as numbers (74 and 74.0)."""
    a, b = _norm(a).strip("$ "), _norm(b).strip("$ ")
    if a == b:
        return True
    try:
        return float(a.replace(",", "")) == float(b.replace(",", ""))
    except ValueError:
        return False


def accuracy(completions, solution=None, **_) -> list[float]:
    """1.0 when the answer is the row's `solution`. A reply that marks its final answer (`\\boxed{}` or
    `<answer>`, as math sets and ms-swift's R1 format do) is judged on that answer alone, against the solution's own
    marked answer when it has one; otherwise the reply equals the solution (case and spacing aside) or contains it:
    a number as a whole number (67 is not in 167, 6.7, -67, 67/8 or 67,000), text as a phrase. Rows without a
    solution score 0."""
    solutions = solution if isinstance(solution, list) else [solution] * len(completions)
    out = []
    for completion, sol in zip(completions, solutions):
        if sol is None or not str(sol).strip():
            out.append(0.0)
            continue
        reply, reference = _text(completion), str(sol)
        reference = final_answer(reference) or reference
        marked = final_answer(reply)
        if marked is not None:
            out.append(1.0 if _same(marked, reference) else 0.0)
            continue
        text, sol = _norm(reply), _norm(reference)
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
    """1.0 when the whole answer matches `pattern` (--reward_format; default: ms-swift's R1 format,
    `<think>...</think>` then `<answer>...</answer>`)."""
    regex = re.compile(pattern or R1_FORMAT, re.S)
    return [1.0 if regex.fullmatch(_text(c).strip()) else 0.0 for c in completions]


def length(completions, target: int = 20, **_) -> list[float]:
    """1.0 at `target` words (--reward_length), falling linearly to 0 at twice (or none of) that length."""
    target = max(1, int(target))
    return [max(0.0, 1.0 - abs(len(_text(c).split()) - target) / target) for c in completions]
