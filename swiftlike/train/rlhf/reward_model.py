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
        return {**super().manifest_info(), "rm_type": "score", "head": "reward (1 output)"}

    def _check_resume_stage(self) -> None:
        super()._check_resume_stage()
        check_resume_rm_type(self.resume, "score")

    def next_steps(self, last) -> list[str]:
        return [f"  rank:      swiftlike eval --ckpt_dir {last} --val_dataset HELD_OUT_PAIRS.jsonl",
                f"  ppo:       swiftlike rlhf --rlhf_type ppo --reward_model {last} --dataset PROMPTS …"]


def check_resume_rm_type(resume, want: str) -> None:
    """A score-head reward model resumed as an implicit one (or back) would load one kind's weights as the other."""
    from ...checkpoint import read_manifest

    have = read_manifest(resume).get("rm_type", "score")
    if have != want:
        raise SwiftlikeError(f"--resume_from_checkpoint: {resume} is a --rm_type {have} reward model; resume it with "
                             f"--rm_type {have}")


NOT_A_REWARD_MODEL = ("not a reward model (a checkpoint of --rlhf_type rm, or a Hugging Face "
                      "*ForSequenceClassification model with one output)")


def reward_trainer():
    from trl import RewardTrainer

    class SwiftlikeRewardTrainer(AtomicCheckpoints, RewardTrainer):
        pass

    return SwiftlikeRewardTrainer


def locate_reward_model(given: str) -> str:
    """`--reward_model` checked before anything loads: a checkpoint of `--rlhf_type rm`, a run directory (its newest
    checkpoint, as LLaMA-Factory's YAMLs name it), a Hugging Face reward model's directory, or a hub id (fetched by
    fetch_reward_model). Returns the directory or id to use."""
    from pathlib import Path

    from ...checkpoint import is_reward_model, read_manifest
    from ..outputs import find_last_checkpoint

    path = Path(given).expanduser()
    if path.is_dir() and not read_manifest(path) and not is_hf_reward_model(path):
        path = find_last_checkpoint(path) or path
    if path.is_dir():
        if not is_reward_model(path) and not is_hf_reward_model(path):
            raise SwiftlikeError(f"--reward_model {given}: {NOT_A_REWARD_MODEL}")
        return str(path)
    if given.count("/") != 1 or given.startswith((".", "/", "~")):
        raise SwiftlikeError(f"--reward_model {given}: no such directory, and not a hub id (ORG/NAME)")
    return given


def fetch_reward_model(given: str, *, hub=None, cache_dir=None, model_type=None, base_path=None):
    """The directory of a located `--reward_model` (a hub id downloaded like --model); a swiftlike reward model is
    checked against the base it will be loaded on (its score head reads that base's features)."""
    from pathlib import Path

    from ...checkpoint import base_fingerprint, check_base, is_reward_model, read_manifest
    from ...models.options import ModelArguments

    path = Path(given).expanduser()
    if not path.is_dir():
        path = ModelArguments(model=given, hub=hub, cache_dir=cache_dir).resolve_model().path
        if not is_hf_reward_model(path):
            raise SwiftlikeError(f"--reward_model {given}: {NOT_A_REWARD_MODEL}")
    if is_reward_model(path) and base_path is not None:
        check_base(read_manifest(path), base_model_type=model_type, fingerprint=base_fingerprint(base_path),
                   where=f"--reward_model {given}", force_hint="")
    return path


def is_hf_reward_model(path) -> bool:
    """A Hugging Face sequence-classification model with one output (Skywork-Reward, TRL's RewardTrainer output…),
    not one of swiftlike's own (`--rlhf_type rm`): what ms-swift's and TRL's PPO take as a reward model."""
    import json
    from pathlib import Path

    from ...checkpoint import is_reward_model

    if is_reward_model(path):
        return False
    config = Path(path) / "config.json"
    try:
        cfg = json.loads(config.read_text()) if config.is_file() else {}
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(cfg, dict):
        return False
    # transformers saves id2label (one entry per output); num_labels is derived from it, 2 when neither is saved
    outputs = len(cfg.get("id2label") or {}) or cfg.get("num_labels", 2)
    return outputs == 1 and any(str(a).endswith("ForSequenceClassification") for a in cfg.get("architectures") or [])


def is_implicit(path) -> bool:
    """Whether the reward model at `path` is an implicit one (`--rm_type implicit`): it scores answers, not
    sequences, and has no score head to start a value model from."""
    from ...checkpoint import read_manifest, saved_args

    return _rm_type(read_manifest(path), saved_args(path)) == "implicit"


def _rm_type(manifest: dict, saved: dict) -> str:
    return manifest.get("rm_type") or saved.get("rm_type") or "score"


def _base_of(manifest: dict, saved: dict, base):
    """The base an adapter reward model was trained on: `base` when given, else its run's model dir or type."""
    from ...models.options import ModelArguments

    base_dir = base or saved.get("model_dir")
    return ModelArguments(model=str(base_dir) if base_dir else None,
                          model_type=None if base_dir else manifest.get("base_model_type")).resolve_model()


def load_reward_model(path, *, base=None, dtype=None, trust_remote_code=False):
    """A reward model saved by `--rlhf_type rm` (an adapter with its score head, or a full model) or a Hugging Face
    sequence-classification model with one output -> (model, tokenizer), ready for scoring; an implicit one
    (`--rm_type implicit`) -> (ImplicitReward, tokenizer); anything else is a one-line error."""
    from pathlib import Path

    from peft import PeftModel

    from ...checkpoint import is_adapter_dir, read_manifest, saved_args
    from ...models.load import load_model_tokenizer
    from ...models.options import ModelArguments

    path = Path(path)
    manifest, saved = read_manifest(path), saved_args(path)
    if manifest.get("rlhf_type") != "rm" and saved.get("rlhf_type") != "rm" and not is_hf_reward_model(path):
        raise SwiftlikeError(f"--reward_model {path}: {NOT_A_REWARD_MODEL}")
    if _rm_type(manifest, saved) == "implicit":
        # the base as a causal LM under the adapter, not merged: the base with the adapter off is its reference
        from .implicit_scorer import ImplicitReward

        model, tok = load_model_tokenizer(resolved=_base_of(manifest, saved, base), torch_dtype=dtype,
                                          trust_remote_code=trust_remote_code)
        model = ImplicitReward(PeftModel.from_pretrained(model, str(path)),
                               manifest.get("beta") or saved.get("beta") or 0.1)
    elif is_adapter_dir(path):
        model, tok = load_model_tokenizer(resolved=_base_of(manifest, saved, base), torch_dtype=dtype, task="reward",
                                          trust_remote_code=trust_remote_code)
        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    else:
        model, tok = load_model_tokenizer(resolved=ModelArguments(model=str(path)).resolve_model(), torch_dtype=dtype,
                                          task="reward", trust_remote_code=trust_remote_code)
    model.eval().requires_grad_(False)
    return model, tok
