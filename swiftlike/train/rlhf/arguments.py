"""`swiftlike rlhf` arguments: every model, data, tuner and trainer option of sft, plus the stage's own (ms-swift's
names)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ...models.options import arg
from ..arguments import TrainArguments

RLHF_TYPES = ("dpo", "kto", "orpo", "simpo", "cpo", "rm", "ppo", "grpo")
# beta when none is given: TRL's defaults, and SimPO's paper value
DEFAULT_BETA = {"dpo": 0.1, "kto": 0.1, "orpo": 0.1, "cpo": 0.1, "simpo": 2.0, "grpo": 0.04, "ppo": 0.05}


@dataclass
class RlhfArguments(TrainArguments):
    rlhf_type: str = arg("dpo", f"The stage: {', '.join(RLHF_TYPES)}.")
    beta: Optional[float] = arg(None, "Strength of the preference (DPO, KTO, CPO, SimPO, ORPO's lambda) or of the KL "
                                "penalty (GRPO, PPO); default per type: dpo/kto/orpo/cpo 0.1, simpo 2.0, grpo 0.04, "
                                "ppo 0.05.")
    loss_type: list = arg([], "DPO's loss (sigmoid, ipo, hinge, robust, bco_pair, sppo_hard, nca_pair, apo_zero, "
                          "apo_down, exo_pair, aot, aot_unpaired, discopop, sigmoid_norm; several add up); CPO's "
                          "(sigmoid, hinge, ipo); KTO's (kto, apo_zero_unpaired).")
    rpo_alpha: Optional[float] = arg(None, "DPO: weight of an NLL (sft) term on the chosen answers (RPO) — keeps "
                                     "the model able to say them, not only to rank them.")
    label_smoothing: float = arg(0.0, "DPO/CPO: assumed share of flipped labels (robust, exo_pair).")
    ref_model: Optional[str] = arg(None, "DPO/KTO reference: a model dir, hub id or model type (default: for LoRA "
                                   "the base with the adapter disabled — no second copy of the weights; for "
                                   "full/freeze a frozen copy of the starting model).")
    precompute_ref_log_probs: bool = arg(False, "DPO/KTO: compute the reference log-probs once before training.")
    desirable_weight: float = arg(1.0, "KTO: weight of desirable (label true) answers.")
    undesirable_weight: float = arg(1.0, "KTO: weight of undesirable (label false) answers.")
    cpo_alpha: float = arg(1.0, "CPO/SimPO: weight of the NLL term on chosen answers (SimPO: 0 = pure SimPO).")
    simpo_gamma: float = arg(1.0, "SimPO: target reward margin.")
    reward_model: Optional[str] = arg(None, "PPO: a reward model trained with --rlhf_type rm (its checkpoint).")
    center_rewards_coefficient: Optional[float] = arg(None, "RM: weight of a penalty on the squared sum of a pair's "
                                                      "rewards, which keeps the rewards centred on 0 (e.g. 0.01).")
    reward_funcs: list = arg([], "GRPO: reward functions by name (swiftlike rewards list): accuracy, format, "
                             "length, or a plugin's.")
    num_generations: int = arg(4, "GRPO: completions sampled per prompt.")
    max_completion_length: int = arg(64, "GRPO/PPO: longest sampled completion in tokens.")
    temperature: float = arg(1.0, "GRPO/PPO: sampling temperature.")
    reward_format: Optional[str] = arg(None, "The `format` reward's regex (default: one non-empty line).")
    reward_length: int = arg(20, "The `length` reward's target in words.")

    def __post_init__(self):
        super().__post_init__()
        if self.rlhf_type in ("simpo",) and not self.loss_type:
            self.loss_type = ["simpo"]
