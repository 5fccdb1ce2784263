"""`Template`: a chat template bound to a tokenizer, with system handling, rendering and label spans."""
from __future__ import annotations

import copy
from typing import Any, Optional

from .jinja_env import GEN_END, GEN_START, merge_adjacent, render, strip_generation

LOSS_MODES = ("default", "last_round", "all")
TRUNCATION_MODES = ("delete", "left", "right")


class Template:
    """Render conversations with a `{% generation %}`-marked jinja chat template.

    Built by `get_template`; see there for the arguments. `spec` is the registry TemplateSpec.
    """

    def __init__(self, spec, tokenizer=None, *, system: Optional[str] = None, loss_mode: str = "default",
                 max_length: Optional[int] = None, truncation: str = "delete"):
        if loss_mode not in LOSS_MODES:
            raise ValueError(f"loss_mode must be one of {', '.join(LOSS_MODES)}, not {loss_mode!r}")
        if truncation not in TRUNCATION_MODES:
            raise ValueError(f"truncation must be one of {', '.join(TRUNCATION_MODES)}, not {truncation!r}")
        self.spec = spec
        self.name = spec.name
        self.source = spec.load_source()
        self.tokenizer = tokenizer
        self.system = system
        self.loss_mode = loss_mode
        self.max_length = max_length
        self.truncation = truncation
        extra = spec.extra or {}
        # Extra variables the template reads (e.g. enable_thinking=False for qwen3) and, for templates whose
        # official text ends the final reply with no stop token (GLM), the stop text training appends.
        self.render_kwargs: dict = dict(extra.get("render_kwargs", {}))
        self._train_suffix: str = extra.get("train_suffix", "")
        self._default_tokens = {k: extra[k] for k in ("bos_token", "eos_token") if k in extra}

    # -- context ------------------------------------------------------------------------------------------------
    @property
    def default_system(self) -> Optional[str]:
        return self.spec.default_system

    def special_tokens(self) -> dict:
        """bos/eos/... strings the template may print: the tokenizer's, else the catalog's defaults."""
        out = {"bos_token": "", "eos_token": "", **self._default_tokens}
        tok = self.tokenizer
        if tok is not None:
            for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
                value = getattr(tok, key, None)
                if value is not None:
                    out[key] = str(value)
        return out

    def prepare_messages(self, messages: list[dict], system: Optional[str] = None) -> list[dict]:
        """Apply system precedence: a system message in the data > `system` arg > Template(system=) > default."""
        messages = [dict(m) for m in messages]
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m:
                raise ValueError(f"message {i} must be an object with a 'role' (got {m!r})")
        if any(m["role"] == "system" for m in messages):
            return messages
        chosen = next((s for s in (system, self.system, self.default_system) if s is not None), None)
        if chosen is not None:
            messages.insert(0, {"role": "system", "content": chosen})
        return messages

    def _context(self, messages, add_generation_prompt, tools, **kwargs) -> dict:
        ctx = {**self.special_tokens(), **self.render_kwargs, **kwargs}
        ctx.update(messages=messages, add_generation_prompt=add_generation_prompt, tools=tools)
        return ctx

    @property
    def train_suffix(self) -> str:
        """Text encode() appends after a final reply (a jinja string, e.g. "{{ eos_token }}"); usually empty."""
        if not self._train_suffix:
            return ""
        return render(self._train_suffix, self.special_tokens())[0]

    # -- rendering ----------------------------------------------------------------------------------------------
    def render(self, messages: list[dict], add_generation_prompt: bool = False, system: Optional[str] = None,
               tools: Optional[list] = None, inject_system: bool = True, **kwargs) -> str:
        """The prompt text, identical to the official template's output for the same messages."""
        if inject_system:
            messages = self.prepare_messages(messages, system)
        text, _ = render(self.source, self._context(copy.deepcopy(messages), add_generation_prompt, tools, **kwargs))
        return text

    def render_with_spans(self, messages: list[dict], add_generation_prompt: bool = False,
                          system: Optional[str] = None, tools: Optional[list] = None, inject_system: bool = True,
                          **kwargs) -> tuple[str, list[tuple[int, int]]]:
        """(text, spans): one (start, end) char span of supervised text per rendered assistant turn."""
        if inject_system:
            messages = self.prepare_messages(messages, system)
        _check_no_sentinels(messages)
        ctx = self._context(copy.deepcopy(messages), add_generation_prompt, tools, **kwargs)
        text, spans = render(self.source, ctx, track=True)
        return text, merge_adjacent(spans)

    def chat_template_for_export(self) -> str:
        """The jinja to ship with a saved model: the template with generation markers stripped."""
        return strip_generation(self.source)

    # -- tokens -------------------------------------------------------------------------------------------------
    @property
    def stop_words(self) -> list[str]:
        words = list(self.spec.stop_words or [])
        eos = self.special_tokens().get("eos_token")
        if eos and eos not in words:
            words.append(eos)
        return words

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids of the stop words that are single tokens in the tokenizer (eos first)."""
        tok = self._require_tokenizer()
        ids: list[int] = []
        if getattr(tok, "eos_token_id", None) is not None:
            ids.append(int(tok.eos_token_id))
        for word in self.stop_words:
            encoded = tok.encode(word, add_special_tokens=False)
            if len(encoded) == 1 and encoded[0] not in ids:
                ids.append(int(encoded[0]))
        return ids

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(f"template {self.name!r} has no tokenizer; pass one to get_template(...)")
        return self.tokenizer

    def encode(self, messages: list[dict], system: Optional[str] = None, tools: Optional[list] = None,
               add_generation_prompt: bool = False, **kwargs) -> dict[str, Any]:
        """input_ids / labels / attention_mask / length for one conversation (see `encode.encode`)."""
        from .encode import encode

        return encode(self, messages, system=system, tools=tools, add_generation_prompt=add_generation_prompt,
                      **kwargs)

    def __repr__(self) -> str:
        return f"Template({self.name!r}, loss_mode={self.loss_mode!r}, max_length={self.max_length})"


def _check_no_sentinels(value: Any) -> None:
    if isinstance(value, str):
        if GEN_START in value or GEN_END in value:
            raise ValueError("message text contains U+E000/U+E001, which swiftlike reserves for label tracking")
    elif isinstance(value, dict):
        for v in value.values():
            _check_no_sentinels(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_no_sentinels(v)
