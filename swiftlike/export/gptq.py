"""GPTQ through llm-compressor (`oneshot` + `GPTQModifier`), which calibrates on the CPU when there is no GPU. The
model is saved in compressed-tensors format: transformers loads it (with `compressed-tensors` installed) and vLLM
runs it compressed."""
from __future__ import annotations

import os
from pathlib import Path

CALIBRATION_ROWS = 128  # the default of --quant_n_samples, as LLaMA-Factory's
CALIBRATION_TOKENS = 512
GROUP_SIZES = (128, 64, 32)  # 4-bit: the largest that divides every quantized layer's input width


def weight_scheme(model, bits: int) -> dict:
    """compressed-tensors weight args: 8-bit per output channel; 4-bit per group of input columns (GPTQ's usual
    128, or the largest smaller size that divides every layer — SmolLM2's 576 is not a multiple of 128)."""
    from torch import nn

    head = model.get_output_embeddings()
    widths = {m.in_features for m in model.modules() if isinstance(m, nn.Linear) and m is not head}
    scheme = {"num_bits": bits, "type": "int", "symmetric": True, "strategy": "channel"}
    if bits == 4:
        size = next((g for g in GROUP_SIZES if all(w % g == 0 for w in widths)), None)
        if size is not None:
            scheme.update(strategy="group", group_size=size)
    return scheme


def calibration_dataset(rows: list, template):
    """The rows as the model sees them in training (the checkpoint's template), cut to CALIBRATION_TOKENS."""
    from datasets import Dataset

    from ..data import encode_dataset
    from .heldout import scoring_template

    encoded, _ = encode_dataset(rows, scoring_template(template), cache_dir=False)
    ids = [list(r["input_ids"])[:CALIBRATION_TOKENS] for r in encoded]
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids]})


def quantize_gptq(model, template, rows: list, bits: int, out: Path) -> dict:
    """Quantize `model` in place with GPTQ on `rows` and save it compressed to `out`; returns the weight scheme."""
    os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")  # it logs every layer it quantizes
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier

    scheme = weight_scheme(model, bits)
    data = calibration_dataset(rows, template)
    recipe = GPTQModifier(config_groups={"weights": {"targets": ["Linear"], "weights": scheme}}, ignore=["lm_head"])
    oneshot(model=model, dataset=data, recipe=recipe, num_calibration_samples=len(data),
            max_seq_length=max(len(i) for i in data["input_ids"]))
    model.save_pretrained(out, save_compressed=True)
    return scheme
