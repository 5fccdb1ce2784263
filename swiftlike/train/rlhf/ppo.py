"""PPO: the policy samples answers to the prompts, a reward model (trained with `--rlhf_type rm`, or a Hugging
Face sequence-classification model with one output) scores them, and a value model (initialised from that reward
model, or for an implicit one from the base with a new head) estimates returns — TRL's PPOTrainer
(trl.experimental.ppo; TRL 1.13+ dropped it, hence trl<1.13). The policy's LoRA adapter is what is trained and saved;
its reference is the base with the adapter disabled."""
from __future__ import annotations

from ...registry import SwiftlikeError
from ..atomic_checkpoints import AtomicCheckpoints
from .preference import PreferenceRecipe


class PpoRecipe(PreferenceRecipe):
    data_kind = "rl"
    loss_key = "loss/policy_avg"
    # TRL's PPO samples answers to the validation prompts while it trains; it has no evaluation loss to end with
    final_evaluation = False

    def check(self) -> None:
        super().check()
        if not self.args.reward_model:
            raise SwiftlikeError("--rlhf_type ppo needs --reward_model CHECKPOINT (train one with --rlhf_type rm) or a "
                                 "Hugging Face reward model (a sequence-classification model with one output)")
        if self.args.resume_from_checkpoint:
            raise SwiftlikeError("--rlhf_type ppo cannot resume from a checkpoint (TRL's PPO loop has no resume); "
                                 "start a new run, or continue its adapter with --adapters CHECKPOINT")
        from importlib.metadata import version

        # the installed version, not an import: importing trl's PPO takes seconds, and this is the argument check
        if tuple(int(p) for p in version("trl").split(".")[:2] if p.isdigit()) >= (1, 13):
            raise SwiftlikeError("--rlhf_type ppo needs TRL's PPO trainer, which TRL 1.13 removed: "
                                 "pip install 'trl>=1.0,<1.13'")
        from .reward_model import locate_reward_model

        if len(self.args.reward_model) > 1:
            raise SwiftlikeError(f"--reward_model: PPO trains against one reward model, not "
                                 f"{len(self.args.reward_model)} (GRPO takes several)")
        self.args.reward_model = [locate_reward_model(self.args.reward_model[0])]

    def resolve(self) -> None:
        """The reward model's weights (a hub id is downloaded like --model), checked against the policy: a swiftlike
        reward model was trained on this base (its score head reads these weights' features); a Hugging Face one
        must share the policy's tokenizer (TRL's PPO hands it the policy's token ids)."""
        super().resolve()
        from .reward_model import fetch_reward_model

        self.reward_path = fetch_reward_model(self.args.reward_model[0], hub=self.args.hub,
                                              cache_dir=self.args.cache_dir, model_type=self.model_type,
                                              base_path=self.resolved.path)

    def setup_tokenizer(self) -> None:
        super().setup_tokenizer()
        from ...checkpoint import is_reward_model

        if is_reward_model(self.reward_path):
            return
        from ...models.load import load_tokenizer

        theirs = load_tokenizer(self.reward_path, self.args.trust_remote_code).get_vocab()
        ours = self.tokenizer.get_vocab()
        if theirs != ours:
            raise SwiftlikeError(f"--reward_model {self.args.reward_model[0]}: its tokenizer is not the policy's "
                                 f"({len(theirs)} tokens, {len(ours)} in {self.resolved.path}); TRL's PPO scores "
                                 f"the policy's token ids with it, so pick a reward model of the same family")

    def config_class(self):
        from trl.experimental.ppo import PPOConfig

        return PPOConfig

    @property
    def trainer_class(self):
        return ppo_trainer()

    def encode(self, rows: list, *, train: bool):
        from datasets import Dataset

        texts = [self.template.render(r["messages"], add_generation_prompt=True) for r in rows]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return Dataset.from_list([{"input_ids": i} for i in ids])

    def stage_options(self) -> dict:
        a = self.args
        stops = self.template.stop_token_ids
        return dict(kl_coef=self.beta, response_length=a.max_completion_length, temperature=a.temperature,
                    stop_token_id=stops[0] if stops else self.tokenizer.eos_token_id, num_ppo_epochs=a.num_ppo_epochs,
                    num_mini_batches=a.num_mini_batches, local_rollout_forward_batch_size=a.per_device_train_batch_size,
                    total_episodes=self.total_episodes(), missing_eos_penalty=a.missing_eos_penalty,
                    cliprange=a.cliprange, cliprange_value=a.cliprange_value, vf_coef=a.vf_coef, gamma=a.gamma,
                    lam=a.lam, whiten_rewards=a.whiten_rewards)

    def total_episodes(self) -> int:
        a = self.args
        if a.max_steps and a.max_steps > 0:
            return a.max_steps * a.per_device_train_batch_size * a.gradient_accumulation_steps
        return int(len(self.train_data) * a.num_train_epochs)

    def training_options(self) -> dict:
        options = super().training_options()
        options.pop("max_steps", None)  # PPO counts episodes
        return options

    def make_trainer(self, callbacks: list):
        from .reward_model import is_implicit, load_reward_model

        def load():
            return load_reward_model(self.reward_path, base=self.resolved.path, dtype=self.dtype,
                                     trust_remote_code=self.args.trust_remote_code)[0]

        reward = load()
        if is_implicit(self.reward_path):  # no score head to start from: the base under a new value head
            from ...models.load import load_model_tokenizer

            value, _ = load_model_tokenizer(resolved=self.resolved, torch_dtype=self.dtype, tokenizer=self.tokenizer,
                                            task="reward", trust_remote_code=self.args.trust_remote_code)
        else:  # as TRL and ms-swift do: the value model starts as a copy of the reward model
            value = load()
        value.requires_grad_(True)
        return self.trainer_class(args=self.training_arguments(), processing_class=self.tokenizer, model=self.model,
                                  ref_model=None, reward_model=reward, value_model=value,
                                  train_dataset=self.train_data, eval_dataset=self.val_data or None,
                                  callbacks=callbacks, after_checkpoint_save=self.after_checkpoint_save)

    @property
    def padding_free(self) -> bool:
        return False

    def train(self) -> None:
        import gc

        gc.freeze()
        gc.enable()
        self.trainer.train()
        from types import SimpleNamespace

        logged = [h for h in self.trainer.state.log_history if "objective/rlhf_reward" in h or "loss/policy_avg" in h]
        self.result = SimpleNamespace(metrics={k: v for k, v in (logged[-1] if logged else {}).items()
                                               if isinstance(v, (int, float))})

    def manifest_info(self) -> dict:
        return {**super().manifest_info(), "reward_model": self.args.reward_model[0]}

    def reference_name(self) -> str | None:
        return self.sampled_reference_name()


def ppo_trainer():
    from trl.experimental.ppo import PPOTrainer
    from trl.experimental.ppo import ppo_trainer as module

    class SwiftlikePPOTrainer(AtomicCheckpoints, PPOTrainer):
        def train(self):
            # TRL reads every reward through its module's get_reward (the backbone's last hidden state through
            # model.score); an implicit reward model scores the answer after the prompt from its log-probabilities,
            # so that one call is routed to it for the length of the loop
            from .implicit_scorer import ImplicitReward

            original = module.get_reward

            def get_reward(model, query_responses, pad_token_id, context_length):
                if isinstance(model, ImplicitReward):
                    return model.trl_reward(query_responses, pad_token_id, context_length)
                return original(model, query_responses, pad_token_id, context_length)

            module.get_reward = get_reward
            try:
                return super().train()
            finally:
                module.get_reward = original

    return SwiftlikePPOTrainer
