"""Inference: load a checkpoint (adapter or full model) with the template it trained with, and generate."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from .registry import SwiftlikeError


@dataclass
class Loaded:
    model: object
    tokenizer: object
    template: object
    ckpt_dir: Optional[Path]
    base_dir: Path
    model_type: str


def _ckpt_args(ckpt: Path) -> dict:
    for name in ("args.json", "sft_args.json"):
        for where in (ckpt, ckpt.parent):
            if (where / name).exists():
                return json.loads((where / name).read_text())
    return {}


def load_checkpoint(ckpt_dir=None, *, model_type=None, model=None, model_cache_dir=None, hub=None,
                    revision=None, template=None, system=None, torch_dtype=None, force=False,
                    trust_remote_code=False, adapters=None) -> Loaded:
    """ckpt_dir: a LoRA checkpoint (base found from its args/manifest), a merged/full model dir, or None (base)."""
    from .adapters import load as load_adapter, resolve as resolve_adapter
    from .adapters.loading import read_manifest
    from .models.load import load_model_tokenizer
    from .models.resolve import resolve_model
    from .templates import get_template

    # an installed adapter's name or a hub reference (hf:ORG/NAME[@REV]) works wherever a checkpoint dir does
    ckpt_dir = resolve_adapter(ckpt_dir, base=model_cache_dir or model or model_type, force=force) if ckpt_dir else None
    ckpt = Path(ckpt_dir) if ckpt_dir else None
    if ckpt is not None and not ckpt.exists():
        raise SwiftlikeError(f"--ckpt_dir {ckpt}: no such directory")
    saved = _ckpt_args(ckpt) if ckpt else {}
    manifest = read_manifest(ckpt) if ckpt else {}
    is_adapter = ckpt is not None and (ckpt / "adapter_config.json").exists()
    if ckpt is not None and not is_adapter:
        model = str(ckpt)  # a merged or fully fine-tuned model
        model_type = model_type or saved.get("model_type") or manifest.get("base_model_type")
        model_cache_dir = None
    elif is_adapter:
        model_type = model_type or saved.get("model_type") or manifest.get("base_model_type")
        if not (model or model_cache_dir):
            base_dir = saved.get("model_dir")
            if base_dir and Path(base_dir).exists():
                model_cache_dir = base_dir
    from .registry import get_registry

    if model_type and (model or model_cache_dir) and model_type not in get_registry().models:
        model_type = None  # a type inferred from a local dir at training time; infer it again from the dir
    resolved = resolve_model(model_type, model, hub=hub, revision=revision, model_cache_dir=model_cache_dir)
    base_model, tokenizer = load_model_tokenizer(resolved=resolved, torch_dtype=torch_dtype,
                                                 trust_remote_code=trust_remote_code)
    base_model.eval()
    if is_adapter:
        base_model = load_adapter(base_model, ckpt, force=force)
        base_model.eval()
    for extra in [resolve_adapter(a, force=force) for a in adapters or []]:
        base_model = load_adapter(base_model, extra, adapter_name=Path(extra).name, force=force)
    name = template or saved.get("template") or manifest.get("template") or resolved.spec.template
    if name == "auto":
        raise SwiftlikeError(f"cannot tell which chat template {resolved.path} uses; pass --template NAME")
    tpl = get_template(name, tokenizer, system=system if system is not None else saved.get("system"))
    return Loaded(base_model, tokenizer, tpl, ckpt, resolved.path, resolved.spec.name)


def generate(model, template, messages: list, *, max_new_tokens=512, temperature=0.0, top_p=1.0,
             repetition_penalty=1.0, stream=False, seed=None) -> Iterator[str] | str:
    """Greedy when temperature == 0. With stream=True, yields text pieces as they are generated."""
    import torch

    tokenizer = template.tokenizer
    prompt = template.render(messages, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids.to(model.device)
    stop_ids = template.stop_token_ids or [tokenizer.eos_token_id]
    kwargs = dict(max_new_tokens=max_new_tokens, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id,
                  repetition_penalty=repetition_penalty, use_cache=True)
    if temperature and temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if seed is not None:
        torch.manual_seed(seed)
    if not stream:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        return _clean(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True), template)
    return _stream(model, tokenizer, template, ids, kwargs)


def _stream(model, tokenizer, template, ids, kwargs):
    import threading

    import torch
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

    def run():
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer, **kwargs)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for piece in streamer:
        yield piece
    thread.join()


def _clean(text: str, template) -> str:
    for stop in template.stop_words:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text


def inference(model, template, query: str, history=None, system=None, **gen) -> tuple[str, list]:
    """ms-swift shape: (response, history) with history a list of [query, response] pairs."""
    history = [list(h) for h in (history or [])]
    messages = [{"role": "system", "content": system}] if system else []
    for q, r in history:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": r}]
    messages.append({"role": "user", "content": query})
    response = generate(model, template, messages, **gen)
    return response, history + [[query, response]]
