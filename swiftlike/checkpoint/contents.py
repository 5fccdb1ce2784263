"""What is in a checkpoint directory: the arguments it was trained with, and whether it is a loadable adapter."""
from __future__ import annotations

import json
from pathlib import Path

from ..registry import SwiftlikeError

ARGS = "args.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# `swiftlike eval` writes its results here inside a checkpoint; they are not part of it (never listed or published)
EVAL_RESULTS = "eval_result"
# PEFT methods that add virtual tokens (or KV prefixes) instead of changing weights: nothing to merge
PROMPT_LEARNING = ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING", "ADAPTION_PROMPT", "CPT")


def saved_args(ckpt) -> dict:
    """The arguments of the run that wrote `ckpt` (its args.json, else the run dir's; ms-swift's sft_args.json)."""
    ckpt = Path(ckpt)
    for name in (ARGS, "sft_args.json"):
        for where in (ckpt, ckpt.parent):
            file = where / name
            if file.is_file():
                try:
                    data = json.loads(file.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise SwiftlikeError(f"{file}: invalid JSON ({err})") from None
                return data if isinstance(data, dict) else {}
    return {}


def is_adapter_dir(path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_config(path) -> dict:
    """adapter_config.json of a PEFT adapter dir, refusing what swiftlike does not load (no config, no
    safetensors weights: pickle weights can run code)."""
    path = Path(path)
    file = path / ADAPTER_CONFIG
    if not file.is_file():
        raise SwiftlikeError(f"{path}: no {ADAPTER_CONFIG} — not a LoRA adapter directory")
    if not (path / ADAPTER_WEIGHTS).is_file():
        raise SwiftlikeError(f"{path}: no {ADAPTER_WEIGHTS} (swiftlike loads safetensors adapters only)")
    try:
        cfg = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SwiftlikeError(f"{file}: invalid JSON ({err})") from None
    if not isinstance(cfg, dict):
        raise SwiftlikeError(f"{file}: expected a JSON object")
    return cfg
