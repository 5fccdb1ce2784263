"""The one place that decides which chat template a checkpoint is used with (infer, serve, merge, export)."""
from __future__ import annotations

from pathlib import Path

from ..registry import SwiftlikeError, TemplateSpec, get_registry
from .contents import saved_args
from .manifest import read_manifest


def checkpoint_template(ckpt=None, *, template: str | None = None, system: str | None = None,
                        default: str | TemplateSpec | None = None) -> tuple[TemplateSpec, str | None]:
    """(template spec, system prompt) for checkpoint `ckpt` (or None for a bare base model).

    Order: `template` (the user's choice) > the template text in the checkpoint's manifest (exactly what training
    rendered, even if the registered template changed since or is not installed here) > the template it names >
    `default` (the base model type's template name, or a spec). The system prompt: `system` > the one the run
    trained with.
    """
    saved = saved_args(ckpt) if ckpt else {}
    manifest = read_manifest(ckpt) if ckpt else {}
    if system is None:
        system = saved.get("system", manifest.get("system"))
    templates = get_registry().templates
    if template:
        return templates.get(template), system
    name = manifest.get("template") or saved.get("template")
    text = manifest.get("template_text")
    if isinstance(text, str) and text:
        known = templates.get(name) if name and name in templates else None
        # stop words, default system and render variables come with the registered template of that name
        spec = TemplateSpec(name=name or Path(ckpt).name, chat_template=text,
                            default_system=known.default_system if known else None,
                            stop_words=list(known.stop_words) if known else [],
                            extra=dict(known.extra) if known else {}, plugin=f"(checkpoint {ckpt})")
        return spec, system
    if name:
        if name not in templates:
            raise SwiftlikeError(f"{ckpt}: trained with template {name!r}, which is not installed here and the "
                                 f"checkpoint has no template text; pass --template NAME")
        return templates.get(name), system
    if isinstance(default, TemplateSpec):
        return default, system
    if not default or default == "auto":
        where = f"{ckpt}" if ckpt else "the model"
        raise SwiftlikeError(f"cannot tell which chat template {where} uses; pass --template NAME "
                             f"(see `swiftlike templates list`)")
    return templates.get(default), system


def marked_template(spec, source: str):
    """A checkpoint's template text is the exported one, without `{% generation %}` markers; the registered
    template it was stripped from has them (the label mask training used)."""
    from ..templates.jinja_env import strip_generation

    templates = get_registry().templates
    if strip_generation(source) == source and spec.name in templates:
        registered = templates.get(spec.name)
        if strip_generation(registered.load_source()) == source:
            return registered
    return spec
