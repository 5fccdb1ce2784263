"""Checks on rows: roles alternate, assistant turns are not empty, the row ends with the assistant (or, for a
prompt, with the user); rows carrying images, video or audio are refused."""
from __future__ import annotations

import re
from typing import Optional

# Which role may follow which: user/assistant alternate after an optional leading system message; a tool result
# follows the assistant turn that called the tool (or another tool result) and is answered by the assistant.
_NEXT = {None: {"system", "user"}, "system": {"user"}, "user": {"assistant"},
         "assistant": {"user", "tool"}, "tool": {"tool", "assistant"}}

MEDIA_KEYS = ("images", "image", "videos", "audios")
# ms-swift / LLaMA-Factory placeholders and Qwen-VL's `<img>path</img>`; an HTML `<img src=...>` is plain text.
_MEDIA_TAG = re.compile(r"<(?:image|video|audio)>|<img>.*?</img>", re.S)
MEDIA_REASON = ("row carries images (the multimodal format); swiftlike trains text-only models — remove the images "
                "or the row")


def check_messages(row: dict, *, prompt: bool = False) -> Optional[str]:
    """The reason `row` cannot be trained on (or, with prompt=True, prompted with), or None."""
    messages = row["messages"]
    prev = None
    for i, m in enumerate(messages):
        role = m["role"]
        if role not in _NEXT[prev]:
            if role == "system":
                return f"messages[{i}]: a system message is only allowed first"
            expected = " or ".join(sorted(_NEXT[prev]))
            return f"messages[{i}]: roles do not alternate ({prev or 'start'} -> {role}; expected {expected})"
        if role == "assistant" and not m["content"].strip() and not m.get("tool_calls"):
            return f"messages[{i}]: empty assistant turn"
        prev = role
    ends = ("user", "tool") if prompt else ("assistant",)
    if prev not in ends:
        return f"last message is {prev or 'missing'}, not {' or '.join(ends)}"
    return None


def split_reference(row: dict) -> tuple:
    """(prompt row, reference answer or None): a last assistant turn is the reference; an empty one (alpaca
    without `output`, query without `response`) is no reference."""
    messages = list(row["messages"])
    reference = None
    if messages and messages[-1]["role"] == "assistant":
        reference = messages.pop()["content"] or None
    return {**row, "messages": messages}, reference


def media_reason(row: dict) -> Optional[str]:
    """MEDIA_REASON when a raw row has a media field or a canonical row's text holds a media tag, else None."""
    for key in MEDIA_KEYS:
        value = row.get(key)
        if isinstance(value, str):
            value = value.strip().strip("[]").strip()  # CSV cells: "" and "[]" are no images
        if value:
            return MEDIA_REASON
    for m in row.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str) and _MEDIA_TAG.search(content):
            return MEDIA_REASON
    return None
