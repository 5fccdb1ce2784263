"""`swiftlike rlhf` arguments: every model, data, tuner and trainer option of sft, plus the stage's own (ms-swift's
names)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ...models.options import arg
from ..arguments import TrainArguments

RLHF_TYPES = ("dpo", "kto", "orpo", "simpo", "cpo", "rm", "ppo", "grpo")
# beta when none is given: TRL's defaults, and SimPO's paper value
# --loss_type values TRL's trainer for each stage knows (simpo: CPO's simpo loss, set by swiftlike)
LOSS_TYPES = {
    "dpo": ("sigmoid", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "apo_down",
            "exo_pair", "aot", "aot_unpaired", "discopop", "sigmoid_norm", "sft"),
    "cpo": ("sigmoid", "hinge", "ipo"), "simpo": ("simpo",), "kto": ("kto", "apo_zero_unpaired"),
    "grpo": ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"),
}
# options that only some stages read: set on another stage they would do nothing, which the check says
_GRPO = ("grpo",)
_PPO = ("ppo",)
USED_BY = {
    "beta": ("dpo", "kto", "orpo", "simpo", "cpo", "grpo", "ppo"), "rpo_alpha": ("dpo",),
    "label_smoothing": ("dpo", "cpo"), "ref_model": ("dpo", "kto"), "ref_adapters": ("dpo", "kto"),
    "precompute_ref_log_probs": ("dpo", "kto"), "desirable_weight": ("kto",), "undesirable_weight": ("kto",),
    "cpo_alpha": ("cpo", "simpo"), "simpo_gamma": ("simpo",), "reward_model": _PPO + _GRPO,
    "reward_template": _GRPO,
    "center_rewards_coefficient": ("rm",), "rm_type": ("rm",), "loss_weights": ("dpo",), "ld_alpha": ("dpo",),
    "discopop_tau": ("dpo",),
    "max_completion_length": ("grpo", "ppo"), "temperature": ("grpo", "ppo"),
    **{k: _GRPO for k in ("reward_funcs", "num_generations", "reward_format", "reward_length", "reward_weights",
                          "epsilon", "epsilon_high", "scale_rewards", "num_iterations", "steps_per_generation",
                          "top_k", "top_p", "repetition_penalty", "log_completions", "importance_sampling_level",
                          "mask_truncated_completions")},
    **{k: _PPO for k in ("num_ppo_epochs", "num_mini_batches", "cliprange", "cliprange_value", "vf_coef", "gamma",
                         "lam", "whiten_rewards", "missing_eos_penalty")},
}
# rm: only --rm_type implicit reads beta (the score-head reward model has none)
DEFAULT_BETA = {"rm": 0.1, "dpo": 0.1, "kto": 0.1, "orpo": 0.1, "cpo": 0.1, "simpo": 2.0, "grpo": 0.04, "ppo": 0.05}


@dataclass
class RlhfArguments(TrainArguments):
    rlhf_type: str = arg("dpo", f"The stage: {', '.join(RLHF_TYPES)}.")
    beta: Optional[float] = arg(None, "Strength of the preference (DPO, KTO, CPO, SimPO, ORPO's lambda) or of the KL "
                                "penalty (GRPO, PPO: ms-swift's --kl_coef); default per type: dpo/kto/orpo/cpo 0.1, "
                                "simpo 2.0, grpo 0.04, ppo 0.05, rm --rm_type implicit 0.1.", aliases=["kl_coef"])
    loss_type: list = arg([], "DPO's loss (sigmoid, ipo, hinge, robust, bco_pair, sppo_hard, nca_pair, apo_zero, "
                          "apo_down, exo_pair, aot, aot_unpaired, discopop, sigmoid_norm, sft; several add up); CPO's "
                          "(sigmoid, hinge, ipo); KTO's (kto, apo_zero_unpaired); GRPO's (grpo, dr_grpo, dapo, "
                          "bnpo, cispo, sapo, luspo, vespo; default TRL's dapo, ms-swift's is grpo).")
    rpo_alpha: Optional[float] = arg(None, "DPO: weight of an NLL (sft) term on the chosen answers (RPO) — keeps "
                                     "the model able to say them, not only to rank them.")
    label_smoothing: float = arg(0.0, "DPO/CPO: assumed share of flipped labels (robust, exo_pair).")
    ref_model: Optional[str] = arg(None, "DPO/KTO reference: a model dir, hub id or model type (default: for LoRA "
                                   "the base with the adapter disabled — no second copy of the weights; for "
                                   "full/freeze a frozen copy of the starting model).")
    ref_adapters: list = arg([], "DPO/KTO: ms-swift's reference adapter; the adapter --adapters continues (its "
                             "frozen copy is the reference already), the sft -> dpo recipe's `--adapters X "
                             "--ref_adapters X`.")
    precompute_ref_log_probs: bool = arg(False, "DPO/KTO: compute the reference log-probs once before training.")
    desirable_weight: float = arg(1.0, "KTO: weight of desirable (label true) answers.")
    undesirable_weight: float = arg(1.0, "KTO: weight of undesirable (label false) answers.")
    cpo_alpha: Optional[float] = arg(None, "CPO/SimPO: weight of the NLL term on chosen answers (default: CPO 1.0, "
                                     "SimPO 0 = pure SimPO; ms-swift's SimPO default is 1.0, CPO-SimPO).")
    simpo_gamma: float = arg(1.0, "SimPO: target reward margin.")
    reward_model: list = arg([], "PPO: the reward model; GRPO: reward models scored beside --reward_funcs (one "
                             "reward each, after them in --reward_weights). Each a checkpoint of --rlhf_type rm (or "
                             "its run dir), or a Hugging Face sequence-classification model with one output (a dir "
                             "or hub id, e.g. a Skywork-Reward); for PPO it shares the policy's tokenizer.")
    reward_template: list = arg([], "GRPO: the chat template each --reward_model reads conversations in (one for "
                                "all, or one each; default: the checkpoint's, or the one its model type has).")
    center_rewards_coefficient: Optional[float] = arg(None, "RM: weight of a penalty on the squared sum of a pair's "
                                                      "rewards, which keeps the rewards centred on 0 (e.g. 0.01).")
    rm_type: str = arg("score", "RM: score — a one-output score head read at the answer's last token (the peers' "
                       "reward model) — or implicit — the reward is beta x the answer's log-probability ratio "
                       "between the trained LoRA model and its base, trained with the same pairwise loss (DPO's "
                       "implicit reward): it reads the model's own next-token predictions, which a score head on a "
                       "small model does not learn from few pairs (BENCHMARKS.md). LoRA/DoRA/QLoRA only.")
    reward_funcs: list = arg([], "GRPO: reward functions by name (swiftlike rewards list): accuracy, format, "
                             "length, or a plugin's.")
    num_generations: int = arg(4, "GRPO: completions sampled per prompt.")
    max_completion_length: int = arg(64, "GRPO/PPO: longest sampled completion in tokens.",
                                     aliases=["response_length"])
    temperature: float = arg(1.0, "GRPO/PPO: sampling temperature.")
    loss_weights: list = arg([], "DPO: a weight per --loss_type (ms-swift's MPO: sigmoid bco_pair sft with 0.8 "
                             "0.2 1.0); default 1 each.")
    reward_weights: list = arg([], "GRPO: a weight per --reward_funcs (default 1 each).")
    epsilon: float = arg(0.2, "GRPO: the clipping range of the policy ratio.")
    epsilon_high: Optional[float] = arg(None, "GRPO: the upper clipping range when it differs (DAPO's clip-higher).")
    scale_rewards: str = arg("group", "GRPO: divide advantages by the reward std of the group, the batch, or none.")
    num_iterations: int = arg(1, "GRPO: optimisation passes over each generation batch (μ).")
    steps_per_generation: Optional[int] = arg(None, "GRPO: optimizer steps per generation batch (default: "
                                              "--gradient_accumulation_steps).")
    top_k: int = arg(0, "GRPO: sample from the k likeliest tokens (0: all).")
    top_p: float = arg(1.0, "GRPO: nucleus sampling's probability mass.")
    repetition_penalty: float = arg(1.0, "GRPO: penalty on repeated tokens while sampling (1: none).")
    log_completions: bool = arg(False, "GRPO: log sampled prompts, completions and rewards.")
    importance_sampling_level: str = arg("token", "GRPO: the policy ratio per token, or per sequence (GSPO).")
    mask_truncated_completions: bool = arg(False, "GRPO: no loss on completions cut at --max_completion_length "
                                           "(ms-swift's --overlong_filter).", aliases=["overlong_filter"])
    ld_alpha: Optional[float] = arg(None, "DPO: LD-DPO's weight of the answer tokens past the shorter answer's "
                                    "length (length desensitisation; 1 = plain DPO).")
    discopop_tau: float = arg(0.05, "DPO: the discopop loss's temperature.")
    num_ppo_epochs: int = arg(1, "PPO: passes over each rollout batch (TRL's and ms-swift's default is 4; 1 keeps CPU "
                              "runs short).")
    num_mini_batches: int = arg(1, "PPO: mini-batches per rollout batch.")
    cliprange: float = arg(0.2, "PPO: the clipping range of the policy ratio.")
    cliprange_value: float = arg(0.2, "PPO: the clipping range of the value function.")
    vf_coef: float = arg(0.1, "PPO: weight of the value loss.")
    gamma: float = arg(1.0, "PPO: discount factor.")
    lam: float = arg(0.95, "PPO: GAE's lambda.")
    whiten_rewards: bool = arg(False, "PPO: normalise rewards to zero mean and unit variance.")
    missing_eos_penalty: Optional[float] = arg(None, "PPO: subtracted from the reward of an answer that does not end "
                                               "(no end-of-turn token).")
    reward_format: Optional[str] = arg(None, "The `format` reward's regex over the whole answer (default: ms-swift's "
                                       "<think>...</think><answer>...</answer>).")
    reward_length: int = arg(20, "The `length` reward's target in words.")

    def check_stage_options(self) -> None:
        """The stage's own options, before anything loads (TRL would refuse most of them only after the model
        has loaded, in its own words, or fail mid-training)."""
        import difflib
        import os
        import re

        from ...registry import SwiftlikeError

        kind = self.rlhf_type
        allowed = LOSS_TYPES.get(kind, ())
        if self.loss_type and not allowed:
            raise SwiftlikeError(f"--loss_type: --rlhf_type {kind} has one loss and takes no --loss_type")
        for loss in self.loss_type:
            if loss not in allowed:
                hint = difflib.get_close_matches(loss, allowed, n=1)
                raise SwiftlikeError(f"--loss_type {loss!r}: --rlhf_type {kind} takes {', '.join(allowed)}"
                                     + (f" (did you mean {hint[0]}?)" if hint else ""))
        if len(self.loss_type) > 1 and kind != "dpo":
            raise SwiftlikeError(f"--loss_type: only DPO adds several losses up; --rlhf_type {kind} takes one")
        if self.truncation_strategy not in ("delete", "left"):
            raise SwiftlikeError(f"--truncation_strategy {self.truncation_strategy!r}: rlhf takes delete (drop a "
                                 f"row over --max_length, counted) or left (cut the start of its prompt)")
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if kind == "grpo":
            batch = self.per_device_train_batch_size * self.gradient_accumulation_steps * world
            if self.num_generations < 2 or batch % self.num_generations:
                raise SwiftlikeError(f"--num_generations {self.num_generations}: GRPO compares 2 or more answers per "
                                     f"prompt, and a generation batch (per-device batch x gradient accumulation x "
                                     f"processes = {batch}) holds whole groups: use a divisor of {batch} from 2 up")
        if kind in ("grpo", "ppo") and self.temperature <= 0:
            raise SwiftlikeError(f"--temperature {self.temperature:g}: GRPO and PPO sample their answers; use a "
                                 f"temperature above 0 (e.g. 0.7 or 1.0)")
        for flag, values, of in (("loss_weights", self.loss_weights, "loss_type"),
                                 ("reward_weights", self.reward_weights, "reward_funcs")):
            try:
                [float(v) for v in values]
            except (TypeError, ValueError):
                raise SwiftlikeError(f"--{flag} {' '.join(map(str, values))}: numbers, one per --{of}") from None
            targets = len(getattr(self, of) or ([] if of == "reward_funcs" else ["sigmoid"]))
            if of == "reward_funcs" and kind == "grpo" and self.reward_model:  # reward models score after them
                targets, of = targets + len(self.reward_model), "reward_funcs and --reward_model"
            if values and len(values) != targets:
                raise SwiftlikeError(f"--{flag}: {len(values)} weight(s) for {targets} --{of}; give one per --{of}")
        if self.reward_template and len(self.reward_template) not in (1, len(self.reward_model)):
            raise SwiftlikeError(f"--reward_template: {len(self.reward_template)} templates for "
                                 f"{len(self.reward_model)} --reward_model; give one for all, or one each")
        if self.importance_sampling_level not in ("token", "sequence"):
            raise SwiftlikeError(f"--importance_sampling_level {self.importance_sampling_level!r}: token or sequence")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise SwiftlikeError(f"--scale_rewards {self.scale_rewards!r}: group, batch or none")
        if self.reward_format is not None:
            try:
                re.compile(self.reward_format)
            except re.error as err:
                raise SwiftlikeError(f"--reward_format {self.reward_format!r}: not a regular expression ({err})") \
                    from None
        if self.ref_adapters and [str(p).rstrip("/") for p in self.ref_adapters] != [
                str(p).rstrip("/") for p in self.adapters]:
            raise SwiftlikeError(f"--ref_adapters {' '.join(map(str, self.ref_adapters))}: the reference is the "
                                 f"adapter --adapters continues (a frozen copy) or the base; pass the same adapter to "
                                 f"both, or a merged model as --ref_model (swiftlike merge-lora)")
        if self.rm_type not in ("score", "implicit"):
            raise SwiftlikeError(f"--rm_type {self.rm_type!r}: score (a score head) or implicit (beta x the "
                                 f"log-probability ratio to the base)")
        implicit = kind == "rm" and self.rm_type == "implicit"
        if implicit:
            self._check_implicit_rm()
        unused = [name for name, stages in USED_BY.items() if kind not in stages and getattr(self, name) not in (
            _default(name), None, [], False) and not (implicit and name == "beta")]
        if unused:  # ms-swift scripts carry options of other stages; saying so beats a silent no-op
            import logging

            logging.getLogger("swiftlike").warning(
                "note: %s %s not apply to --rlhf_type %s; ignored", ", ".join(f"--{n}" for n in unused),
                "does" if len(unused) == 1 else "do", kind)
        ref = self.ref_model
        if ref and ref.startswith(("/", "./", "../", "~")) and not os.path.isdir(os.path.expanduser(ref)):
            raise SwiftlikeError(f"--ref_model {ref}: no such directory")

    def _check_implicit_rm(self) -> None:
        from ...registry import SwiftlikeError

        if self.train_type not in ("lora", "dora", "qlora"):
            raise SwiftlikeError(f"--rm_type implicit: its reward is measured against the base with the adapter "
                                 f"disabled, so it trains an adapter; use --train_type lora (not {self.train_type})")
        for name in ("loss_type", "rpo_alpha", "ref_model", "ref_adapters", "adapters", "center_rewards_coefficient"):
            if getattr(self, name) not in (_default(name), None, [], False):
                hint = (" — merge that adapter first (swiftlike merge-lora) and train on the merged model with "
                        "--model" if name in ("adapters", "ref_adapters") else "")
                raise SwiftlikeError(f"--{name}: --rm_type implicit trains the pairwise loss on beta x log "
                                     f"pi(answer)/pi_base(answer), measured against the base{hint}")

    def __post_init__(self):
        super().__post_init__()
        if self.rlhf_type in ("simpo",) and not self.loss_type:
            self.loss_type = ["simpo"]


def _default(name: str):
    from dataclasses import MISSING, fields

    f = next(f for f in fields(RlhfArguments) if f.name == name)
    return f.default if f.default is not MISSING else f.default_factory()

