"""Merge a LoRA checkpoint into its base: a complete HF model dir with the template it trained with."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ..registry import SwiftlikeError


def merge_lora(ckpt_dir, output_dir=None, *, dequantize=False, force=False, torch_dtype=None) -> Path:
    import torch

    from ..adapters import resolve as resolve_adapter
    from ..infer import _ckpt_args, load_checkpoint
    from ..templates import save_template

    ckpt = resolve_adapter(ckpt_dir, force=force)  # an installed adapter's name or a hub reference works too
    if not (ckpt / "adapter_config.json").exists():
        raise SwiftlikeError(f"--ckpt_dir {ckpt}: not a LoRA checkpoint (no adapter_config.json)")
    saved = _ckpt_args(ckpt)
    if saved.get("quant_bits") and not dequantize:
        raise SwiftlikeError(
            f"{ckpt} was trained on a {saved['quant_bits']}-bit base; merging into quantized weights loses the "
            f"adapter's precision. Re-run with --dequantize to merge into the 16/32-bit base instead")
    out = Path(output_dir) if output_dir else ckpt.with_name(ckpt.name + "-merged")
    # --dequantize: load the same base unquantized (the adapter trained on its quantized view).
    loaded = load_checkpoint(ckpt, torch_dtype=torch_dtype or saved.get("torch_dtype"), force=force)
    merged = loaded.model.merge_and_unload()
    merged.config.use_cache = True
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with torch.no_grad():
            merged.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        save_template(tmp, loaded.template)
        args = {**saved, "merged_from": str(ckpt), "model_dir": str(out)}
        (tmp / "args.json").write_text(json.dumps(args, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export(ckpt_dir, to: str, *, private=False, message=None) -> str:
    """Copy to a directory, or push to a hub reference (hf:ORG/NAME, ms:ORG/NAME, local:ORG/NAME)."""
    from ..adapters import resolve as resolve_adapter

    ckpt = resolve_adapter(ckpt_dir)  # an installed adapter's name or a hub reference works too
    if not ckpt.exists():
        raise SwiftlikeError(f"--ckpt_dir {ckpt}: no such directory")
    if ":" in to and to.split(":", 1)[0] in ("hf", "ms", "local"):
        try:
            from ..adapters.publish import push
        except ImportError:
            raise SwiftlikeError("pushing to a hub arrives with the adapter marketplace; export to a directory "
                                 "for now") from None
        return push(ckpt, to, private=private, message=message)
    dest = Path(to)
    if dest.exists() and any(dest.iterdir()):
        raise SwiftlikeError(f"--to {dest}: directory exists and is not empty; choose a new one")
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ckpt, tmp, ignore=shutil.ignore_patterns("optimizer.pt", "scheduler.pt", "rng_state*.pth",
                                                             "scaler.pt", "training_args.bin"))
    if dest.exists():
        dest.rmdir()
    tmp.rename(dest)
    return str(dest)
