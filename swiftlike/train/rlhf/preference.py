"""Stages that train on preference pairs — DPO (and its loss variants, RPO), CPO, SimPO, ORPO — on TRL's trainers
and losses. What differs from sft: the rows (pairs), their encoding (swiftlike's template, see encode.py), the
trainer class and its config; every other phase is the recipe's."""
from __future__ import annotations

from ...registry import SwiftlikeError
from ..recipe import TrainingRecipe
from ..atomic_checkpoints import AtomicCheckpoints
from .arguments import DEFAULT_BETA
from .encode import TOO_LONG, encode_pair, encode_rows


def _encoded(recipe, rows, fn, *, train: bool):
    """rows -> a datasets.Dataset of encoded rows; bad rows (too long, empty) follow --skip_bad_rows like sft's."""
    from datasets import Dataset

    from ...data.errors import DatasetError

    a = recipe.args
    encoded, problems = encode_rows(rows, fn, recipe.template, a.max_length, a.truncation_strategy)
    too_long = [p for p in problems if p.reason.startswith(TOO_LONG)]
    if too_long:  # --truncation_strategy delete drops and counts them, as sft does
        problems = [p for p in problems if not p.reason.startswith(TOO_LONG)]
        print(f"swiftlike: dropped {len(too_long)} of {len(rows)} {'training' if train else 'validation'} row(s) "
              f"over --max_length {a.max_length}; first: {too_long[0]}")
    if problems and not a.skip_bad_rows:
        raise DatasetError.from_problems(problems)
    if problems:
        print(f"swiftlike: skipped {len(problems)} row(s) that do not fit; first: {problems[0]}")
    if train and not encoded:
        raise SwiftlikeError("no training rows left after encoding")
    return Dataset.from_list(encoded)


class PreferenceRecipe(TrainingRecipe):
    """The recipe for paired preference data: only the data kind, encoding, trainer and config differ."""

    data_kind = "preference"

    @property
    def stage(self):
        return self.args.rlhf_type

    @property
    def beta(self) -> float:
        return self.args.beta if self.args.beta is not None else DEFAULT_BETA[self.args.rlhf_type]

    def check(self) -> None:
        super().check()
        self.args.check_stage_options()

    def template_options(self) -> dict:
        # the answer is the final reply; earlier assistant turns are part of the prompt
        return {"system": self.args.system, "loss_mode": "last_round"}

    def dataset_options(self) -> dict:
        return {**super().dataset_options(), "kind": self.data_kind}

    def encode(self, rows: list, *, train: bool):
        return _encoded(self, rows, encode_pair, train=train)

    def collator(self):
        return None  # the trainer's own (padding the pair to the longest row)

    def processing_class(self):
        return self.tokenizer

    def training_arguments(self):
        import torch

        config = self.config_class()
        options = {**self.training_options(), **self.stage_options()}
        options.pop("include_num_input_tokens_seen", None)  # pairs have no flat input_ids the Trainer can count
        return config(**options, bf16=self.dtype == torch.bfloat16 and not self.on_cpu,
                      fp16=self.dtype == torch.float16 and not self.on_cpu)

    def stage_options(self) -> dict:
        return {}

    def manifest_info(self) -> dict:
        return {**super().manifest_info(), "rlhf_type": self.args.rlhf_type, "beta": self.beta,
                "reference": self.reference_name()}

    def reference_name(self) -> str | None:
        """What the KL term or the implicit reward is measured against (None: the stage has no reference)."""
        return None

    def sampled_reference_name(self) -> str | None:
        """GRPO's and PPO's reference in TRL: the policy with its adapter disabled, or a frozen copy of it."""
        return "base (adapter disabled)" if getattr(self.model, "peft_config", None) else \
            "frozen copy of the starting model"


class DpoRecipe(PreferenceRecipe):
    """DPO: TRL's DPOTrainer. The reference for LoRA is the model with the adapter disabled (or, when training
    continues an --adapters adapter, a frozen copy of that adapter): no second copy of the base weights."""

    packs_pairs = True  # rows are (prompt, chosen, rejected): packed_pairs.py lays them out without padding

    def config_class(self):
        from trl import DPOConfig

        return DPOConfig

    @property
    def trainer_class(self):
        return dpo_trainer()

    def stage_options(self) -> dict:
        a = self.args
        loss_type = list(a.loss_type) or ["sigmoid"]
        weights = [float(w) for w in a.loss_weights] or [1.0] * len(loss_type)
        if a.rpo_alpha:
            loss_type.append("sft")
            weights.append(a.rpo_alpha)
        return dict(beta=self.beta, loss_type=loss_type, loss_weights=weights, label_smoothing=a.label_smoothing,
                    precompute_ref_log_probs=a.precompute_ref_log_probs, max_length=None, disable_dropout=True,
                    ld_alpha=a.ld_alpha, discopop_tau=a.discopop_tau)

    def trainer_kwargs(self) -> dict:
        return {"ref_model": self.ref}

    def setup_model(self) -> None:
        super().setup_model()
        self.ref = self.reference_model()
        if self.padding_free and self.packs_pairs:
            from .packed_pairs import enable_packed_forward

            enable_packed_forward(self.model)

    def collator(self):
        """Padding-free pairs with logits only at answer positions, the prompt shared by both answers where the
        attention reads that layout (packed_pairs.py); TRL's padded collator with --padding_free false."""
        if not (self.padding_free and self.packs_pairs):
            return None
        from ..varlen_attention import NAME
        from .packed_pairs import PackedPairCollator

        on_varlen = [m.config._attn_implementation == NAME for m in (self.model, self.ref) if m is not None]
        return PackedPairCollator(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                                  else self.tokenizer.eos_token_id, share_prompt=all(on_varlen))

    def reference_model(self):
        """None for a LoRA policy (TRL disables the adapter, or uses a frozen copy of a continued one); a frozen
        model for full/freeze training or an explicit --ref_model."""
        a = self.args
        if a.ref_model is None and getattr(self.model, "peft_config", None):
            return None
        from ...models.load import load_model_tokenizer
        from ...models.options import ModelArguments

        if a.ref_model is None:
            resolved = self.resolved
        else:
            given = a.ref_model
            resolved = ModelArguments(model=given if "/" in given or "\\" in given else None,
                                      model_type=None if "/" in given or "\\" in given else given,
                                      hub=a.hub).resolve_model()
        ref, _ = load_model_tokenizer(resolved=resolved, torch_dtype=self.dtype, tokenizer=self.tokenizer,
                                      trust_remote_code=a.trust_remote_code)
        ref.eval().requires_grad_(False)
        if self.padding_free and self.packs_pairs:
            from .packed_pairs import enable_packed_forward
            from ..varlen_attention import enable_varlen_attention

            if a.attn_impl == "auto":
                enable_varlen_attention(ref)
            enable_packed_forward(ref)
        return ref

    def reference_name(self) -> str | None:
        a = self.args
        if a.ref_model:
            return a.ref_model
        if getattr(self.model, "peft_config", None):
            return f"adapter {self.start_adapter} (frozen copy)" if self.start_adapter else "base (adapter disabled)"
        return "frozen copy of the starting model"


class CpoRecipe(PreferenceRecipe):
    """CPO and SimPO (CPO with the `simpo` loss): TRL's CPOTrainer, no reference model."""

    def config_class(self):
        from trl.experimental.cpo import CPOConfig

        return CPOConfig

    @property
    def trainer_class(self):
        return cpo_trainer()

    def stage_options(self) -> dict:
        a = self.args
        loss = (list(a.loss_type) or ["sigmoid"])[0]
        cpo_alpha = a.cpo_alpha if a.cpo_alpha is not None else 1.0 if a.rlhf_type == "cpo" else 0.0
        return dict(beta=self.beta, loss_type=loss, cpo_alpha=cpo_alpha, simpo_gamma=a.simpo_gamma,
                    label_smoothing=a.label_smoothing, max_length=a.max_length, disable_dropout=True)


class OrpoRecipe(PreferenceRecipe):
    """ORPO: TRL's ORPOTrainer (odds-ratio term added to the NLL of the chosen answer), no reference model."""

    def config_class(self):
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig

    @property
    def trainer_class(self):
        return orpo_trainer()

    def stage_options(self) -> dict:
        return dict(beta=self.beta, max_length=self.args.max_length, disable_dropout=True)


# ---------------------------------------------------------------------------------------------- trainers
def dpo_trainer():
    from trl import DPOTrainer

    from .packed_pairs import packed_tokens

    class SwiftlikeDPOTrainer(AtomicCheckpoints, DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset  # already encoded by swiftlike's template (prompt_ids, chosen_ids, rejected_ids)

        def _compute_loss(self, model, inputs, return_outputs):
            if "swiftlike_packed_ids" not in inputs or not self.model.training:
                return super()._compute_loss(model, inputs, return_outputs)
            # TRL counts tokens from the (compact) attention mask: count the packed row's instead
            before = self._total_train_tokens
            out = super()._compute_loss(model, inputs, return_outputs)
            self._total_train_tokens = before + packed_tokens(inputs)
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return out

    return SwiftlikeDPOTrainer


def _pair_features(feature) -> dict:
    """The encoded pair in the column layout TRL's CPO/ORPO trainers batch (prompt_*, chosen_*, rejected_*)."""
    prompt, chosen, rejected = feature["prompt_ids"], feature["chosen_ids"], feature["rejected_ids"]
    out = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for key, answer in (("chosen", chosen), ("rejected", rejected)):
        ids = prompt + answer
        out[f"{key}_input_ids"] = ids
        out[f"{key}_attention_mask"] = [1] * len(ids)
        out[f"{key}_labels"] = [-100] * len(prompt) + answer
    return out


def cpo_trainer():
    from trl.experimental.cpo import CPOTrainer

    class SwiftlikeCPOTrainer(AtomicCheckpoints, CPOTrainer):
        def tokenize_row(self, feature, model=None):
            return _pair_features(feature)

    return SwiftlikeCPOTrainer


def orpo_trainer():
    from trl.experimental.orpo import ORPOTrainer

    class SwiftlikeORPOTrainer(AtomicCheckpoints, ORPOTrainer):
        def tokenize_row(self, feature, model=None):
            return _pair_features(feature)

    return SwiftlikeORPOTrainer
