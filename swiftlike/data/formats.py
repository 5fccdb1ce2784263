"""Row formats and their conversion to the canonical row `{"messages": [...], "tools": [...]?}`.

| format          | keys                                                              |
|-----------------|-------------------------------------------------------------------|
| messages        | `messages` [{role, content, loss?}], `system`?, `tools`?            |
| sharegpt        | `conversations` [{from, value}], `system`?, `tools`? (keys and role |
|                 | names set by `roles`: LLaMA-Factory's `tags`, see SHAREGPT_TAGS)    |
| firefly         | `conversation` [{human, assistant}], `system`?                      |
| alpaca          | `instruction`, `input`?, `output`, `system`?, `history`?            |
| query_response  | `query`, `response`, `history`? [[q, r], ...], `system`?            |

Converters raise `RowError` with the reason; the loader turns it into a `file:line` problem.
"""
from __future__ import annotations

import json
from typing import Callable, Optional

FORMATS = ("messages", "sharegpt", "firefly", "alpaca", "query_response")
FORMAT_ALIASES = {"openai": "messages", "conversations": "sharegpt", "conversation": "firefly",
                  "swift": "query_response", "query-response": "query_response"}
# Checked in this order: the first whose keys a row has is its format.
_SIGNATURES = (("messages", ("messages",)), ("sharegpt", ("conversations",)), ("firefly", ("conversation",)),
               ("alpaca", ("instruction", "output")), ("query_response", ("query", "response")))
# Prompt rows (inference) may leave the reply out.
_PROMPT_SIGNATURES = tuple((name, keys[:1] if name in ("alpaca", "query_response") else keys)
                           for name, keys in _SIGNATURES)
# sharegpt `from` values; "function_call" is an assistant turn whose value may be a JSON tool call.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "observation": "tool", "tool": "tool", "function_call": "function_call",
                  "function": "tool"}
# The keys of a sharegpt `roles` mapping (LLaMA-Factory's `tags`) and their defaults.
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
_TAG_ROLES = {"user_tag": "user", "assistant_tag": "assistant", "observation_tag": "tool",
              "function_tag": "function_call", "system_tag": "system"}
MESSAGE_ROLES = ("system", "user", "assistant", "tool")


class RowError(ValueError):
    pass


def normalize_format(name: Optional[str]) -> Optional[str]:
    if name is None or name == "auto":
        return None
    name = FORMAT_ALIASES.get(name, name)
    if name not in FORMATS:
        raise ValueError(f"unknown dataset format {name!r}; one of {', '.join(FORMATS)} (or auto)")
    return name


def detect_format(row: dict, prompt: bool = False) -> Optional[str]:
    for name, keys in _PROMPT_SIGNATURES if prompt else _SIGNATURES:
        if all(row.get(k) is not None for k in keys):
            return name
    return None


def format_keys(fmt: str, prompt: bool = False) -> tuple:
    """The keys a row of format `fmt` must have (a prompt row may lack the reply)."""
    return dict(_PROMPT_SIGNATURES if prompt else _SIGNATURES)[fmt]


def sharegpt_roles(roles: Optional[dict]) -> tuple:
    """(role key, content key, {value: role}) for sharegpt turns; `roles` overrides SHAREGPT_TAGS.

    The usual names (human/user, gpt/assistant, observation/tool...) stay accepted next to custom ones, so an
    OpenAI-style list given only user/assistant tags may still hold tool turns.
    """
    unknown = sorted(set(roles or {}) - set(SHAREGPT_TAGS))
    if unknown:
        raise ValueError(f"unknown sharegpt roles key(s) {', '.join(unknown)}; expected {', '.join(SHAREGPT_TAGS)}")
    tags = {**SHAREGPT_TAGS, **{k: v for k, v in (roles or {}).items() if v}}
    names = dict(SHAREGPT_ROLES)
    names.update({tags[tag]: role for tag, role in _TAG_ROLES.items()})
    return tags["role_tag"], tags["content_tag"], names


def rename_columns(row: dict, columns: Optional[dict]) -> dict:
    """`columns` maps source column -> target column (ms-swift's `--columns '{"q": "query"}'`)."""
    if not columns:
        return row
    out = {k: v for k, v in row.items() if k not in columns}
    for src, dst in columns.items():
        if src in row:
            out[dst] = row[src]
    return out


def to_messages(row: dict, fmt: str, roles: Optional[dict] = None) -> dict:
    """Convert one row of format `fmt` to the canonical row; raises RowError. `roles`: see sharegpt_roles."""
    out = _from_sharegpt(row, roles) if fmt == "sharegpt" else CONVERTERS[fmt](row)
    tools = _structured(row.get("tools"), "tools")
    if tools:
        out["tools"] = tools if isinstance(tools, list) else [tools]
    return out


def _structured(value, key):
    """CSV cells and ms-swift rows hold lists as JSON text."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text[0] in "[{":
            try:
                return json.loads(text)
            except json.JSONDecodeError as err:
                raise RowError(f"{key!r} is not valid JSON ({err.msg})") from None
        if key == "tools":
            raise RowError("'tools' must be a list of tool definitions")
    return value


def _text(value, what) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise RowError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _content(value, what) -> str:
    """OpenAI content: a string, or a list of parts of which only text parts are supported."""
    if isinstance(value, list):
        if not all(isinstance(p, dict) and p.get("type") == "text" for p in value):
            raise RowError(f"{what}: only text content parts are supported")
        return "".join(_text(p.get("text"), what) for p in value)
    return _text(value, what)


def _with_system(messages: list, system) -> list:
    system = _text(system, "'system'")
    if system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _list_of_dicts(row, key) -> list:
    items = _structured(row.get(key), key)
    if not isinstance(items, list) or not items:
        raise RowError(f"{key!r} must be a non-empty list")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RowError(f"{key}[{i}] must be an object, got {type(item).__name__}")
    return items


def _history(row) -> list:
    history = _structured(row.get("history"), "history") or []
    if not isinstance(history, list):
        raise RowError("'history' must be a list of [query, response] pairs")
    out = []
    for i, pair in enumerate(history):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise RowError(f"history[{i}] must be a [query, response] pair")
        out += [{"role": "user", "content": _text(pair[0], f"history[{i}][0]")},
                {"role": "assistant", "content": _text(pair[1], f"history[{i}][1]")}]
    return out


def _from_messages(row) -> dict:
    messages = []
    for i, m in enumerate(_list_of_dicts(row, "messages")):
        role = m.get("role")
        if role not in MESSAGE_ROLES:
            raise RowError(f"messages[{i}] has role {role!r}; expected one of {', '.join(MESSAGE_ROLES)}")
        msg = {"role": role, "content": _content(m.get("content"), f"messages[{i}].content")}
        for key in ("loss", "tool_calls", "name", "tool_call_id"):  # kept for templates that render them
            if m.get(key) is not None:
                msg[key] = m[key]
        messages.append(msg)
    return {"messages": _with_system(messages, row.get("system"))}


def _tool_call(value: str) -> Optional[list]:
    """A sharegpt `function_call` value as OpenAI `tool_calls`, when it is a JSON call (or list of calls)."""
    try:
        call = json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return None
    calls = call if isinstance(call, list) else [call]
    if not all(isinstance(c, dict) and "name" in c for c in calls):
        return None
    return [{"type": "function", "function": {"name": c["name"], "arguments": c.get("arguments", {})}}
            for c in calls]


def _from_sharegpt(row, roles: Optional[dict] = None) -> dict:
    role_key, content_key, names = sharegpt_roles(roles)
    messages = []
    for i, turn in enumerate(_list_of_dicts(row, "conversations")):
        source = turn.get(role_key)
        if not isinstance(source, str) or source not in names:
            raise RowError(f"conversations[{i}] has {role_key}={source!r}; expected one of "
                           f"{', '.join(sorted(names))}")
        content = _content(turn.get(content_key), f"conversations[{i}].{content_key}")
        role = names[source]
        msg = {"role": "assistant" if role == "function_call" else role, "content": content}
        if role == "function_call":
            calls = _tool_call(content)
            if calls:
                msg = {"role": "assistant", "content": "", "tool_calls": calls}
        for key in ("loss", "tool_calls", "name", "tool_call_id"):  # OpenAI-style lists read as sharegpt
            if turn.get(key) is not None and key not in msg:
                msg[key] = turn[key]
        messages.append(msg)
    return {"messages": _with_system(messages, row.get("system"))}


def _from_firefly(row) -> dict:
    messages = []
    for i, turn in enumerate(_list_of_dicts(row, "conversation")):
        messages += [{"role": "user", "content": _text(turn.get("human"), f"conversation[{i}].human")},
                     {"role": "assistant", "content": _text(turn.get("assistant"), f"conversation[{i}].assistant")}]
    return {"messages": _with_system(messages, row.get("system"))}


def _from_alpaca(row) -> dict:
    instruction = _text(row.get("instruction"), "'instruction'")
    extra = _text(row.get("input"), "'input'")
    query = f"{instruction}\n{extra}" if instruction and extra else instruction or extra
    messages = _history(row) + [{"role": "user", "content": query},
                                {"role": "assistant", "content": _text(row.get("output"), "'output'")}]
    return {"messages": _with_system(messages, row.get("system"))}


def _from_query_response(row) -> dict:
    messages = _history(row) + [{"role": "user", "content": _text(row.get("query"), "'query'")},
                                {"role": "assistant", "content": _text(row.get("response"), "'response'")}]
    return {"messages": _with_system(messages, row.get("system"))}


CONVERTERS: dict[str, Callable[[dict], dict]] = {
    "messages": _from_messages, "sharegpt": _from_sharegpt, "firefly": _from_firefly,
    "alpaca": _from_alpaca, "query_response": _from_query_response,
}
