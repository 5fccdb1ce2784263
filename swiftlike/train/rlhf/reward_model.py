"""`--rlhf_type rm`: a reward model — the base with a one-output score head, trained on preference pairs (TRL's
RewardTrainer: the chosen answer must score above the rejected one). With LoRA the score head trains in full and is
saved in the adapter (PEFT's modules_to_save), so the checkpoint is a complete reward model for `--reward_model`."""
from __future__ import annotations

from ...registry import SwiftlikeError
from ..atomic_checkpoints import AtomicCheckpoints
from .preference import PreferenceRecipe


class RewardModelRecipe(PreferenceRecipe):
    def config_class(self):
        from trl import RewardConfig

        return RewardConfig

    @property
    def trainer_class(self):
        return reward_trainer()

    @property
    def beta(self):
        return None

    def encode(self, rows: list, *, train: bool):
        dataset = super().encode(rows, train=train)
        # the reward is read at the end of prompt + answer
        return dataset.map(lambda r: {"chosen_ids": r["prompt_ids"] + r["chosen_ids"],
                                      "rejected_ids": r["prompt_ids"] + r["rejected_ids"]},
                           remove_columns=["prompt_ids"])

    def model_kwargs(self) -> dict:
        return {"task": "reward"}

    def apply_tuner(self, model):
        from .. import tuners

        if self.start_adapter is not None:  # sft -> rm: the sft adapter under the new score head
            return tuners.continue_lora(model, self.start_adapter, self.args, task_type="SEQ_CLS")
        if self.args.train_type in ("lora", "dora", "qlora"):
            if self.args.train_type == "qlora":
                from peft import prepare_model_for_kbit_training

                model = prepare_model_for_kbit_training(model)
            return tuners.prepare_lora(model, self.args, task_type="SEQ_CLS")
        return super().apply_tuner(model)

    def stage_options(self) -> dict:
        return dict(max_length=None, disable_dropout=True,
                    center_rewards_coefficient=self.args.center_rewards_coefficient)

    @property
    def padding_free(self) -> bool:
        return False  # the score is read at each sequence's last token: rows stay separate

    def processing_class(self):
        return self.tokenizer

    def manifest_info(self) -> dict:
        return {**super().manifest_info(), "head": "reward (1 output)"}

    def next_steps(self, last) -> list[str]:
        return [f"  rank:      swiftlike eval --ckpt_dir {last} --val_dataset HELD_OUT_PAIRS.jsonl",
                f"  ppo:       swiftlike rlhf --rlhf_type ppo --reward_model {last} --dataset PROMPTS …"]


def reward_trainer():
    from trl import RewardTrainer

    class SwiftlikeRewardTrainer(AtomicCheckpoints, RewardTrainer):
        pass

    return SwiftlikeRewardTrainer


def load_reward_model(path, *, base=None, dtype=None, trust_remote_code=False):
    """A reward model saved by `--rlhf_type rm` (an adapter with its score head, or a full model) -> (model, tokenizer),
    ready for scoring; anything else is a one-line error."""
    from pathlib import Path

    from ...checkpoint import is_adapter_dir, read_manifest, saved_args
    from ...models.load import load_model_tokenizer
    from ...models.options import ModelArguments

    path = Path(path)
    manifest = read_manifest(path)
    if manifest.get("rlhf_type") != "rm" and saved_args(path).get("rlhf_type") != "rm":
        raise SwiftlikeError(f"--reward_model {path}: not a reward model (train one with --rlhf_type rm)")
    if is_adapter_dir(path):
        saved = saved_args(path)
        base_dir = base or saved.get("model_dir")
        resolved = ModelArguments(model=str(base_dir) if base_dir else None,
                                  model_type=None if base_dir else manifest.get("base_model_type")).resolve_model()
        model, tok = load_model_tokenizer(resolved=resolved, torch_dtype=dtype, task="reward",
                                          trust_remote_code=trust_remote_code)
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    else:
        resolved = ModelArguments(model=str(path)).resolve_model()
        model, tok = load_model_tokenizer(resolved=resolved, torch_dtype=dtype, task="reward",
                                          trust_remote_code=trust_remote_code)
    model.eval().requires_grad_(False)
    return model, tok
