"""The options of `swiftlike export` (a dataclass: the CLI builds its flags from it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..models.options import ModelArguments, arg

GGUF_TYPES = ("f16", "q8_0")
QUANT_METHODS = ("bnb", "gptq", "awq")


@dataclass
class ExportArguments(ModelArguments):
    ckpt_dir: Optional[str] = arg(None, "The checkpoint: a dir, an installed adapter's name or a hub reference.",
                                  aliases=["adapters"])
    to: Optional[str] = arg(None, "DIR, or HUB:ORG/NAME[@BRANCH] (hf:, ms:, local: or a plugin's hub).")
    merge_lora: bool = arg(False, "Merge the adapter into its base first and export the merged model.")
    to_gguf: Optional[str] = arg(None, "Write the merged model as one GGUF file (llama.cpp, Ollama): OUT.gguf.")
    gguf_type: str = arg("f16", "The GGUF's weight type: f16 or q8_0.")
    quant_method: Optional[str] = arg(None, "Write the merged model quantized into --to DIR: bnb, gptq or awq.")
    quant_bits: int = arg(0, "With --quant_method: 4 or 8.")
    dataset: list = arg([], "With --quant_method: calibration rows (gptq/awq) and the held-out rows whose loss is "
                        "reported (unless --val_dataset).")
    val_dataset: list = arg([], "With --quant_method: the held-out rows whose loss is reported.")
    quant_n_samples: int = arg(128, "With --quant_method gptq: how many --dataset rows calibrate it (ms-swift's "
                               "spelling; LLaMA-Factory's export_quantization_nsamples).")
    dequantize: bool = arg(False, "Merge a QLoRA adapter into the 16/32-bit base (GGUF and quantized export).")
    force: bool = arg(False, "Merge even onto a base the adapter was not trained on.")
    overwrite: bool = arg(False, "Replace an existing output (--merge_lora's merged dir, --to_gguf's file, "
                          "--quant_method's dir).")
    private: bool = arg(False, "Create the hub repo private.")
    message: Optional[str] = arg(None, "Commit message of the push.")
    sign: Optional[str] = arg(None, "Sign the pushed manifest with this key (`swiftlike adapter keygen NAME`); "
                              "swiftlike.sig travels with the push.")
    hub_root: Optional[str] = arg(None, "Root of the local: hub (default: $SWIFTLIKE_LOCAL_HUB).")
