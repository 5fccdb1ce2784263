"""GRPO: sample --num_generations completions per prompt, score them with reward functions from the registry
(`swiftlike rewards list`; plugins add more with `register_rewards`), and move the policy towards the better ones
(TRL's GRPOTrainer). Prompts are rendered by swiftlike's template, exactly as infer renders them."""
from __future__ import annotations

import functools
import inspect
import json

from ...registry import SwiftlikeError, get_registry, resolve_callable
from ..atomic_checkpoints import AtomicCheckpoints
from .preference import PreferenceRecipe


def reward_functions(args) -> list:
    """The --reward_funcs callables, named after their registry entries (TRL logs rewards/<name>), with the options
    they take (--reward_format, --reward_length) bound."""
    if not args.reward_funcs and not args.reward_model:
        raise SwiftlikeError("--rlhf_type grpo needs --reward_funcs NAME … (see `swiftlike rewards list`: accuracy, "
                             "format, length) or --reward_model")
    table = get_registry().rewards
    out = []
    for name in args.reward_funcs:
        func = resolve_callable(table.get(name).func)
        params = inspect.signature(func).parameters
        bound = {k: v for k, v in (("pattern", args.reward_format), ("target", args.reward_length))
                 if k in params and v is not None}

        @functools.wraps(func)
        def call(*a, _func=func, _bound=bound, **kw):
            return _func(*a, **{**with_row_columns(kw), **_bound})

        call.__name__ = name
        out.append(call)
    return out


ROW_COLUMN = "swiftlike_row"
# what TRL itself passes to a reward function: a row column of the same name does not replace it
_TRL_KEYWORDS = {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric"}


def _plain(value):
    """A column value JSON has no type for (a parquet row's numpy array, a timestamp): a list, else its text."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def with_row_columns(kw: dict) -> dict:
    """TRL's reward keywords, plus each row's own columns as keyword lists and `messages`: the prompt conversation
    with the completion as its last (assistant) turn — what ms-swift's reward functions read."""
    rows = kw.pop(ROW_COLUMN, None)
    if rows is None:
        return kw
    rows = [json.loads(r) for r in rows]
    names = {name for r in rows for name in r["columns"]} - _TRL_KEYWORDS - set(kw)
    out = {**kw, **{name: [r["columns"].get(name) for r in rows] for name in sorted(names)}}
    completions = kw.get("completions") or [None] * len(rows)
    out["messages"] = [r["messages"] + [{"role": "assistant", "content": c if isinstance(c, str) else
                                         (c[-1].get("content") if c else "")}] for r, c in zip(rows, completions)]
    return out


def model_reward(given: str, scorer):
    """A reward model as a GRPO reward function: each completion scored after its prompt's conversation, as the
    model was trained to score (ms-swift's default reward-model plugin), logged under the model's name."""
    from pathlib import Path

    def reward(**kw):
        kw = with_row_columns(kw)
        conversations = [m[:-1] for m in kw["messages"]]
        answers = [m[-1]["content"] for m in kw["messages"]]
        return scorer.score(conversations, answers)

    path = Path(given)
    name = f"{path.parent.name}-{path.name}" if path.name.startswith("checkpoint-") else path.name
    reward.__name__ = name
    return reward


class GrpoRecipe(PreferenceRecipe):
    data_kind = "rl"

    def check(self) -> None:
        super().check()
        self.rewards = reward_functions(self.args)  # unknown names fail before anything loads
        from .reward_model import locate_reward_model

        self.args.reward_model = [locate_reward_model(m) for m in self.args.reward_model]

    def resolve(self) -> None:
        """Each --reward_model's directory (hub ids downloaded) and the template it reads conversations in."""
        super().resolve()
        from ...checkpoint import is_reward_model
        from ...models.resolve import infer_spec
        from .reward_model import fetch_reward_model

        a = self.args
        self.reward_models = []
        for i, given in enumerate(a.reward_model):
            path = fetch_reward_model(given, hub=a.hub, cache_dir=a.cache_dir, model_type=self.model_type,
                                      base_path=self.resolved.path)
            template = (a.reward_template[i if len(a.reward_template) > 1 else 0] if a.reward_template else None)
            # a swiftlike reward model names the template it trained with; a Hugging Face one goes by its model type
            ours = is_reward_model(path)
            default = (a.template or self.spec.template) if ours else infer_spec(path).template
            if template is None and default == "auto" and not ours:
                raise SwiftlikeError(f"--reward_model {given}: cannot tell which chat template it reads "
                                     f"conversations in; pass --reward_template NAME (see `swiftlike templates list`)")
            self.reward_models.append((given, path, template, default))

    def config_class(self):
        from trl import GRPOConfig

        return GRPOConfig

    @property
    def trainer_class(self):
        return grpo_trainer()

    def encode(self, rows: list, *, train: bool):
        from datasets import Dataset

        # the row's other columns and its prompt conversation ride along as one JSON text (Arrow would need one
        # type per column across rows); reward_functions hands them to each reward function as keyword lists
        def riding(r):
            return json.dumps({"columns": r.get("columns") or {}, "messages": r["messages"]}, ensure_ascii=False,
                              default=_plain)

        return Dataset.from_list([{"prompt": self.template.render(r["messages"], add_generation_prompt=True),
                                   "solution": r.get("solution"), ROW_COLUMN: riding(r)}
                                  for r in rows])

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
        from .reward_scorer import RewardScorer

        scorers = [(given, RewardScorer(path, base_path=self.resolved.path, default_template=default,
                                        template=template, dtype=self.dtype,
                                        trust_remote_code=self.args.trust_remote_code))
                   for given, path, template, default in self.reward_models]
        trainer = self.trainer_class(model=self.model, args=self.training_arguments(),
                                     reward_funcs=self.rewards + [model_reward(g, s) for g, s in scorers],
                                     train_dataset=self.train_data, eval_dataset=self.val_data or None,
                                     processing_class=self.tokenizer, callbacks=callbacks,
                                     after_checkpoint_save=self.after_checkpoint_save)
        for _, scorer in scorers:
            scorer.model.to(trainer.accelerator.device)
        return trainer

    def setup_model(self) -> None:
        super().setup_model()
        # sampling stops at the template's end-of-turn tokens, as infer's generation does
        self.model.generation_config.eos_token_id = self.template.stop_token_ids or self.tokenizer.eos_token_id

    def manifest_info(self) -> dict:
        return {**super().manifest_info(), "reward_funcs": list(self.args.reward_funcs),
                **({"reward_model": list(self.args.reward_model)} if self.args.reward_model else {})}


def grpo_trainer():
    from trl import GRPOTrainer

    class SwiftlikeGRPOTrainer(AtomicCheckpoints, GRPOTrainer):
        def _tokenize_prompts(self, prompts: list):
            # prompts are rendered by swiftlike's template, which prints its own special tokens
            return self.processing_class(text=prompts, add_special_tokens=False)["input_ids"], None, {}

    return SwiftlikeGRPOTrainer
