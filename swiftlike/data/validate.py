"""Checks on canonical rows: roles alternate, assistant turns are not empty, the row ends with the assistant."""
from __future__ import annotations

from typing import Optional

# Which role may follow which: user/assistant alternate after an optional leading system message; a tool result
# follows the assistant turn that called the tool (or another tool result) and is answered by the assistant.
_NEXT = {None: {"system", "user"}, "system": {"user"}, "user": {"assistant"},
         "assistant": {"user", "tool"}, "tool": {"tool", "assistant"}}


def check_messages(row: dict) -> Optional[str]:
    """The reason `row` cannot be trained on, or None."""
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
    if prev != "assistant":
        return f"last message is {prev or 'missing'}, not assistant"
    return None
