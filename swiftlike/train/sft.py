"""`swiftlike sft`: the training recipe with chat-template encoding, padding-free batches and the loss on supervised
tokens only."""
from __future__ import annotations

from .arguments import SftArguments
from .recipe import TrainingRecipe


class SftRecipe(TrainingRecipe):
    stage = "sft"

    @property
    def trainer_class(self):
        from .trainer import SwiftlikeTrainer

        return SwiftlikeTrainer

    def template_options(self) -> dict:
        return {**super().template_options(), "loss_mode": self.args.loss_scale}

    def encode(self, rows: list, *, train: bool) -> list:
        from ..data import encode_dataset
        from ..data.packing import pack
        from ..registry import SwiftlikeError

        a = self.args
        encoded, dropped = encode_dataset(rows, self.template, num_proc=a.dataset_num_proc if train else 1)
        if not train:
            return encoded
        if dropped:
            print(f"swiftlike: dropped {dropped} training row(s) longer than --max_length {a.max_length} "
                  f"(--truncation_strategy {a.truncation_strategy})")
        if not encoded:
            raise SwiftlikeError(f"every training row is longer than --max_length {a.max_length}; raise it or use "
                                 f"--truncation_strategy left")
        return pack(encoded, a.max_length) if a.packing else encoded

    def collator(self):
        from ..data.collate import PaddingCollator, PaddingFreeCollator

        if self.padding_free:
            return PaddingFreeCollator()
        return PaddingCollator(pad_token_id=self.tokenizer.pad_token_id)


def sft(args: SftArguments | None = None, resolve_adapter=None, **kwargs) -> dict:
    """Train; returns {"run_dir", "last_checkpoint", "metrics"}. `sft(SftArguments(...))` or `sft(model_type=...,
    dataset=...)`. `resolve_adapter` turns --adapters names/refs into dirs (swiftlike.stages passes the
    marketplace's)."""
    if args is None:
        args = SftArguments(**kwargs)
    elif kwargs:
        raise TypeError("sft() takes SftArguments or keyword arguments, not both")
    return SftRecipe(args, resolve_adapter=resolve_adapter).run()
