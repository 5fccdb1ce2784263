"""Inference: load a checkpoint (adapter or full model) with the template it trained with, and generate.

Modules: arguments (infer's options and the sampling options eval shares), and the batched multi-LoRA engine that
`swiftlike serve` and `swiftlike eval` run: engine (continuous batching), kvcache, lora (per-row adapters), sampling,
memory."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from ..models.options import ModelArguments
from ..registry import SwiftlikeError, get_registry
from .arguments import InferArguments, SamplingArguments

__all__ = ["InferArguments", "SamplingArguments", "Loaded", "load_checkpoint", "generate", "answer_prompts",
           "default_result_path", "inference"]


@dataclass
class Loaded:
    model: object
    tokenizer: object
    template: object
    ckpt_dir: Optional[Path]
    base_dir: Path
    model_type: str


def load_checkpoint(ckpt_dir=None, *, force: bool = False, adapters=(), options: ModelArguments | None = None,
                    **model_options) -> Loaded:
    """ckpt_dir: a LoRA checkpoint (its base found from its args/manifest), a merged/full model dir, an installed
    adapter's name or a hub reference, or None (the base model). `options` or keyword arguments: the model options
    (ModelArguments: model_type, model, model_cache_dir, template, system, torch_dtype, ...)."""
    from ..adapters import load as load_adapter, resolve as resolve_adapter
    from ..checkpoint import checkpoint_template, is_adapter_dir
    from ..models.load import load_model_tokenizer
    from ..templates import get_template

    opts = options or ModelArguments(**model_options)
    ckpt, resolved, model_type = resolve_checkpoint(ckpt_dir, force=force, opts=opts)
    model, tokenizer = load_model_tokenizer(resolved=resolved, torch_dtype=opts.torch_dtype,
                                            trust_remote_code=opts.trust_remote_code,
                                            attn_implementation="sdpa" if opts.attn_impl == "auto" else opts.attn_impl)
    model.eval()
    if ckpt is not None and is_adapter_dir(ckpt):
        model = load_adapter(model, ckpt, force=force, base_dir=resolved.path, base_model_type=model_type)
    for extra in adapters or ():
        path = Path(resolve_adapter(extra, force=force))
        model = load_adapter(model, path, adapter_name=path.name, force=force, base_dir=resolved.path,
                             base_model_type=model_type)
    model.eval()
    spec, system = checkpoint_template(ckpt, template=opts.template, system=opts.system,
                                       default=resolved.spec.template)
    return Loaded(model, tokenizer, get_template(spec, tokenizer, system=system), ckpt, resolved.path, model_type)


def resolve_checkpoint(ckpt_dir, *, force: bool, opts: ModelArguments):
    """(checkpoint dir or None, the base's ResolvedModel, model type): what load_checkpoint loads."""
    from ..adapters import resolve as resolve_adapter
    from ..checkpoint import read_manifest, refuse_reward_model, saved_args

    opts.check_model_options()
    ckpt = None
    if ckpt_dir:
        base_hint = opts.model_cache_dir or opts.model or opts.model_type
        ckpt = Path(resolve_adapter(ckpt_dir, base=base_hint, force=force))
        if not ckpt.is_dir():
            raise SwiftlikeError(f"--ckpt_dir {ckpt}: no such directory")
        refuse_reward_model(ckpt)
    base = base_options(opts, ckpt, saved_args(ckpt) if ckpt else {}, read_manifest(ckpt) if ckpt else {})
    resolved = base.resolve_model()
    return ckpt, resolved, base.model_type or resolved.spec.name


def base_options(opts: ModelArguments, ckpt: Path | None, saved: dict, manifest: dict) -> ModelArguments:
    """The model options of the base: what the user gave, completed from what the checkpoint says it trained on."""
    from dataclasses import replace

    if ckpt is None:
        return opts
    from ..checkpoint import is_adapter_dir

    model_type = opts.model_type or saved.get("model_type") or manifest.get("base_model_type")
    if not is_adapter_dir(ckpt):  # a merged or fully fine-tuned model: the checkpoint is the model
        return replace(opts, model=str(ckpt), model_cache_dir=None, model_type=_registered(model_type))
    model, cache_dir = opts.model, opts.model_cache_dir
    if not (model or cache_dir):
        trained_on = saved.get("model_dir")
        if trained_on and (Path(trained_on) / "config.json").exists():
            cache_dir = trained_on
        elif not _registered(model_type):
            raise SwiftlikeError(f"{ckpt}: its base model ({trained_on or model_type}) is not here; pass --model "
                                 f"DIR_OR_HUB_ID or --model_type NAME")
    # a type inferred from a local dir at training time is inferred again from the dir
    return replace(opts, model=model, model_cache_dir=cache_dir,
                   model_type=_registered(model_type) if (model or cache_dir) else model_type)


def _registered(model_type):
    return model_type if model_type and model_type in get_registry().models else None


def generate(model, template, messages: list, *, max_new_tokens=512, temperature=0.0, top_p=1.0,
             repetition_penalty=1.0, stream=False, seed=None) -> Iterator[str] | str:
    """Greedy when temperature == 0. With stream=True, yields text pieces as they are generated."""
    if getattr(model, "is_vllm", False):  # --infer_backend vllm (vllm_backend.VllmModel)
        return model.generate(template, messages, max_new_tokens=max_new_tokens, temperature=temperature,
                              top_p=top_p, repetition_penalty=repetition_penalty, stream=stream, seed=seed)
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
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    closed = threading.Event()

    class _Closed(StoppingCriteria):
        # the reader went away (a chat cleared, a client gone): stop generating instead of finishing for nobody
        def __call__(self, input_ids, scores, **_):
            return torch.full((input_ids.shape[0],), closed.is_set(), dtype=torch.bool, device=input_ids.device)

    failed = []

    def run():
        try:
            with torch.no_grad():
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                               stopping_criteria=StoppingCriteriaList([_Closed()]), **kwargs)
        except BaseException as err:  # raised in the reader below: a dead thread would leave it waiting forever
            failed.append(err)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ended = False
    try:
        for piece in streamer:
            yield piece
        ended = True
    finally:
        if not ended:  # closed early: stop generate and read to its end-of-stream mark so nothing is left behind
            closed.set()
            for _ in streamer:
                pass
        thread.join()
    if failed:
        raise failed[0]


def _clean(text: str, template) -> str:
    for stop in template.stop_words:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text


def default_result_path() -> Path:
    """infer_result/<YYYYMMDD-HHMMSS>.jsonl in the working directory: never inside a checkpoint, whose manifest
    lists every file it holds."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("infer_result") / f"{stamp}.jsonl"
    n = 1
    while path.exists():
        path = Path("infer_result") / f"{stamp}-{n}.jsonl"
        n += 1
    return path


def answer_prompts(loaded: Loaded, prompts: list, out: Path, *, progress=True, **gen) -> Path:
    """Answer each prompt row ({"messages", "response"}) into `out` (jsonl: messages, response, label), written to a
    temp file and renamed, so an interrupted run leaves no half file under the final name."""
    import os

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(prompts), desc="infer", unit="row", file=sys.stderr)
    # vLLM (--infer_backend vllm) answers every prompt in one batch
    many = loaded.model.generate_many if getattr(loaded.model, "is_vllm", False) else None
    try:
        answers = iter(many(loaded.template, [row["messages"] for row in prompts], **gen)) if many else None
        with open(tmp, "w", encoding="utf-8") as f:
            for row in prompts:
                response = next(answers) if answers else generate(loaded.model, loaded.template, row["messages"],
                                                                  **gen)
                f.write(json.dumps({"messages": row["messages"], "response": response, "label": row.get("response")},
                                   ensure_ascii=False) + "\n")
                if bar is not None:
                    bar.update(1)
        os.replace(tmp, out)
    finally:
        if bar is not None:
            bar.close()
        if tmp.exists():
            tmp.unlink()
    return out


def inference(model, template, query: str, history=None, system=None, **gen) -> tuple[str, list]:
    """ms-swift shape: (response, history) with history a list of [query, response] pairs."""
    history = [list(h) for h in (history or [])]
    messages = [{"role": "system", "content": system}] if system else []
    for q, r in history:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": r}]
    messages.append({"role": "user", "content": query})
    response = generate(model, template, messages, **gen)
    return response, history + [[query, response]]
