"""Chat and Compare through swiftlike.infer: load_checkpoint (a checkpoint, an installed adapter or a hub ref, with
the template it trained with) and generate(stream=True). Loaded models are kept, a few at a time."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Iterator, Optional

from ..registry import SwiftlikeError

KEEP = 3
_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_LOCK = threading.Lock()


def load(base_type: Optional[str], base_dir: Optional[str], adapter: Optional[str], system: Optional[str] = None,
         template: Optional[str] = None):
    """A swiftlike.infer.Loaded, cached by (base, adapter, system, template); an empty template: the checkpoint's
    (or the base model type's), as `swiftlike infer` decides."""
    from ..infer import load_checkpoint
    from .common import check_checkpoint_ref, check_dir

    base_type = (base_type or "").strip() or None
    base_dir = check_dir(base_dir, "--model", required=False)
    adapter = (adapter or "").strip() or None
    if adapter:
        adapter = check_checkpoint_ref(adapter)
    if not (adapter or base_type or base_dir):
        raise SwiftlikeError("choose a base model or an adapter")
    key = (base_type, base_dir, adapter, system or None, template or None)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        loaded = load_checkpoint(adapter, model_type=None if base_dir else base_type, model=base_dir,
                                 system=system or None, template=template or None)
        _CACHE[key] = loaded
        while len(_CACHE) > KEEP:
            _CACHE.popitem(last=False)
        return loaded


def stream_reply(loaded, messages: list, **gen) -> Iterator[str]:
    """The reply so far, after each generated piece (cut at the template's stop words)."""
    from ..infer import generate

    text = ""
    for piece in generate(loaded.model, loaded.template, messages, stream=True, **gen):
        text += piece
        yield _cut(text, loaded.template)
    yield _cut(text, loaded.template)


def _cut(text: str, template) -> str:
    for stop in template.stop_words:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text


def describe(loaded) -> str:
    what = f"{loaded.model_type}"
    return what + (f" + {loaded.ckpt_dir}" if loaded.ckpt_dir else "")
