"""Chat templates: jinja files (this folder) marked with `{% generation %}`, and the engine that renders them,
finds the supervised spans and encodes conversations into input_ids/labels.

    tpl = get_template("qwen2_5", tokenizer, max_length=2048)
    tpl.render(messages, add_generation_prompt=True)    # == the official chat template's output
    tpl.encode(messages)                                # {'input_ids', 'labels', 'attention_mask', 'length'}
"""
from __future__ import annotations

from typing import Optional, Union

from .encode import IGNORE_INDEX, SequenceTooLong
from .jinja_env import strip_generation
from .save import save_template
from .template import LOSS_MODES, TRUNCATION_MODES, Template

__all__ = ["get_template", "Template", "strip_generation", "save_template", "SequenceTooLong", "IGNORE_INDEX",
           "LOSS_MODES", "TRUNCATION_MODES"]


def get_template(name_or_spec: Union[str, "object"], tokenizer=None, *, system: Optional[str] = None,
                 loss_mode: str = "default", max_length: Optional[int] = None,
                 truncation: str = "delete") -> Template:
    """A Template for a registry name (`qwen2_5`) or a TemplateSpec.

    system: overrides the template's default system prompt (a system message in the data still wins).
    loss_mode: default (every assistant turn) | last_round | all (every token, pretraining style).
    truncation: what encode() does past max_length: delete (raise SequenceTooLong) | left | right.
    """
    spec = name_or_spec
    if isinstance(name_or_spec, str):
        from ..registry import get_registry

        spec = get_registry().templates.get(name_or_spec)
    return Template(spec, tokenizer, system=system, loss_mode=loss_mode, max_length=max_length,
                    truncation=truncation)
