"""The options of `swiftlike eval`: the model options and infer's sampling options, plus what to evaluate."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..infer.arguments import SamplingArguments
from ..models.options import arg
from ..registry import SwiftlikeError

BACKENDS = ("native", "lm_eval")


@dataclass
class EvalArguments(SamplingArguments):
    ckpt_dir: Optional[str] = arg(None, "A checkpoint (adapter or full model), an installed adapter's name or a hub "
                                  "reference; its base comes from the checkpoint.")
    adapters: list = arg([], "Several LoRA adapters (dirs, installed names or hub refs) on one base, evaluated "
                         "together in mixed-adapter batches, side by side with the base.")
    val_dataset: list = arg([], "Rows to evaluate (messages/sharegpt/alpaca; the last assistant turn is the "
                            "reference), as for sft --dataset (FILE, FILE#N, a registered name); for a reward "
                            "model, preference pairs in any format rlhf reads.")
    output_dir: Optional[str] = arg(None, "Where eval_result/<time>/ goes (default: the checkpoint's dir for one "
                                    "local checkpoint, else the working directory).")
    eval_base: bool = arg(True, "Also evaluate the bare base model beside the adapters.")
    max_batch_size: int = arg(64, "Most rows generated together (one forward pass per decode step).")
    seed: int = arg(42, "Sampling seed (row i samples with seed + i).")
    record: bool = arg(True, "Record the metrics in the adapter checkpoint's swiftlike.json and model card.")
    eval_backend: str = arg("native", "native (generate and score --val_dataset) or lm_eval (EleutherAI's "
                            "lm-evaluation-harness on --tasks).")
    tasks: list = arg([], "lm_eval tasks, comma- or space-separated (mmlu,ceval-valid,cmmlu).")
    include_path: Optional[str] = arg(None, "lm_eval: a directory of extra task YAMLs.")
    num_fewshot: Optional[int] = arg(None, "lm_eval: few-shot examples per question (default: the task's).")
    limit: Optional[float] = arg(None, "lm_eval: at most this many (or this share of) examples per task.")
    num_threads: Optional[int] = arg(None, "torch CPU threads (default: all cores).")
    force: bool = arg(False, "Evaluate an adapter even on a base it was not trained on.")

    def task_list(self) -> list[str]:
        return [t.strip() for item in self.tasks for t in str(item).split(",") if t.strip()]

    def sources(self) -> list[str]:
        """What is evaluated: --ckpt_dir and every --adapters, in order."""
        return ([self.ckpt_dir] if self.ckpt_dir else []) + list(self.adapters)

    def check(self) -> None:
        """Cheap checks with one-line errors, before anything loads."""
        self.check_model_options()
        if self.eval_backend not in BACKENDS:
            raise SwiftlikeError(f"--eval_backend {self.eval_backend!r}: use {' or '.join(BACKENDS)}")
        if not (self.sources() or self.model_type or self.model or self.model_cache_dir):
            raise SwiftlikeError("eval needs --ckpt_dir DIR, --adapters A [B ...] or --model_type/--model")
        if self.eval_backend == "native" and not self.val_dataset:
            raise SwiftlikeError("eval needs --val_dataset FILE [FILE ...] (or --eval_backend lm_eval --tasks T)")
        if self.eval_backend == "lm_eval":
            if not self.task_list():
                raise SwiftlikeError("--eval_backend lm_eval needs --tasks T1,T2 (e.g. mmlu,ceval-valid,cmmlu)")
            if len(self.sources()) > 1:
                raise SwiftlikeError("--eval_backend lm_eval evaluates one model at a time: give one --ckpt_dir")
        if self.max_new_tokens < 1 or self.max_batch_size < 1:
            raise SwiftlikeError("--max_new_tokens and --max_batch_size must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.repetition_penalty <= 0:
            raise SwiftlikeError("--temperature must be >= 0, --top_p in (0, 1], --repetition_penalty > 0")
