"""Find the weights for a model type or `--model`: local dir, hub cache/download, or a registered source."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..paths import swiftlike_home
from ..registry import ModelSpec, SwiftlikeError, get_registry, resolve_callable


@dataclass
class ResolvedModel:
    spec: ModelSpec
    path: Path
    origin: str  # "local" | "hf" | "ms" | "source"


def _spec_for_hub_id(repo_id: str) -> ModelSpec | None:
    for spec in get_registry().models:
        if repo_id in (spec.hf, spec.ms) or repo_id.lower() in ((spec.hf or "").lower(), (spec.ms or "").lower()):
            return spec
    return None


def infer_spec(path: Path) -> ModelSpec:
    """The model type of a local dir: by its name matching a catalog hub id, else by architecture."""
    name = path.name.lower()
    for spec in get_registry().models:
        for repo in (spec.hf, spec.ms):
            if repo and repo.split("/")[-1].lower() == name:
                return spec
    config = path / "config.json"
    archs = []
    if config.exists():
        archs = json.loads(config.read_text()).get("architectures") or []
    # a reward model (Skywork-Reward: LlamaForSequenceClassification) chats like its causal-LM family
    family = set(archs) | {a.replace("ForSequenceClassification", "ForCausalLM") for a in archs}
    candidates = [s for s in get_registry().models if family & set(s.architectures)]
    if len(candidates) == 1:
        return candidates[0]
    # Unknown to the catalog: train it with the tokenizer's own chat template.
    return ModelSpec(name=path.name, template="auto", architectures=archs, plugin="(inferred)")


def resolve_model(model_type: str | None = None, model: str | None = None, *, hub: str | None = None,
                  revision: str | None = None, cache_dir: str | None = None,
                  model_cache_dir: str | None = None) -> ResolvedModel:
    if model_cache_dir:  # ms-swift: "the weights are already here"
        path = Path(model_cache_dir).expanduser()
        if not (path / "config.json").exists():
            raise SwiftlikeError(f"--model_cache_dir {path}: no config.json there; point it at a model directory")
        spec = get_registry().models.get(model_type) if model_type else infer_spec(path)
        return ResolvedModel(spec, path, "local")
    if model:
        path = Path(model).expanduser()
        if path.exists():
            if not (path / "config.json").exists():
                raise SwiftlikeError(f"--model {path}: no config.json there; point it at a model directory")
            spec = get_registry().models.get(model_type) if model_type else infer_spec(path)
            return ResolvedModel(spec, path, "local")
        if model.count("/") != 1:
            raise SwiftlikeError(f"--model {model!r} is neither a directory nor a hub id (ORG/NAME)")
        spec = get_registry().models.get(model_type) if model_type else _spec_for_hub_id(model)
        if spec is None:
            spec = ModelSpec(name=model.split("/")[-1].lower(), hf=model, ms=model, template="auto",
                             plugin="(inferred)")
        return _download(spec, model, hub, revision, cache_dir)
    if not model_type:
        raise SwiftlikeError("give --model_type NAME or --model DIR_OR_HUB_ID (see `swiftlike models list`)")
    spec = get_registry().models.get(model_type)
    if spec.source:
        cached = _hf_cached(spec, revision, cache_dir)
        if cached:
            return ResolvedModel(spec, cached, "hf")
        build = resolve_callable(spec.source)
        return ResolvedModel(spec, Path(build(spec, swiftlike_home() / "models")), "source")
    return _download(spec, None, hub, revision, cache_dir)


def _download(spec: ModelSpec, repo_id: str | None, hub: str | None, revision, cache_dir) -> ResolvedModel:
    from ..hub import default_hub, snapshot_download

    hub = hub or default_hub()
    repo_id = repo_id or (spec.hf if hub == "hf" else spec.ms) or spec.hf or spec.ms
    if repo_id is None:
        raise SwiftlikeError(f"model type {spec.name!r} has no {hub} id; try --hub {'ms' if hub == 'hf' else 'hf'}")
    path = snapshot_download(repo_id, hub=hub, revision=revision or spec.revision, cache_dir=cache_dir)
    return ResolvedModel(spec, path, hub)


def _hf_cached(spec: ModelSpec, revision, cache_dir) -> Path | None:
    if not spec.hf:
        return None
    try:
        import huggingface_hub

        return Path(huggingface_hub.snapshot_download(spec.hf, revision=revision or spec.revision,
                                                      cache_dir=cache_dir, local_files_only=True))
    except Exception:
        return None
