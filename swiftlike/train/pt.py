"""`swiftlike pt`: continued pretraining — the sft recipe with raw text: every token carries loss, documents end with
the tokenizer's end-of-sequence token and are packed into --max_length blocks (each keeps its own positions and
attends only to itself: the padding-free path), or cut with --truncation_strategy."""
from __future__ import annotations

from ..registry import SwiftlikeError
from .arguments import PtArguments
from .sft import SftRecipe

TRUNCATION = ("right", "left", "delete", "split")


class PtRecipe(SftRecipe):
    stage = "pt"

    def check(self) -> None:
        if self.args.truncation_strategy not in TRUNCATION:
            raise SwiftlikeError(f"--truncation_strategy {self.args.truncation_strategy!r}: pt takes "
                                 f"{', '.join(TRUNCATION)}")
        super().check()

    def template_options(self) -> dict:
        # the template is only recorded with the checkpoint (chat later); text is not rendered through it
        return {"system": self.args.system}

    def dataset_options(self) -> dict:
        return {**super().dataset_options(), "kind": "text"}

    def encode(self, rows: list, *, train: bool) -> list:
        from ..data.packing import pack

        a = self.args
        tok = self.tokenizer
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        texts = [row["text"] for row in rows]
        encoded, dropped = [], 0
        for ids in tok(texts, add_special_tokens=False)["input_ids"]:
            ids = list(ids) + eos
            if len(ids) > a.max_length:
                if a.truncation_strategy == "delete":
                    dropped += 1
                    continue
                if a.truncation_strategy == "split":
                    pieces = [ids[i:i + a.max_length] for i in range(0, len(ids), a.max_length)]
                else:
                    pieces = [ids[:a.max_length] if a.truncation_strategy == "right" else ids[-a.max_length:]]
            else:
                pieces = [ids]
            encoded += [{"input_ids": p, "labels": list(p), "length": len(p)} for p in pieces if len(p) > 1]
        if dropped and train:
            print(f"swiftlike: dropped {dropped} document(s) longer than --max_length {a.max_length} "
                  f"(--truncation_strategy delete)")
        if not encoded:
            raise SwiftlikeError("no text left to train on (every document was empty or dropped)")
        return pack(encoded, a.max_length) if a.packing and train else encoded

    def banner(self) -> str:
        return super().banner().replace(" train / ", " train documents / ")


def pt(args: PtArguments | None = None, resolve_adapter=None, **kwargs) -> dict:
    """Continued pretraining; returns {"run_dir", "last_checkpoint", "metrics"}."""
    if args is None:
        args = PtArguments(**kwargs)
    elif kwargs:
        raise TypeError("pt() takes PtArguments or keyword arguments, not both")
    return PtRecipe(args, resolve_adapter=resolve_adapter).run()
