"""The checkpoint format, in one place: what `swiftlike sft` writes and infer, serve, merge-lora, export and the
adapter marketplace read.

A checkpoint directory holds the weights (a PEFT adapter or a full model), `chat_template.jinja`, `args.json` (the
run's arguments), a `README.md` model card and `swiftlike.json`, the manifest: base model type, hub id, revision and
weights fingerprint, template name and text, tuner config, datasets, metrics, and the sha256 and size of every file.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..checksums import sha256_file
from ..registry import SwiftlikeError
from .base import base_fingerprint, check_base
from .contents import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ARGS, EVAL_RESULTS, PROMPT_LEARNING, adapter_config, \
    is_adapter_dir, saved_args
from .manifest import FORMAT, MANIFEST, MAX_MANIFEST_BYTES, check_manifest, check_manifest_fields, \
    check_manifest_files, file_table, parse_manifest, read_manifest, read_manifest_bytes, unsafe_path_reason, \
    walk_files, write_manifest
from .template import checkpoint_template, marked_template

__all__ = ["MANIFEST", "FORMAT", "ARGS", "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "read_manifest", "write_manifest",
           "file_table", "walk_files", "check_manifest", "check_manifest_fields", "check_manifest_files",
           "parse_manifest", "read_manifest_bytes", "MAX_MANIFEST_BYTES", "unsafe_path_reason", "base_fingerprint",
           "check_base", "saved_args", "is_adapter_dir", "adapter_config", "checkpoint_template", "marked_template",
           "finalize", "add_evaluation", "EVAL_RESULTS", "PROMPT_LEARNING", "is_reward_model", "refuse_reward_model"]


def is_reward_model(path) -> bool:
    """A checkpoint saved by `--rlhf_type rm`: a score head on the body (in the adapter, or a full model)."""
    return read_manifest(path).get("rlhf_type") == "rm" or saved_args(path).get("rlhf_type") == "rm"


AS_LANGUAGE_MODEL = "be loaded as a language model (infer, chat, merge-lora, export)"


def refuse_reward_model(path, doing: str = AS_LANGUAGE_MODEL) -> None:
    """Generating, merging or exporting a reward model would load its body as a causal LM without its score head:
    text comes out, and nothing says it is not what the checkpoint was trained to do. One line instead."""
    if path is not None and is_reward_model(path):
        raise SwiftlikeError(f"{path}: a reward model (--rlhf_type rm) scores answers and cannot {doing}; rank "
                             f"preference pairs with `swiftlike eval --ckpt_dir {path} --val_dataset PAIRS`, or "
                             f"train with it through `swiftlike rlhf --rlhf_type ppo --reward_model {path}`")


def add_evaluation(directory, entry: dict) -> dict:
    """Record one `swiftlike eval` result in a checkpoint: the `evaluations` of its manifest (an earlier result on the
    same data and backend is replaced) and the model card. Only the card's entry of the file table is re-hashed, so
    a file that changed since training still fails `adapter push`/`verify`. Returns the manifest."""
    import os

    from . import card
    from .manifest import MAX_EVALUATIONS, check_manifest

    directory = Path(directory)
    manifest = read_manifest(directory)
    if not manifest:
        raise SwiftlikeError(f"{directory}: no {MANIFEST}; not a swiftlike checkpoint")
    files = check_manifest(manifest, directory / MANIFEST)

    def same(e):
        return (e.get("backend"), e.get("tasks"), [d.get("sha256") for d in e.get("datasets") or []]) == \
            (entry.get("backend"), entry.get("tasks"), [d.get("sha256") for d in entry.get("datasets") or []])

    kept = [e for e in manifest.get("evaluations") or [] if isinstance(e, dict) and not same(e)]
    manifest["evaluations"] = (kept + [entry])[-MAX_EVALUATIONS:]
    check_manifest_fields(manifest, directory / MANIFEST)
    readme = directory / "README.md"
    tmp = directory / ".README.md.tmp"
    tmp.write_text(card.render({k: v for k, v in manifest.items() if k not in ("format", "files")}),
                   encoding="utf-8")
    os.replace(tmp, readme)
    files["README.md"] = {"sha256": sha256_file(readme), "size": readme.stat().st_size}
    manifest["files"] = dict(sorted(files.items()))
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, directory / MANIFEST)
    return manifest


def finalize(directory, info: dict, *, args: dict | None = None) -> dict:
    """Write `args.json` (when given), the `README.md` model card and, last so that it lists them, the manifest.
    Returns the manifest."""
    from . import card

    directory = Path(directory)
    if args is not None:
        (directory / ARGS).write_text(json.dumps(args, indent=2, ensure_ascii=False, default=str))
    (directory / "README.md").write_text(card.render(info), encoding="utf-8")
    return write_manifest(directory, info)
