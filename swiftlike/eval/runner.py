"""Run a plan on the batched multi-LoRA engine: one base model in memory, its Linear layers wrapped so every row of a
forward pass adds its own adapter's update. Every (model, row) pair is one engine request, so the adapters and the
base decode together in mixed batches; the teacher-forced loss on the references runs the same way."""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from ..registry import SwiftlikeError
from .plan import Plan


@dataclass
class Evaluated:
    """What one model (the base or an adapter) produced: predictions per row, its loss and timings."""
    name: str
    template: object
    adapter: object = None  # a ResidentAdapter, None for the base
    predictions: list = field(default_factory=list)
    loss_sum: float = 0.0
    loss_tokens: int = 0
    generated_tokens: int = 0

    @property
    def loss(self):
        return self.loss_sum / self.loss_tokens if self.loss_tokens else None

    @property
    def perplexity(self):
        loss = self.loss
        return math.exp(min(loss, 700.0)) if loss is not None else None


class Session:
    """The loaded base, the wrapped layers and the adapters of a plan."""

    def __init__(self, plan: Plan):
        from ..checkpoint import base_fingerprint, check_base, checkpoint_template
        from ..infer.lora import LoraContext, ResidentAdapter, read_lora, wrap_linears
        from ..models.load import load_model_tokenizer
        from ..templates import get_template

        args = plan.args
        if args.num_threads:
            import torch

            torch.set_num_threads(args.num_threads)
        resolved = plan.base.resolve_model()
        if plan.adapters and not args.force:  # the weights themselves, now that the base dir is known
            fingerprint = None
            for src in plan.adapters:
                if src.manifest.get("base_fingerprint"):
                    fingerprint = fingerprint or base_fingerprint(resolved.path)
                    check_base(src.manifest, base_model_type=plan.base.model_type or resolved.spec.name,
                               fingerprint=fingerprint, where=f"{src.given}: adapter")
        # the templates before the weights: an unknown one fails in one line. The base answers in its own template,
        # else (a local base dir of no known type) in the first adapter's, so both see the same prompts.
        known = resolved.spec.template not in (None, "auto")
        specs = [checkpoint_template(src.path, template=args.template, system=args.system,
                                     default=resolved.spec.template if known else None) for src in plan.adapters]
        if not known and not args.template and specs:
            spec, system = specs[0][0], args.system
        else:  # a full model given as --ckpt_dir: the template it trained with
            spec, system = checkpoint_template(plan.model_path, template=args.template, system=args.system,
                                               default=resolved.spec.template)
        model, self.tokenizer = load_model_tokenizer(resolved=resolved, torch_dtype=args.torch_dtype,
                                                     trust_remote_code=args.trust_remote_code)
        model.eval()
        self.model = model
        self.resolved = resolved
        self.ctx = LoraContext()
        self.wrapped = wrap_linears(model, self.ctx)
        self.models: list[Evaluated] = []
        if plan.with_base or not plan.adapters:
            self.models.append(Evaluated(plan.model_name or "base", get_template(spec, self.tokenizer,
                                                                                  system=system)))
        for i, src in enumerate(plan.adapters):
            modules = read_lora(src.path, self.wrapped)
            a_spec, a_system = specs[i]
            template = get_template(a_spec, self.tokenizer, system=a_system)
            rank = max(m.A.shape[0] for m in modules.values())
            resident = ResidentAdapter(src.name, 1, src.path, modules, template, rank, 0)
            self.models.append(Evaluated(src.name, template, resident))
        self.ctx.set_resident([m.adapter for m in self.models if m.adapter is not None])


def generate_all(session: Session, rows: list, args, progress=None) -> float:
    """Every model answers every row, all through one engine; returns the seconds it took."""
    from ..infer import _clean
    from ..infer.engine import Engine, Request

    tok = session.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    engine = Engine(session.model, session.ctx, max_batch_size=args.max_batch_size, max_queue=1 << 30,
                    pad_token_id=pad)
    done = threading.Condition()
    pending = [0]
    requests = []
    for m in session.models:
        m.predictions = [None] * len(rows)
        stop = frozenset(m.template.stop_token_ids or [tok.eos_token_id])
        for i, row in enumerate(rows):
            prompt = m.template.render(row["messages"], add_generation_prompt=True)
            ids = tok(prompt, add_special_tokens=False).input_ids
            finished = {}

            def sink(token, finish, finished=finished):
                if finish is not None:
                    finished["reason"] = finish
                    with done:
                        pending[0] -= 1
                        done.notify_all()
                    if progress is not None:
                        progress()

            req = Request(ids, args.max_new_tokens, sink, adapter=m.adapter, temperature=args.temperature,
                          top_p=args.top_p, seed=args.seed + i, stop_ids=stop,
                          repetition_penalty=args.repetition_penalty)
            requests.append((m, i, req, finished))
    t0 = time.perf_counter()
    engine.start()
    try:
        for _, _, req, _ in requests:
            with done:
                pending[0] += 1
            engine.submit(req)
        with done:
            while pending[0]:
                done.wait(1.0)
                if not engine.alive:
                    raise SwiftlikeError("the generation engine stopped unexpectedly")
    finally:
        engine.stop()
    seconds = time.perf_counter() - t0
    for m, i, req, finished in requests:
        reason = finished.get("reason", "")
        if reason.startswith("error"):
            raise SwiftlikeError(f"{m.name}: row {rows[i].get('location', i)}: generation failed: {reason}")
        m.predictions[i] = _clean(tok.decode(req.output, skip_special_tokens=True), m.template)
        m.generated_tokens += len(req.output)
    return seconds


def reference_loss(session: Session, rows: list, batch_size: int = 8) -> None:
    """Teacher-forced cross-entropy of each model on the reference answers: the tokens swiftlike's template marks for
    training in the final reply (the same label mask as sft, last round only), summed over rows and averaged per
    token; mixed-adapter batches, like generation."""
    import torch
    import torch.nn.functional as F

    from ..checkpoint import marked_template
    from ..infer.lora import LoraBatch
    from ..templates import get_template

    items = []
    for m in session.models:
        scorer = get_template(marked_template(m.template.spec, m.template.source), session.tokenizer,
                              system=m.template.system, loss_mode="last_round")
        for row in rows:
            ids, labels = _labelled(scorer, row)
            items.append((m, ids, labels))
    items.sort(key=lambda it: len(it[1]))  # similar lengths together: less padding
    pad = session.tokenizer.pad_token_id if session.tokenizer.pad_token_id is not None else 0
    device = next(session.model.parameters()).device
    decoder = getattr(session.model, session.model.base_model_prefix)
    head = session.model.get_output_embeddings()
    softcap = getattr(session.model.config, "final_logit_softcapping", None)
    with torch.inference_mode():
        for at in range(0, len(items), batch_size):
            chunk = items[at:at + batch_size]
            width = max(len(ids) for _, ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for k, (_, row_ids, row_labels) in enumerate(chunk):
                ids[k, :len(row_ids)] = torch.tensor(row_ids)
                labels[k, :len(row_labels)] = torch.tensor(row_labels)
                mask[k, :len(row_ids)] = 1
            target = labels[:, 1:].to(device)
            keep = target != -100
            with session.ctx.use(LoraBatch.of([m.adapter for m, _, _ in chunk])):
                # the vocabulary projection only where a reference token is predicted (a fifth of the compute
                # of a small model goes to it at every position otherwise)
                hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
                logits = head(hidden[:, :-1][keep]).float()
                if softcap:  # Gemma 2's final logit soft-capping, which the model's own forward applies
                    logits = torch.tanh(logits / softcap) * softcap
            ce = F.cross_entropy(logits, target[keep], reduction="none")
            rows = keep.nonzero()[:, 0]
            sums = torch.zeros(len(chunk), dtype=torch.float64).index_add_(0, rows.cpu(), ce.double().cpu())
            counts = keep.sum(-1)
            for (m, _, _), loss, n in zip(chunk, sums.tolist(), counts.tolist()):
                m.loss_sum += loss
                m.loss_tokens += n


def _labelled(scorer, row) -> tuple[list, list]:
    """(input_ids, labels) of the row with its reference as the final reply, the reply's tokens labelled. A template
    without generation markers: the tokens after the rendered prompt."""
    messages = list(row["messages"]) + [{"role": "assistant", "content": row["response"]}]
    enc = scorer.encode(messages)
    if any(label != -100 for label in enc["labels"]):
        return enc["input_ids"], enc["labels"]
    tok = scorer.tokenizer
    prompt = tok(scorer.render(row["messages"], add_generation_prompt=True), add_special_tokens=False).input_ids
    ids = tok(scorer.render(messages), add_special_tokens=False).input_ids
    if ids[:len(prompt)] != prompt or len(ids) == len(prompt):
        raise SwiftlikeError(f"{row.get('location', 'a row')}: template {scorer.name!r} marks no answer tokens and "
                             f"the rendered answer does not extend the prompt; cannot score the reference loss")
    return ids, [-100] * len(prompt) + ids[len(prompt):]
