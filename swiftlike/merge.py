"""`swiftlike merge-lora`: a LoRA checkpoint merged into its base — a complete HF model dir with the template it
trained with."""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .models.options import ModelArguments, arg
from .registry import SwiftlikeError


@dataclass
class MergeArguments(ModelArguments):
    ckpt_dir: Optional[str] = arg(None, "The LoRA checkpoint: a dir, an installed adapter's name or a hub reference.",
                                  aliases=["adapters"])
    output_dir: Optional[str] = arg(None, "Where the merged model goes (default: CKPT_DIR-merged).")
    dequantize: bool = arg(False, "Merge a QLoRA adapter into the 16/32-bit base.")
    force: bool = arg(False, "Merge even onto a base the adapter was not trained on.")


def merge_lora(ckpt_dir, output_dir=None, *, dequantize=False, force=False, options: ModelArguments | None = None,
               **model_options) -> Path:
    """Merge `ckpt_dir` into its base; returns the merged model's dir. `options`/keywords: the model options."""
    import torch

    from .adapters import resolve as resolve_adapter
    from .checkpoint import adapter_config, saved_args
    from .infer import load_checkpoint
    from .models.load import quiet_progress
    from .templates import save_template

    ckpt = Path(resolve_adapter(ckpt_dir, force=force))  # an installed adapter's name or a hub reference works too
    adapter_config(ckpt)
    saved = saved_args(ckpt)
    if saved.get("quant_bits") and not dequantize:
        raise SwiftlikeError(
            f"{ckpt} was trained on a {saved['quant_bits']}-bit base; merging into quantized weights loses the "
            f"adapter's precision. Re-run with --dequantize to merge into the 16/32-bit base instead")
    opts = options or ModelArguments(**model_options)
    if opts.torch_dtype == "auto" and saved.get("torch_dtype"):
        from dataclasses import replace

        opts = replace(opts, torch_dtype=saved["torch_dtype"])
    out = Path(output_dir) if output_dir else ckpt.with_name(ckpt.name + "-merged")
    # --dequantize: load the same base unquantized (the adapter trained on its quantized view).
    loaded = load_checkpoint(ckpt, force=force, options=opts)
    merged = loaded.model.merge_and_unload()
    merged.config.use_cache = True
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with torch.no_grad(), quiet_progress():
            merged.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        save_template(tmp, loaded.template)
        args = {**saved, "template": loaded.template.name, "merged_from": str(ckpt), "model_dir": str(out)}
        (tmp / "args.json").write_text(json.dumps(args, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
