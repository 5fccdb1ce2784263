"""A jinja2 environment that renders chat templates the way transformers does.

Same settings as `transformers.utils.chat_template_utils._cached_compile_jinja_template`: an immutable sandbox,
trim_blocks + lstrip_blocks, loopcontrols, `raise_exception`, a non-HTML-escaping `tojson`, `strftime_now`, and the
`{% generation %}...{% endgeneration %}` tag that marks supervised (assistant) text.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from functools import lru_cache

import jinja2
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Private-use code points bracket generation blocks while rendering; they are removed before anything sees the text.
# Sentinels (rather than transformers' running-offset tracker) stay correct inside macros and {% set %} blocks.
GEN_START, GEN_END = "\ue000", "\ue001"
_GEN_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


class GenerationExtension(Extension):
    """`{% generation %}body{% endgeneration %}`: renders body; when tracking, brackets it with sentinels."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_mark", [jinja2.nodes.ContextReference()]), [], [], body
                                      ).set_lineno(lineno)

    def _mark(self, context, caller):
        text = caller()
        if context.get("__track_generation__"):
            return GEN_START + text + GEN_END
        return text


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' override: jinja's own tojson HTML-escapes '<', '>' and '&', which chat templates must not do.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


def make_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                       extensions=[GenerationExtension, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = make_environment()


@lru_cache(maxsize=64)
def compile_template(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def strip_generation(source: str) -> str:
    """The template with every `{% generation %}` / `{% endgeneration %}` tag removed (what gets exported)."""
    return _GEN_TAG.sub("", source)


def render(source: str, context: dict, track: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """Render `source`; with `track`, also return the (start, end) char spans of generation blocks."""
    text = compile_template(source).render(**context, __track_generation__=track)
    if not track:
        return text, []
    spans, out, pos, start = [], [], 0, None
    for piece in re.split(f"([{GEN_START}{GEN_END}])", text):
        if piece == GEN_START:
            if start is not None:
                raise ValueError("nested {% generation %} blocks are not supported")
            start = pos
        elif piece == GEN_END:
            if start is None:
                raise ValueError("unbalanced {% endgeneration %}")
            if pos > start:
                spans.append((start, pos))
            start = None
        else:
            out.append(piece)
            pos += len(piece)
    return "".join(out), spans


def merge_adjacent(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Join spans that touch: a turn's text and its end token may sit in separate generation blocks."""
    merged: list[list[int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]
