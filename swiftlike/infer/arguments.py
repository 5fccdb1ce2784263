"""The options of `swiftlike infer`, and the sampling options every generating command shares (infer, eval)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..models.options import ModelArguments, arg
from ..registry import SwiftlikeError

INFER_BACKENDS = ("pt", "swiftlike", "vllm")  # pt (ms-swift's name) and swiftlike: swiftlike's own engine
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank takes


@dataclass
class BackendArguments:
    """The engine `infer` and `serve` generate with, and vLLM's settings (ms-swift's spellings as aliases)."""
    infer_backend: str = arg("pt", "Engine: pt (swiftlike's own) or vllm (vLLM: Linux, a CUDA GPU and `pip install "
                             "vllm`).")
    max_lora_rank: Optional[int] = arg(None, "vllm: the largest LoRA rank it serves (1, 8, 16, 32, 64, 128, 256, "
                                       "320, 512; default: the adapters' largest given at start, at least 16).",
                                       aliases=["vllm_max_lora_rank"])
    gpu_memory_utilization: Optional[float] = arg(None, "vllm: share of the GPU's memory vLLM takes (weights and "
                                                  "KV cache; vLLM's default 0.9).",
                                                  aliases=["vllm_gpu_memory_utilization"])
    max_model_len: Optional[int] = arg(None, "vllm: context length (default: the model's).",
                                       aliases=["vllm_max_model_len"])

    @property
    def use_vllm(self) -> bool:
        return (self.infer_backend or "pt").lower() == "vllm"

    def check_backend(self) -> None:
        """One-line errors for the backend options, before anything loads."""
        backend = (self.infer_backend or "pt").lower()
        if backend not in INFER_BACKENDS:
            raise SwiftlikeError(f"--infer_backend {self.infer_backend!r}: use pt (swiftlike's own engine) or vllm")
        if backend != "vllm":
            given = [f"--{name}" for name in ("max_lora_rank", "gpu_memory_utilization", "max_model_len")
                     if getattr(self, name) is not None]
            if given:
                raise SwiftlikeError(f"{', '.join(given)}: vLLM's settings; they apply with --infer_backend vllm only")
            return
        if self.max_lora_rank is not None and self.max_lora_rank not in VLLM_LORA_RANKS:
            raise SwiftlikeError(f"--max_lora_rank {self.max_lora_rank}: vLLM takes one of "
                                 f"{', '.join(map(str, VLLM_LORA_RANKS))}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise SwiftlikeError(f"--gpu_memory_utilization {self.gpu_memory_utilization}: a share of the GPU's "
                                 f"memory, more than 0 and at most 1 (e.g. 0.9)")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise SwiftlikeError(f"--max_model_len {self.max_model_len}: at least 2 tokens")


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
class InferArguments(BackendArguments, SamplingArguments):
    ckpt_dir: Optional[str] = arg(None, "A checkpoint (adapter or full model), an installed adapter's name or a hub "
                                  "reference (hf:ORG/NAME[@REV]); none: the base model.", aliases=["adapters"])
    query: Optional[str] = arg(None, "Answer one query and exit (no interactive chat).")
    val_dataset: list = arg([], "Answer every row of these datasets (prompts; a final assistant turn is the "
                            "reference) into --result_path.")
    result_path: Optional[str] = arg(None, "Where --val_dataset answers go (default infer_result/<time>.jsonl).")
    stream: bool = arg(True, "Print the answer as it is generated (chat).")
    num_threads: Optional[int] = arg(None, "torch CPU threads (default: all cores).")
    force: bool = arg(False, "Load an adapter even on a base it was not trained on.")
