"""`swiftlike merge-lora`: a LoRA checkpoint merged into its base — a complete HF model dir with the template it
trained with."""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .models.options import ModelArguments, arg
from .paths import replace_dir
from .registry import SwiftlikeError


@dataclass
class MergeArguments(ModelArguments):
    ckpt_dir: Optional[str] = arg(None, "The LoRA checkpoint: a dir, an installed adapter's name or a hub reference.",
                                  aliases=["adapters"])
    output_dir: Optional[str] = arg(None, "Where the merged model goes (default: CKPT_DIR-merged beside a directory, "
                                          "./NAME-merged for an installed adapter or hub reference).")
    overwrite: bool = arg(False, "Replace --output_dir when it exists and is not empty.")
    dequantize: bool = arg(False, "Merge a QLoRA adapter into the 16/32-bit base.")
    force: bool = arg(False, "Merge even onto a base the adapter was not trained on.")


def merge_lora(ckpt_dir, output_dir=None, *, dequantize=False, force=False, overwrite=False,
               options: ModelArguments | None = None, **model_options) -> Path:
    """Merge `ckpt_dir` into its base; returns the merged model's dir. `options`/keywords: the model options.
    A non-empty output dir is refused unless `overwrite` (or it is this checkpoint's own earlier default output)."""
    import torch

    from .models.load import quiet_progress
    from .templates import save_template

    ckpt, saved, opts = check_mergeable(ckpt_dir, dequantize=dequantize, force=force, options=options,
                                        **model_options)
    out = Path(output_dir) if output_dir else default_output(ckpt_dir)
    _check_output(out, ckpt, overwrite=overwrite or (not output_dir and _merged_from(out) == str(ckpt)))
    loaded = merged_model(ckpt, force=force, options=opts)
    merged = loaded.model
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with torch.no_grad(), quiet_progress():
            merged.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        save_template(tmp, loaded.template)
        args = {**saved, "template": loaded.template.name, "merged_from": str(ckpt), "model_dir": str(out)}
        (tmp / "args.json").write_text(json.dumps(args, indent=2))
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_mergeable(ckpt_dir, *, dequantize=False, force=False, options: ModelArguments | None = None,
                    **model_options):
    """(checkpoint dir, its saved args, the model options) of a LoRA checkpoint that can be merged, checked before
    anything loads: a QLoRA adapter (trained on a 4/8-bit base) only with `dequantize`."""
    from .adapters import resolve as resolve_adapter
    from .checkpoint import PROMPT_LEARNING, adapter_config, read_manifest, refuse_reward_model, saved_args

    ckpt = Path(resolve_adapter(ckpt_dir, force=force))  # an installed adapter's name or a hub reference works too
    refuse_reward_model(ckpt)
    peft_type = adapter_config(ckpt).get("peft_type", "LORA")
    if peft_type in PROMPT_LEARNING:
        raise SwiftlikeError(f"{ckpt}: a {peft_type} adapter (virtual tokens) cannot be merged into the weights; "
                             f"use it as it is: swiftlike infer --ckpt_dir {ckpt}")
    saved = saved_args(ckpt)
    # args.json says how many bits; an installed adapter may carry only its manifest, whose tuner says qlora
    bits = saved.get("quant_bits") or ("4/8" if read_manifest(ckpt).get("tuner") == "qlora" else 0)
    if bits and not dequantize:
        raise SwiftlikeError(
            f"{ckpt} was trained on a {bits}-bit base; merging into quantized weights loses the "
            f"adapter's precision. Re-run with --dequantize to merge into the 16/32-bit base instead")
    opts = options or ModelArguments(**model_options)
    if opts.torch_dtype == "auto" and saved.get("torch_dtype"):
        from dataclasses import replace

        opts = replace(opts, torch_dtype=saved["torch_dtype"])
    return ckpt, saved, opts


def merged_model(ckpt, *, force=False, options: ModelArguments | None = None):
    """The checkpoint loaded (infer's `Loaded`) with its adapter merged into the base weights, in memory. The base
    loads unquantized: with --dequantize a QLoRA adapter merges onto the full-precision base it trained a
    quantized view of."""
    from dataclasses import replace

    from .infer import load_checkpoint

    loaded = load_checkpoint(ckpt, force=force, options=options)
    merged = loaded.model.merge_and_unload()
    merged.config.use_cache = True
    return replace(loaded, model=merged)


def default_output(ckpt_dir) -> Path:
    """CKPT_DIR-merged beside a checkpoint dir; ./NAME-merged for an installed adapter's name or a hub reference
    (the adapter store holds installed adapters only)."""
    given = Path(str(ckpt_dir)).expanduser()
    if given.is_dir():
        given = given.resolve() if given.name in ("", ".", "..") else given
        return given.with_name(given.name + "-merged")
    last = re.split(r"[:/]", str(ckpt_dir).split("@", 1)[0])[-1]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", last).strip(".-") or "adapter"
    return Path(f"{name}-merged")


def _merged_from(out: Path) -> str | None:
    try:
        return json.loads((out / "args.json").read_text()).get("merged_from")
    except (OSError, ValueError, AttributeError):
        return None


def _check_output(out: Path, ckpt: Path, *, overwrite: bool) -> None:
    """Refuse a target that exists with something in it (unless overwrite), and one whose replacement would delete
    the checkpoint itself or the working directory."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise SwiftlikeError(f"--output_dir {out}: exists and is not a directory; choose another path")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise SwiftlikeError(f"--output_dir {out}: exists and is not empty; choose a new one, or pass --overwrite "
                             f"to replace it")
    real = out.resolve()
    for precious, what in ((ckpt.resolve(), "the checkpoint being merged"), (Path.cwd().resolve(),
                                                                             "the working directory")):
        if precious == real or precious.is_relative_to(real):
            raise SwiftlikeError(f"--output_dir {out}: would replace {what}; choose another directory")
