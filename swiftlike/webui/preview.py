"""Dataset preview for the Train tab: bad rows as `file:line`, and the first rows rendered through the chosen template
with the supervised tokens highlighted — the data code and the template code training uses, nothing re-implemented."""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Optional

from ..registry import SwiftlikeError

RLHF_KINDS = {"kto": "kto", "ppo": "rl", "grpo": "rl"}  # the other rlhf types read preference pairs


def data_kind(stage: str, rlhf_type: Optional[str] = None) -> str:
    if stage == "pt":
        return "text"
    if stage == "rlhf":
        return RLHF_KINDS.get(rlhf_type or "dpo", "preference")
    return "sft"


def check_datasets(datasets: list[str]) -> None:
    """The CLI's own check of what a dataset argument names: a path that is not there is refused before anything
    starts (names are looked up by the run)."""
    from ..data import parse_dataset

    if not datasets:
        raise SwiftlikeError("choose at least one dataset (a registered name, a path or an upload)")
    for text in datasets:
        ref = parse_dataset(text)
        if ref.kind == "path":
            from pathlib import Path

            if not Path(ref.target).expanduser().exists():
                raise SwiftlikeError(f"--dataset {text}: no such file or directory")


def check_model(model_type: Optional[str], model_dir: Optional[str]) -> None:
    """As the CLI checks --model_type / --model: a registered type, or a directory holding a config.json."""
    from pathlib import Path

    from ..registry import get_registry

    if model_dir:
        path = Path(model_dir).expanduser()
        if not path.is_dir():
            if model_dir.count("/") == 1 and not model_dir.startswith(("/", ".", "~")):
                return  # a hub id (ORG/NAME), resolved by the run
            raise SwiftlikeError(f"--model {model_dir}: no such directory")
        if not (path / "config.json").exists():
            raise SwiftlikeError(f"--model {path}: no config.json there; point it at a model directory")
    elif not model_type:
        raise SwiftlikeError("choose a model type or a model directory")
    if model_type and not model_dir and model_type not in get_registry().models:
        get_registry().models.get(model_type)  # the registry's own error, with its "did you mean"


@dataclass
class Preview:
    rows_read: int = 0
    problems: list = field(default_factory=list)  # "file:line: reason"
    samples: list = field(default_factory=list)  # [(text, supervised?)] per row
    raw: list = field(default_factory=list)  # rows shown as JSON (stages whose rows are not one conversation)
    error: Optional[str] = None


def preview(datasets: list[str], *, stage: str = "sft", rlhf_type: Optional[str] = None,
            model_type: Optional[str] = None, model_dir: Optional[str] = None, template: Optional[str] = None,
            system: Optional[str] = None, max_rows: int = 3, loss_scale: str = "default") -> Preview:
    from ..data import DatasetError, read_dataset

    out = Preview()
    kind = data_kind(stage, rlhf_type)
    rows = []
    try:
        check_datasets(datasets)
        for text in datasets:
            got, bad = read_dataset(text, kind=kind)
            rows += got
            out.problems += [str(p) for p in bad]
    except DatasetError as err:
        out.problems += [str(p) for p in err.problems] or [str(err)]
        return out
    except SwiftlikeError as err:
        out.error = str(err)
        return out
    out.rows_read = len(rows)
    first = rows[:max_rows]
    if kind != "sft" or not first:
        out.raw = first
        return out
    try:
        tpl = _template(model_type, model_dir, template, system, loss_scale)
    except SwiftlikeError as err:
        out.error = str(err)
        out.raw = first
        return out
    for row in first:
        out.samples.append(supervised_pieces(tpl, row["messages"]))
    return out


def _template(model_type, model_dir, template, system, loss_scale):
    from ..models.load import load_tokenizer
    from ..models.options import ModelArguments
    from ..templates import get_template

    check_model(model_type, model_dir)
    opts = ModelArguments(model_type=model_type or None, model=model_dir or None)
    resolved = opts.resolve_model()
    name = template or resolved.spec.template
    if name == "auto":
        raise SwiftlikeError(f"cannot tell which chat template {resolved.path} uses; choose a template")
    tokenizer = load_tokenizer(resolved.path)
    return get_template(name, tokenizer, system=system or None, loss_mode=loss_scale or "default")


def supervised_pieces(template, messages: list) -> list[tuple[str, bool]]:
    """The encoded row as (text, supervised) runs: what the model reads, and which part it is trained to say."""
    enc = template.encode(messages)
    tok = template.tokenizer
    pieces: list[tuple[str, bool]] = []
    for ids, flag in _runs(enc["input_ids"], [lab != -100 for lab in enc["labels"]]):
        pieces.append((tok.decode(ids), flag))
    return pieces


def _runs(ids, flags):
    run, current = [], None
    for i, f in zip(ids, flags):
        if current is not None and f != current:
            yield run, current
            run = []
        run.append(i)
        current = f
    if run:
        yield run, current


def to_html(p: Preview, labels) -> str:
    """The preview as HTML (labels: the i18n lookup)."""
    parts = ['<div class="swl-preview">']
    if p.error:
        parts.append(f'<p class="swl-error">Error: {html.escape(p.error)}</p>')
    if p.problems:
        parts.append(f'<p class="swl-error">{html.escape(labels("bad_rows"))} ({len(p.problems)}):</p><ul>')
        parts += [f'<li class="swl-bad-row"><code>{html.escape(x)}</code></li>' for x in p.problems[:50]]
        parts.append("</ul>")
    if p.rows_read:
        parts.append(f"<p>{html.escape(labels('rows_read'))}: {p.rows_read}</p>")
    for i, sample in enumerate(p.samples, 1):
        body = "".join(f'<mark class="swl-sup">{html.escape(t)}</mark>' if sup else html.escape(t)
                       for t, sup in sample)
        parts.append(f'<div class="swl-row"><b>#{i}</b><pre style="white-space:pre-wrap">{body}</pre></div>')
    for i, row in enumerate(p.raw, 1):
        parts.append(f'<div class="swl-row"><b>#{i}</b><pre style="white-space:pre-wrap">'
                     f'{html.escape(json.dumps(row, ensure_ascii=False, indent=1))}</pre></div>')
    if p.samples:
        parts.append(f'<p><mark class="swl-sup">{html.escape(labels("supervised"))}</mark></p>')
    parts.append("</div>")
    return "".join(parts)
