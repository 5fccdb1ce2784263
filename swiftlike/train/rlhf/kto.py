"""KTO: unpaired answers labelled desirable or not, on TRL's KTOTrainer; rows encoded by swiftlike's template."""
from __future__ import annotations

from ..atomic_checkpoints import AtomicCheckpoints
from .encode import encode_kto
from .preference import DpoRecipe, _encoded


class KtoRecipe(DpoRecipe):
    data_kind = "kto"
    packs_pairs = False  # rows are single answers (plus TRL's KL rotation): TRL's padded collator batches them

    def config_class(self):
        from trl import KTOConfig

        return KTOConfig

    @property
    def trainer_class(self):
        return kto_trainer()

    def encode(self, rows: list, *, train: bool):
        return _encoded(self, rows, encode_kto, train=train)

    def stage_options(self) -> dict:
        a = self.args
        return dict(beta=self.beta, desirable_weight=a.desirable_weight, undesirable_weight=a.undesirable_weight,
                    loss_type=(list(a.loss_type) or ["kto"])[0], precompute_ref_log_probs=a.precompute_ref_log_probs,
                    max_length=None, disable_dropout=True)


def kto_trainer():
    from trl import KTOTrainer

    class SwiftlikeKTOTrainer(AtomicCheckpoints, KTOTrainer):
        def __init__(self, *a, args=None, **kw):
            # TRL refuses one row a step: it makes the KL term's mismatched answers within each batch. Rotating them
            # over windows of two rows of the data instead (what LLaMA-Factory and ms-swift precompute) lets
            # --per_device_train_batch_size 1 train, as it does with the peers' KTO
            single = args is not None and args.per_device_train_batch_size == 1 and args.loss_type == "kto"
            if single:
                args.per_device_train_batch_size = 2
            try:
                super().__init__(*a, args=args, **kw)
            finally:
                if single:
                    args.per_device_train_batch_size = 1
            if single:
                self._train_batch_size = args.train_batch_size

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            # encoded by swiftlike (prompt_ids, completion_ids, label); the KL term's mismatched pairs as TRL makes
            # them: each batch's completions rotated by one against its prompts (windows of two at batch 1)
            if not self.calculate_KL:
                return dataset

            def rotate(batch):
                batch["KL_completion_ids"] = [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]
                return batch

            return dataset.map(rotate, batched=True, batch_size=max(2, args.per_device_train_batch_size))

    return SwiftlikeKTOTrainer
