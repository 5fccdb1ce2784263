"""The publishable artifact: a checkpoint's adapter (or model) files, its swiftlike.json and a README.md card.

The source is validated first (manifest present, every file it lists matching its sha256, no pickle weights unless
allowed, no symlink leaving the directory, every manifest field well-formed); trainer state (optimizer, scheduler,
rng) is left out; the manifest is rewritten with the name, version and the sha256 and size of every published file.
`export` (to a directory or a hub) and `adapter push` collect the files through `publishable_files` alike.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..checkpoint import EVAL_RESULTS, MANIFEST, check_manifest_fields, check_manifest_files, read_manifest, \
    walk_files, write_manifest
from ..checkpoint import card
from ..registry import SwiftlikeError, get_registry
from .checks import is_pickle, is_training_state, link_or_copy, verify_file
from .signing import SIGNATURE

DEFAULT_VERSION = "0.1.0"
REGENERATED = ("README.md",)  # PEFT writes a boilerplate card; the published one is generated from the manifest


def publishable_files(src: Path) -> dict[str, Path]:
    """{relative path: real path} of what is published from `src`: every file but the manifest, its signature, the
    card, trainer state, `swiftlike eval` results (eval_result/; their metrics are in the manifest) and dot files. A symlink
    leaving `src` is an error (see walk_files), never followed."""
    out = {}
    for rel, real in walk_files(src).items():
        # a signature is over the manifest the push rewrites (name, version): it is made again with --sign, or dropped
        if rel in (MANIFEST, SIGNATURE) or rel in REGENERATED or is_training_state(rel) \
                or rel.startswith(EVAL_RESULTS + "/"):
            continue
        if any(part.startswith(".") for part in rel.split("/")):  # .staging, editor and OS files
            continue
        out[rel] = real
    return out


def source_info(src: Path, *, require_manifest: bool) -> dict:
    """The manifest fields of `src`, validated; a generated manifest for a dir without one (unless required)."""
    files = publishable_files(src)  # first: it refuses links out of src, the manifest's among them
    manifest = read_manifest(src)
    if not manifest:
        if require_manifest:
            raise SwiftlikeError(f"{src}: no {MANIFEST}; push a checkpoint written by `swiftlike sft`, or use "
                                 f"`swiftlike export --ckpt_dir {src} --to REF` to push it with a generated manifest")
        return generated_info(src, files)
    listed = check_manifest_files(manifest, src / MANIFEST)
    for rel, entry in listed.items():
        if rel in REGENERATED or is_training_state(rel):
            continue
        try:
            if rel not in files:
                raise SwiftlikeError(f"{rel}: missing (listed in {MANIFEST})")
            verify_file(files[rel], rel, entry)
        except SwiftlikeError as err:
            raise SwiftlikeError(f"{src}: {err}; the checkpoint changed after it was written — not pushed") from None
    extra = [rel for rel in files if rel not in listed]
    if extra:
        raise SwiftlikeError(f"{src}: {extra[0]} is not listed in {MANIFEST} (added after training?); remove it, "
                             f"or push with `swiftlike export` after deleting {MANIFEST} to regenerate it")
    return {k: v for k, v in manifest.items() if k not in ("format", "files")}


def generated_info(src: Path, files: dict | None = None) -> dict:
    """Manifest fields for a dir swiftlike did not train: a merged model, or a PEFT adapter from elsewhere."""
    files = publishable_files(src) if files is None else files
    args = _json(files.get("args.json"))
    adapter_cfg = _json(files.get("adapter_config.json"))
    info = {"name": src.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "kind": "adapter" if adapter_cfg else "model"}
    parent = Path(args["merged_from"]) if args.get("merged_from") else None
    inherited = read_manifest(parent) if parent and parent.is_dir() else {}
    for key in ("base_model_type", "base_model", "base_revision", "template", "template_text", "system", "tuner",
                "tuner_config", "datasets", "step", "metrics", "license"):
        if inherited.get(key) is not None:
            info[key] = inherited[key]
    info.setdefault("base_model_type", args.get("model_type"))
    info.setdefault("template", args.get("template"))
    if not info.get("license") and info.get("base_model_type") in get_registry().models:
        info["license"] = get_registry().models.get(info["base_model_type"]).license
    if adapter_cfg:
        info.setdefault("base_model", adapter_cfg.get("base_model_name_or_path"))
        info.setdefault("tuner", str(adapter_cfg.get("peft_type", "lora")).lower())
        info.setdefault("tuner_config", adapter_cfg)
    elif parent:
        info["merged_from"] = parent.name
    return {k: v for k, v in info.items() if v is not None}


def build(src, dest, *, name: str, version: str | None = None, allow_pickle: bool = False,
          require_manifest: bool = False, ref: str | None = None, pip_name: str | None = None) -> dict:
    """Write the artifact of checkpoint `src` into the empty dir `dest`; returns its manifest."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise SwiftlikeError(f"{src}: no such directory")
    info = source_info(src, require_manifest=require_manifest)
    files = publishable_files(src)
    pickles = [rel for rel in files if is_pickle(rel)]
    if pickles and not allow_pickle:
        raise SwiftlikeError(f"{src / pickles[0]}: pickle file ({Path(pickles[0]).suffix}); loading it can run "
                             f"arbitrary code — convert it to safetensors (or pass --allow-pickle)")
    is_adapter = "adapter_config.json" in files
    if is_adapter and "adapter_model.safetensors" not in files and not allow_pickle:
        raise SwiftlikeError(f"{src}: no adapter_model.safetensors (swiftlike publishes safetensors adapters)")
    info.setdefault("kind", "adapter" if is_adapter else "model")
    info["name"] = name
    info["version"] = version or info.get("version") or DEFAULT_VERSION
    check_manifest_fields(info, src / MANIFEST)  # what install refuses is never published or packaged
    for rel, real in files.items():
        link_or_copy(real, dest / rel)
    (dest / "README.md").write_text(card.render(info, ref=ref, pip_name=pip_name), encoding="utf-8")
    return write_manifest(dest, info)


def _json(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SwiftlikeError(f"{path}: invalid JSON ({err})") from None
    return data if isinstance(data, dict) else {}
