"""`--rlhf_type rm --rm_type implicit`: a reward model whose reward is beta x log pi(answer)/pi_base(answer) — the
LoRA model against its own base with the adapter disabled — trained with the pairwise (Bradley-Terry) loss on that
reward, which is DPO's loss (Rafailov et al. 2023, "your language model is secretly a reward model"). It is DPO's
recipe with a reward model's checkpoint: `--reward_model` (PPO) and `swiftlike eval` score with it
(implicit_scorer.py). Why it exists: a score head on a small model's last hidden state does not learn to check what
the model's own next-token predictions know (BENCHMARKS.md, reward model)."""
from __future__ import annotations

from .preference import DpoRecipe


class ImplicitRewardRecipe(DpoRecipe):
    def stage_options(self) -> dict:
        return {**super().stage_options(), "loss_type": ["sigmoid"], "loss_weights": [1.0]}

    def manifest_info(self) -> dict:
        return {**super().manifest_info(), "rm_type": "implicit",
                "head": "none (reward: beta x log-probability ratio to the base)"}

    def _check_resume_stage(self) -> None:
        from .reward_model import check_resume_rm_type

        super()._check_resume_stage()
        check_resume_rm_type(self.resume, "implicit")

    def next_steps(self, last) -> list[str]:
        from .reward_model import RewardModelRecipe

        return RewardModelRecipe.next_steps(self, last)
