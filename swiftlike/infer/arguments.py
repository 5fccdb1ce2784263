"""The options of `swiftlike infer`, and the sampling options every generating command shares (infer, eval)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..models.options import ModelArguments, arg


@dataclass
class SamplingArguments(ModelArguments):
    max_new_tokens: int = arg(512, "Most tokens generated per answer.")
    temperature: float = arg(0.0, "0 = greedy.")
    top_p: float = arg(1.0, "Nucleus sampling.")
    repetition_penalty: float = arg(1.0, "1 = none.")

    def generation(self) -> dict:
        return dict(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                    repetition_penalty=self.repetition_penalty)


@dataclass
class InferArguments(SamplingArguments):
    ckpt_dir: Optional[str] = arg(None, "A checkpoint (adapter or full model), an installed adapter's name or a hub "
                                  "reference (hf:ORG/NAME[@REV]); none: the base model.", aliases=["adapters"])
    query: Optional[str] = arg(None, "Answer one query and exit (no interactive chat).")
    val_dataset: list = arg([], "Answer every row of these datasets (prompts; a final assistant turn is the "
                            "reference) into --result_path.")
    result_path: Optional[str] = arg(None, "Where --val_dataset answers go (default infer_result/<time>.jsonl).")
    stream: bool = arg(True, "Print the answer as it is generated (chat).")
    num_threads: Optional[int] = arg(None, "torch CPU threads (default: all cores).")
    force: bool = arg(False, "Load an adapter even on a base it was not trained on.")
