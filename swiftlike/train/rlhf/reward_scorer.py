"""A reward model as a scorer: a conversation and an answer in, one score out — encoded as `--rlhf_type rm` trained on
them (its checkpoint's template: prompt, answer and the end of the turn) and read as training read them (the score
head at the last token; for `--rm_type implicit`, beta x the answer's log-probability ratio to the base).
`swiftlike eval` ranks preference pairs with it; GRPO's `--reward_model` scores completions with it."""
from __future__ import annotations

from pathlib import Path


class RewardScorer:
    def __init__(self, path, *, base_path, default_template, template=None, system=None, dtype=None,
                 trust_remote_code=False):
        """`default_template`: the template when neither `template` nor the checkpoint names one (the base's)."""
        from ...checkpoint import checkpoint_template, is_reward_model, marked_template
        from ...templates import get_template
        from .reward_model import is_implicit, load_reward_model

        path = Path(path)
        self.model, self.tokenizer = load_reward_model(path, base=base_path, dtype=dtype,
                                                       trust_remote_code=trust_remote_code)
        # a Hugging Face reward model has no swiftlike checkpoint to read a template from
        spec, system = checkpoint_template(path if is_reward_model(path) else None, template=template, system=system,
                                           default=default_template)
        # the checkpoint's template text lost its generation markers at export: the answer span needs the registered one
        spec = marked_template(spec, get_template(spec, self.tokenizer).source)
        self.template = get_template(spec, self.tokenizer, system=system, loss_mode="last_round")
        self.implicit = is_implicit(path)
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def encode(self, messages: list, answer: str, tools=None) -> tuple[list[int], int]:
        """(token ids of the conversation ending with `answer`, where the answer starts)."""
        from .encode import encode_answer

        prompt, ids = encode_answer(self.template, messages, answer, tools)
        return prompt + ids, len(prompt)

    def score_ids(self, sequences: list, starts: list, batch_size: int, on_batch=None) -> list[float]:
        """One score per token sequence, in right-padded batches of `batch_size`; `on_batch(n)` after each."""
        import torch

        device = next(self.model.parameters()).device
        out = []
        with torch.inference_mode():
            for first in range(0, len(sequences), batch_size):
                batch = sequences[first:first + batch_size]
                width = max(map(len, batch))
                ids = torch.tensor([s + [self.pad] * (width - len(s)) for s in batch], device=device)
                mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch], device=device)
                if self.implicit:
                    scores = self.model(ids, mask, torch.tensor(starts[first:first + batch_size], device=device))
                else:
                    scores = self.model(input_ids=ids, attention_mask=mask).logits[:, 0]
                out += scores.float().tolist()
                if on_batch is not None:
                    on_batch(len(batch))
        return out

    def score(self, conversations: list, answers: list, batch_size: int = 8) -> list[float]:
        """The score of each answer after its conversation (the prompt's messages); NaN for an answer that renders
        to no tokens in this template (an empty completion, say), which TRL's GRPO counts as no reward."""
        encoded = []
        for messages, answer in zip(conversations, answers):
            try:
                encoded.append(self.encode(messages, answer))
            except ValueError:
                encoded.append(None)
        kept = [e for e in encoded if e is not None]
        scores = iter(self.score_ids([ids for ids, _ in kept], [start for _, start in kept], batch_size) if kept
                      else [])
        return [float("nan") if e is None else next(scores) for e in encoded]
