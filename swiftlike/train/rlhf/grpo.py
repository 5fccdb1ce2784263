"""GRPO: sample --num_generations completions per prompt, score them with reward functions from the registry
(`swiftlike rewards list`; plugins add more with `register_rewards`), and move the policy towards the better ones
(TRL's GRPOTrainer). Prompts are rendered by swiftlike's template, exactly as infer renders them."""
from __future__ import annotations

import functools
import inspect

from ...registry import SwiftlikeError, get_registry, resolve_callable
from ..atomic_checkpoints import AtomicCheckpoints
from .preference import PreferenceRecipe


def reward_functions(args) -> list:
    """The --reward_funcs callables, named after their registry entries (TRL logs rewards/<name>), with the options
    they take (--reward_format, --reward_length) bound."""
    if not args.reward_funcs:
        raise SwiftlikeError("--rlhf_type grpo needs --reward_funcs NAME … (see `swiftlike rewards list`: accuracy, "
                             "format, length)")
    table = get_registry().rewards
    out = []
    for name in args.reward_funcs:
        func = resolve_callable(table.get(name).func)
        params = inspect.signature(func).parameters
        bound = {k: v for k, v in (("pattern", args.reward_format), ("target", args.reward_length))
                 if k in params and v is not None}

        @functools.wraps(func)
        def call(*a, _func=func, _bound=bound, **kw):
            return _func(*a, **{**kw, **_bound})

        call.__name__ = name
        out.append(call)
    return out


class GrpoRecipe(PreferenceRecipe):
    data_kind = "rl"

    def check(self) -> None:
        super().check()
        self.rewards = reward_functions(self.args)  # unknown names fail before anything loads

    def config_class(self):
        from trl import GRPOConfig

        return GRPOConfig

    @property
    def trainer_class(self):
        return grpo_trainer()

    def encode(self, rows: list, *, train: bool):
        from datasets import Dataset

        return Dataset.from_list([{"prompt": self.template.render(r["messages"], add_generation_prompt=True),
                                   "solution": r.get("solution")} for r in rows])

    def stage_options(self) -> dict:
        a = self.args
        return dict(beta=self.beta, num_generations=a.num_generations, max_completion_length=a.max_completion_length,
                    temperature=a.temperature, disable_dropout=True, log_completions=a.log_completions,
                    epsilon=a.epsilon, epsilon_high=a.epsilon_high, scale_rewards=a.scale_rewards,
                    num_iterations=a.num_iterations, steps_per_generation=a.steps_per_generation, top_k=a.top_k,
                    top_p=a.top_p, repetition_penalty=a.repetition_penalty,
                    importance_sampling_level=a.importance_sampling_level,
                    mask_truncated_completions=a.mask_truncated_completions,
                    reward_weights=[float(w) for w in a.reward_weights] or None,
                    **({"loss_type": a.loss_type[0]} if a.loss_type else {}))

    def reference_name(self) -> str | None:
        return self.sampled_reference_name() if self.beta else None  # beta 0: TRL keeps no reference

    def make_trainer(self, callbacks: list):
        return self.trainer_class(model=self.model, reward_funcs=self.rewards, args=self.training_arguments(),
                                  train_dataset=self.train_data, eval_dataset=self.val_data or None,
                                  processing_class=self.tokenizer, callbacks=callbacks,
                                  after_checkpoint_save=self.after_checkpoint_save)

    def setup_model(self) -> None:
        super().setup_model()
        # sampling stops at the template's end-of-turn tokens, as infer's generation does
        self.model.generation_config.eos_token_id = self.template.stop_token_ids or self.tokenizer.eos_token_id

    def manifest_info(self) -> dict:
        return {**super().manifest_info(), "reward_funcs": list(self.args.reward_funcs)}


def grpo_trainer():
    from trl import GRPOTrainer

    class SwiftlikeGRPOTrainer(AtomicCheckpoints, GRPOTrainer):
        def _tokenize_prompts(self, prompts: list):
            # prompts are rendered by swiftlike's template, which prints its own special tokens
            return self.processing_class(text=prompts, add_special_tokens=False)["input_ids"], None, {}

    return SwiftlikeGRPOTrainer
