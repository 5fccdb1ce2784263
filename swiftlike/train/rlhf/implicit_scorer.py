"""Scoring with an implicit reward model (`--rm_type implicit`): the reward of an answer is beta x the sum over its
tokens of log pi(token) - log pi_base(token), pi being the LoRA model and pi_base the same model with the adapter
disabled — exactly the reward its DPO loss trained."""
from __future__ import annotations

import torch


class ImplicitReward(torch.nn.Module):
    def __init__(self, model, beta: float):
        super().__init__()
        self.model, self.beta = model, float(beta)

    def _token_logps(self, input_ids, attention_mask, position_ids):
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False).logits[:, :-1].float()
        # log-softmax at the taken token only: gather minus logsumexp, no [B, T, vocab] log-prob tensor
        return logits.gather(-1, input_ids[:, 1:, None]).squeeze(-1) - logits.logsumexp(-1)

    def token_rewards(self, input_ids, attention_mask):
        """[B, T]: beta x log-ratio of token t given the tokens before it (0 at t = 0 and at masked positions);
        rows may be padded on either side."""
        mask = attention_mask.long()
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        policy = self._token_logps(input_ids, mask, position_ids)
        with self.model.disable_adapter():
            base = self._token_logps(input_ids, mask, position_ids)
        out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        out[:, 1:] = self.beta * (policy - base)
        return out * mask

    def forward(self, input_ids, attention_mask, answer_start):
        """[B]: each row's reward, summed over its unmasked tokens from `answer_start` (a tensor [B] or an int)."""
        rewards = self.token_rewards(input_ids, attention_mask)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        start = torch.as_tensor(answer_start, device=input_ids.device).reshape(-1, 1)
        return (rewards * (positions >= start)).sum(1)

    def trl_reward(self, query_responses, pad_token_id: int, context_length: int):
        """What TRL's PPO reads from `get_reward` (logits, final rewards, sequence lengths), for the answers after
        `context_length` (the left-padded prompts' width)."""
        from trl.experimental.utils import first_true_indices

        mask = query_responses != pad_token_id
        ids = torch.masked_fill(query_responses, ~mask, 0)
        scores = self(ids, mask, context_length)
        lengths = first_true_indices(query_responses[:, context_length:] == pad_token_id) - 1 + context_length
        return scores[:, None, None], scores, lengths
