"""Rows for the other training stages, in the formats people have, auto-detected per row:

| kind       | canonical row                                              | formats read                               |
|------------|------------------------------------------------------------|--------------------------------------------|
| preference | `messages` (the prompt), `chosen`, `rejected`              | ms-swift `messages` + `rejected_response`;  |
|            |                                                            | TRL `prompt`/`chosen`/`rejected` (strings   |
|            |                                                            | or conversations, the prompt may be         |
|            |                                                            | implicit); LLaMA-Factory sharegpt ranking   |
|            |                                                            | `conversations` + `chosen` + `rejected`,    |
|            |                                                            | alpaca ranking `instruction` + `chosen` +   |
|            |                                                            | `rejected`                                  |
| kto        | `messages` (the prompt), `completion`, `label` (bool)      | ms-swift `messages` + `label`; TRL `prompt` |
|            |                                                            | / `completion` / `label`; LLaMA-Factory     |
|            |                                                            | `conversations` + `kto_tag`; or any         |
|            |                                                            | preference pair (chosen desirable, rejected |
|            |                                                            | not)                                        |
| text       | `text`                                                     | `text` (or `--columns`), `.txt` lines       |
| rl         | `messages` (the prompt), `solution` (reference or None)    | any prompt row (messages, sharegpt, query,  |
|            |                                                            | alpaca...), `solution` or its final reply   |

Converters raise RowError with the reason; the loader reports it as `file:line`.
"""
from __future__ import annotations

from typing import Optional

from .formats import RowError, _content, _from_messages, _from_sharegpt, _history, _text, _with_system, \
    detect_format, to_messages
from .validate import check_messages, media_reason, split_reference

KINDS = ("preference", "kto", "text", "rl")


class WrongKind(RowError):
    """The row is not of the kind the stage reads (an sft row given to dpo, say): when every row of a file says so,
    the file is the problem and the loader says it once."""
PREFERENCE_FORMATS = ("ms-swift `messages` + `rejected_response`", "TRL `prompt`/`chosen`/`rejected`",
                      "LLaMA-Factory `conversations` + `chosen` + `rejected` (or `instruction` + `chosen` + "
                      "`rejected`)")
KTO_FORMATS = ("ms-swift `messages` + `label`", "TRL `prompt`/`completion`/`label`",
               "LLaMA-Factory `conversations` + `kto_tag`", "or a preference pair")


def convert(row: dict, kind: str, roles: Optional[dict] = None) -> list[dict]:
    """One raw row of `kind` to its canonical rows (a preference pair gives KTO two: its chosen answer desirable,
    its rejected one not); raises RowError naming what is missing or wrong."""
    reason = media_reason(row)
    if reason:
        raise RowError(reason)
    if kind == "kto" and row.get("label", row.get("kto_tag")) is None and _is_pair(row):
        pair = _preference(row, roles)
        # `pair`: the two rows are halves of one source row, sampled and split together (loading.py)
        outs = [{"messages": pair["messages"], "completion": pair[key], "label": key == "chosen", "pair": True, **(
            {"tools": pair["tools"]} if "tools" in pair else {})} for key in ("chosen", "rejected")]
    else:
        outs = [{"preference": _preference, "kto": _kto, "text": _text_row, "rl": _rl}[kind](row, roles)]
    if kind != "text":
        for out in outs:
            reason = media_reason(out) or check_messages(out, prompt=True)
            if reason:
                raise RowError(f"prompt: {reason}")
    return outs


def _is_pair(row: dict) -> bool:
    return (row.get("rejected_response") is not None and row.get("messages") is not None) or (
        row.get("chosen") is not None and row.get("rejected") is not None)


# ---------------------------------------------------------------------------------------------- preference pairs
def _preference(row: dict, roles) -> dict:
    if row.get("rejected_response") is not None and row.get("messages") is not None:  # ms-swift
        prompt, chosen = _split_last(to_messages(row, "messages"), "messages")
        rejected = _text(row.get("rejected_response"), "'rejected_response'")
    elif row.get("chosen") is not None and row.get("rejected") is not None:
        if row.get("conversations") is not None:  # LLaMA-Factory sharegpt ranking
            prompt = _from_sharegpt({"conversations": row["conversations"], "system": row.get("system")}, roles)
            chosen, rejected = (_answer(row[key], key, roles) for key in ("chosen", "rejected"))
        elif row.get("instruction") is not None:  # LLaMA-Factory alpaca ranking
            prompt = _alpaca_prompt(row)
            chosen, rejected = (_answer(row[key], key, roles) for key in ("chosen", "rejected"))
        elif row.get("prompt") is not None or row.get("messages") is not None:  # TRL (explicit prompt)
            prompt = _prompt(row.get("prompt") if row.get("prompt") is not None else row["messages"], row)
            chosen, rejected = (_answer(row[key], key, roles) for key in ("chosen", "rejected"))
        else:  # TRL implicit prompt: two conversations that share everything but the last reply
            if isinstance(row["chosen"], str) or isinstance(row["rejected"], str):
                raise RowError("`chosen`/`rejected` are text with no prompt: add `prompt` (TRL), `messages` "
                               "(ms-swift) or `conversations` (LLaMA-Factory), or give both as full conversations")
            prompt, chosen, rejected = _implicit(row)
    else:
        have = ", ".join(sorted(map(str, row))) or "none"
        raise WrongKind(f"not a preference row (keys: {have}): no rejected answer; use one of "
                       f"{'; '.join(PREFERENCE_FORMATS)}")
    if not chosen.strip() or not rejected.strip():
        raise RowError(f"empty {'chosen' if not chosen.strip() else 'rejected'} answer")
    if chosen == rejected:
        raise RowError("chosen and rejected answers are identical: the pair teaches nothing")
    return {**prompt, "chosen": chosen, "rejected": rejected}


def _kto(row: dict, roles) -> dict:
    label = row.get("label", row.get("kto_tag"))
    if label is None:
        have = ", ".join(sorted(map(str, row))) or "none"
        raise WrongKind(f"not a KTO row (keys: {have}): no `label`; use one of {'; '.join(KTO_FORMATS)}")
    label = _bool(label, "label" if "label" in row else "kto_tag")
    if row.get("completion") is not None:  # TRL
        prompt = _prompt(row.get("prompt") if row.get("prompt") is not None else row.get("messages"), row)
        completion = _answer(row["completion"], "completion", roles)
    elif row.get("conversations") is not None:  # LLaMA-Factory
        prompt, completion = _split_last(_from_sharegpt(row, roles), "conversations")
    elif row.get("messages") is not None:  # ms-swift
        prompt, completion = _split_last(to_messages(row, "messages"), "messages")
    else:
        raise RowError(f"a KTO row needs its prompt and answer: {'; '.join(KTO_FORMATS)}")
    if not completion.strip():
        raise RowError("empty completion")
    return {**prompt, "completion": completion, "label": label}


# ---------------------------------------------------------------------------------------------- text and prompts
def _text_row(row: dict, roles) -> dict:
    text = row.get("text")
    if text is None:
        have = ", ".join(sorted(map(str, row))) or "none"
        raise WrongKind(f"no `text` field (keys: {have}); pretraining reads `text`, or map a column to it with "
                       f"--columns '{{\"content\": \"text\"}}'")
    text = _text(text, "'text'")
    if not text.strip():
        raise RowError("empty text")
    return {"text": text}


def _rl(row: dict, roles) -> dict:
    return {**_rl_prompt(row, roles), "columns": _other_columns(row)}


def _rl_prompt(row: dict, roles) -> dict:
    fmt = detect_format(row, prompt=True)
    solution = row.get("solution")
    if fmt is None and row.get("prompt") is not None:  # TRL's prompt-only rows: text or a conversation
        prompt = _prompt(row["prompt"], row)
        return {**prompt, "solution": _text(solution, "'solution'") if solution is not None else None}
    if fmt is None and (row.get("problem") or row.get("question")) is not None:  # ms-swift's math sets
        key = "problem" if row.get("problem") is not None else "question"
        prompt = _prompt(_text(row[key], f"'{key}'"), row)
        return {**prompt, "solution": _text(solution, "'solution'") if solution is not None else None}
    if fmt is None:
        have = ", ".join(sorted(map(str, row))) or "none"
        raise WrongKind(f"no prompt (keys: {have}); a prompt row is `messages`, `conversations`, `query`, "
                       f"`instruction`, `prompt`, `problem` or `question` (+ an optional `solution`)")
    canon = to_messages(row, fmt, roles)
    canon, reference = split_reference(canon)
    return {**canon, "solution": _text(solution, "'solution'") if solution is not None else reference}


# what a prompt row's conversation is made of; its other columns (a countdown row's `target` and `nums`) go to the
# reward functions as keyword lists, as TRL and ms-swift pass them
_CONVERSATION_KEYS = {"messages", "conversations", "prompt", "query", "response", "history", "instruction", "input",
                      "output", "system", "tools", "solution"}


def _other_columns(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in _CONVERSATION_KEYS}


# ---------------------------------------------------------------------------------------------- helpers
def _split_last(canon: dict, key: str) -> tuple[dict, str]:
    messages = canon["messages"]
    if not messages or messages[-1]["role"] != "assistant":
        raise RowError(f"{key}: the last turn must be the (chosen) assistant answer")
    return {**canon, "messages": messages[:-1]}, messages[-1]["content"]


def _prompt(value, row: dict) -> dict:
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    return to_messages({"messages": value, "system": row.get("system"), "tools": row.get("tools")}, "messages")


def _alpaca_prompt(row: dict) -> dict:
    instruction = _text(row.get("instruction"), "'instruction'")
    extra = _text(row.get("input"), "'input'")
    query = f"{instruction}\n{extra}" if instruction and extra else instruction or extra
    return {"messages": _with_system(_history(row) + [{"role": "user", "content": query}], row.get("system"))}


def _answer(value, key: str, roles) -> str:
    """An answer given as text, one message ({role, content} or sharegpt {from, value}) or a conversation whose
    last turn is the answer."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value or not isinstance(value[-1], dict):
        raise RowError(f"{key!r} must be text, a message or a list of messages")
    last = value[-1]
    role = last.get("role", last.get((roles or {}).get("role_tag", "from")))
    if role is not None and role not in ("assistant", "gpt", "model", (roles or {}).get("assistant_tag")):
        raise RowError(f"{key!r} ends with a {role!r} turn; its last message must be the assistant's answer")
    text = last.get("content", last.get("value", last.get((roles or {}).get("content_tag", "value"))))
    return _content(text, f"{key}[-1].content")


def _implicit(row: dict) -> tuple[dict, str, str]:
    chosen = _from_messages({"messages": row["chosen"], "system": row.get("system")})["messages"]
    rejected = _from_messages({"messages": row["rejected"], "system": row.get("system")})["messages"]
    if chosen[:-1] != rejected[:-1] or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise RowError("`chosen` and `rejected` conversations must share the prompt and end with the answer "
                       "(or give `prompt` separately)")
    return {"messages": chosen[:-1]}, chosen[-1]["content"], rejected[-1]["content"]


def _bool(value, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise RowError(f"{key!r} must be true or false, got {value!r}")
