"""`swiftlike export --quant_method bnb|gptq|awq --quant_bits 4|8 --to DIR`: the merged model quantized through a
library into a model directory transformers loads, with its held-out loss beside the full-precision model's.

bnb (bitsandbytes) quantizes, saves and reloads 4-bit (nf4) and 8-bit weights on CPU. GPTQ runs through
llm-compressor, on the CPU when there is no GPU (calibrated on --dataset rows). AWQ is refused in one line:
llm-compressor's AWQ needs an accelerator (its calibration cache pins memory) and none was there to test it on."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ..models.options import ModelArguments
from ..paths import replace_dir
from ..registry import SwiftlikeError
from .arguments import QUANT_METHODS
from .gptq import CALIBRATION_ROWS

REPORT = "quantization.json"
HELDOUT_ROWS = 200  # enough rows for a stable loss, few enough to score twice in seconds on CPU


def check_method(method, bits) -> None:
    """One line, before anything loads: an unknown method or width, a GPU-only method, a missing library."""
    if method not in QUANT_METHODS:
        raise SwiftlikeError(f"--quant_method {method}: use {', '.join(QUANT_METHODS)}")
    if bits not in (4, 8):
        raise SwiftlikeError(f"--quant_bits {bits}: use 4 or 8")
    import importlib.util

    if method == "awq":  # not driven on a GPU either: no GPU was there to test it on
        raise SwiftlikeError(
            "--quant_method awq needs a GPU: llm-compressor's AWQ calibration pins memory on an accelerator (on CPU "
            "it stops with 'Cannot access accelerator device'), and swiftlike does not drive it yet; use "
            "--quant_method gptq (llm-compressor, runs on CPU) or bnb, or --to_gguf OUT.gguf --gguf_type q8_0")
    if method == "gptq":
        if importlib.util.find_spec("llmcompressor") is None:
            raise SwiftlikeError("--quant_method gptq runs through llm-compressor: pip install llmcompressor (it pins "
                                 "transformers <= 5.17, which pip then installs)")
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        raise SwiftlikeError("--quant_method bnb needs bitsandbytes: pip install -e \".[export]\"")


def check_output_dir(to, *, overwrite=False) -> Path:
    from .copy import check_target

    if check_target(to):
        raise SwiftlikeError(f"--to {to}: a quantized export is written to a directory; push that directory with "
                             f"`swiftlike export --ckpt_dir DIR --to {to}`")
    out = Path(to)
    if out.exists() and (not out.is_dir() or out.is_symlink()):
        raise SwiftlikeError(f"--to {out}: exists and is not a directory; choose another path")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SwiftlikeError(f"--to {out}: exists and is not empty; choose a new one, or pass --overwrite to "
                             f"replace it")
    if overwrite and out.exists() and Path.cwd().resolve().is_relative_to(out.resolve()):
        raise SwiftlikeError(f"--to {out}: would replace the working directory; choose another directory")
    return out


def to_quantized(ckpt_dir, to, *, method="bnb", bits=4, dataset=(), val_dataset=(), dequantize=False, force=False,
                 overwrite=False, options: ModelArguments | None = None, n_samples: int = CALIBRATION_ROWS) -> dict:
    """Write the merged model of `ckpt_dir` quantized into `to`; returns the report (also `to`/quantization.json)."""
    from .heldout import heldout_rows
    from .source import check_source

    check_method(method, bits)
    if n_samples < 1:
        raise SwiftlikeError(f"--quant_n_samples {n_samples}: give at least 1 calibration row")
    out = check_output_dir(to, overwrite=overwrite)
    heldout = list(val_dataset or dataset or ())
    if not heldout:
        raise SwiftlikeError("--quant_method needs held-out rows to report the loss on: --val_dataset F (or "
                             "--dataset F)")
    rows = heldout_rows(heldout, limit=HELDOUT_ROWS)
    calibration = list(dataset or val_dataset)
    calib_rows = heldout_rows(calibration, limit=n_samples) if method == "gptq" else []
    source = check_source(ckpt_dir, dequantize=dequantize, force=force, options=options)

    from .source import load_source

    loaded = load_source(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        report = _quantize(loaded, work, method=method, bits=bits, rows=rows, heldout=heldout, ckpt=source.ckpt,
                           calibration=(calibration, calib_rows))
        replace_dir(work / "quantized", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**report, "dir": str(out)}


def _quantize(loaded, work: Path, *, method, bits, rows, heldout, ckpt, calibration=((), ())) -> dict:
    """The merged model quantized into work/quantized (bnb: saved to work/fp32 and reloaded quantized; gptq:
    calibrated in place and saved compressed), then reloaded from there to score its held-out loss."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..models.load import bnb_config, quiet_progress
    from ..templates import save_template
    from .heldout import heldout_loss

    fp32_loss = heldout_loss(loaded.model, loaded.template, rows)
    full, staged = work / "fp32", work / "quantized"
    dtype = loaded.model.dtype
    extra = {}
    with quiet_progress():
        if method == "bnb":
            with torch.no_grad():
                loaded.model.save_pretrained(full, safe_serialization=True)
                loaded.model = None  # the saved copy is what gets quantized; free the full-precision one
                quantized = AutoModelForCausalLM.from_pretrained(
                    full, dtype=dtype, quantization_config=bnb_config(bits, compute_dtype=dtype))
                quantized.save_pretrained(staged, safe_serialization=True)
            extra["quant_type"] = "nf4" if bits == 4 else "int8"
        else:
            from .gptq import quantize_gptq

            datasets, calib_rows = calibration
            scheme = quantize_gptq(loaded.model, loaded.template, calib_rows, bits, staged)
            loaded.model = None
            # what a user gets: the saved directory as transformers loads it (compressed-tensors)
            quantized = AutoModelForCausalLM.from_pretrained(staged, dtype=dtype)
            extra.update(quant_type=f"int{bits}, {scheme['strategy']}" + (
                f" {scheme['group_size']}" if "group_size" in scheme else ""), format="compressed-tensors",
                calibration={"datasets": list(datasets), "rows": len(calib_rows),
                             # calibrated on the rows it is scored on: the loss looks better than it is
                             "same_as_heldout": sorted(datasets) == sorted(heldout)})
        quantized.eval()
        quant_loss = heldout_loss(quantized, loaded.template, rows)
    loaded.tokenizer.save_pretrained(staged)
    save_template(staged, loaded.template)
    report = {"method": method, "bits": bits, **extra, "source": str(ckpt), "template": loaded.template.name,
              "heldout": {"datasets": heldout, "rows": len(rows), "fp32_loss": round(fp32_loss, 6),
                          "quantized_loss": round(quant_loss, 6), "delta": round(quant_loss - fp32_loss, 6)}}
    (staged / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report
