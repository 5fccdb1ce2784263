"""The held-out loss an export is judged by: mean cross-entropy over the response tokens of held-out rows, encoded
with the checkpoint's template (as the trainer's eval loss counts them)."""
from __future__ import annotations

from ..registry import SwiftlikeError


def heldout_rows(datasets, *, limit: int = 0) -> list:
    """Rows of `datasets` (any training format), checked before any model loads; the first `limit` when > 0."""
    from ..data import load_dataset

    rows = load_dataset(list(datasets), shuffle=False).train
    if not rows:
        raise SwiftlikeError(f"{', '.join(datasets)}: no rows")
    return rows[:limit] if limit > 0 else rows


def scoring_template(template):
    """A template that marks the response tokens. A checkpoint's own template text is saved without its
    `{% generation %}` markers (as shipped to other tools); the registered template of that name has them."""
    from ..registry import get_registry
    from ..templates import get_template
    from ..templates.jinja_env import strip_generation

    if strip_generation(template.source) != template.source:
        return template
    registered = get_registry().templates
    if template.name in registered:
        return get_template(template.name, template.tokenizer, system=template.system)
    raise SwiftlikeError(f"template {template.name!r} does not mark the response tokens to score; pass --template "
                         f"NAME (see `swiftlike templates list`)")


def heldout_loss(model, template, rows: list) -> float:
    """Token-weighted mean loss of `model` on the response tokens of `rows`, one row at a time (no padding)."""
    import torch

    from ..data import encode_dataset

    encoded, _ = encode_dataset(rows, scoring_template(template), cache_dir=False)
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for row in encoded:
            ids = torch.tensor([list(row["input_ids"])], device=device)
            labels = torch.tensor([list(row["labels"])], device=device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            target = labels[:, 1:]
            n = int((target != -100).sum())
            if n:
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                         ignore_index=-100, reduction="sum")
                total, count = total + float(loss), count + n
    if not count:
        raise SwiftlikeError("the held-out rows have no response tokens to score")
    return total / count
