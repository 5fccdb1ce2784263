"""The checkpoint format, in one place: what `swiftlike sft` writes and infer, serve, merge-lora, export and the
adapter marketplace read.

A checkpoint directory holds the weights (a PEFT adapter or a full model), `chat_template.jinja`, `args.json` (the
run's arguments), a `README.md` model card and `swiftlike.json`, the manifest: base model type, hub id, revision and
weights fingerprint, template name and text, tuner config, datasets, metrics, and the sha256 and size of every file.
"""
from __future__ import annotations

import json
from pathlib import Path

from .base import base_fingerprint, check_base
from .contents import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ARGS, adapter_config, is_adapter_dir, saved_args
from .manifest import FORMAT, MANIFEST, MAX_MANIFEST_BYTES, check_manifest, check_manifest_fields, \
    check_manifest_files, file_table, parse_manifest, read_manifest, read_manifest_bytes, unsafe_path_reason, \
    walk_files, write_manifest
from .template import checkpoint_template

__all__ = ["MANIFEST", "FORMAT", "ARGS", "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "read_manifest", "write_manifest",
           "file_table", "walk_files", "check_manifest", "check_manifest_fields", "check_manifest_files",
           "parse_manifest", "read_manifest_bytes", "MAX_MANIFEST_BYTES", "unsafe_path_reason", "base_fingerprint",
           "check_base", "saved_args", "is_adapter_dir", "adapter_config", "checkpoint_template", "finalize"]


def finalize(directory, info: dict, *, args: dict | None = None) -> dict:
    """Write `args.json` (when given), the `README.md` model card and, last so that it lists them, the manifest.
    Returns the manifest."""
    from . import card

    directory = Path(directory)
    if args is not None:
        (directory / ARGS).write_text(json.dumps(args, indent=2, ensure_ascii=False, default=str))
    (directory / "README.md").write_text(card.render(info), encoding="utf-8")
    return write_manifest(directory, info)
