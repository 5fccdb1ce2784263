"""`swiftlike adapter merge`: LoRA adapters of one base combined into a new adapter through PEFT's
`add_weighted_adapter`. The result goes into the adapter store like an installed adapter (servable and pushable by
name), its manifest recording the recipe: each source with its manifest's sha256, the method, weights and density.

Everything that can be refused is refused by `plan`, before torch loads: fewer than two adapters, a source that is not
a swiftlike LoRA adapter, different bases or chat templates, ranks or target types the method cannot combine (PEFT's
own rules), weights that do not match the adapters, a density the method does not use, a name already taken.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST
from .checkpoint.manifest import RECIPE_METHODS as METHODS
from .registry import SwiftlikeError

SAME_RANK = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")  # PEFT: "all adapters must have the same r"
USES_DENSITY = ("ties", "dare_linear", "dare_ties", "magnitude_prune")
MERGED = "merged"  # the PEFT adapter name of the result inside the merging model


@dataclass
class Source:
    given: str  # what the user named: an installed adapter or a checkpoint dir
    name: str
    ref: str | None  # the hub reference it was installed from
    path: Path
    manifest: dict
    manifest_sha256: str
    config: dict  # adapter_config.json
    rank: int


@dataclass
class Plan:
    sources: list
    method: str
    weights: list
    density: float | None
    name: str
    overwrite: bool

    def recipe(self) -> dict:
        import peft

        return {"method": self.method, "weights": self.weights, "density": self.density,
                "sources": [{"name": s.name, "ref": s.ref, "manifest_sha256": s.manifest_sha256}
                            for s in self.sources], "library": f"peft {peft.__version__}"}


def plan(sources, *, method: str, name: str, weights=None, density=None, overwrite: bool = False) -> Plan:
    """Every check of a merge, from manifests and adapter configs only (no torch); returns what to merge."""
    from .adapters.store import check_free, check_name

    sources = list(sources)
    if len(sources) < 2:
        raise SwiftlikeError(f"adapter merge: {len(sources)} adapter given; name at least two")
    if method not in METHODS:
        raise SwiftlikeError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    check_name(name)
    if weights is None:
        weights = [1.0] * len(sources)
    weights = [float(w) for w in weights]
    if len(weights) != len(sources):
        raise SwiftlikeError(f"--weights: {len(weights)} given for {len(sources)} adapters; give one per adapter "
                             f"(in the same order)")
    if not all(math.isfinite(w) for w in weights):
        raise SwiftlikeError(f"--weights {weights}: every weight must be a finite number")
    if method in USES_DENSITY:
        if density is None:
            raise SwiftlikeError(f"--method {method} needs --density D: the share of each adapter's weights kept "
                                 f"(0 < D <= 1, e.g. 0.5)")
        density = float(density)
        if not (0 < density <= 1):
            raise SwiftlikeError(f"--density {density}: must be in (0, 1] (the share of weights kept)")
    elif density is not None:
        raise SwiftlikeError(f"--density applies to {', '.join(USES_DENSITY)}; --method {method} uses every "
                             f"weight — drop --density")
    if not overwrite:
        check_free(name)
    found = [_source(s) for s in sources]
    seen = {}
    for src in found:
        real = src.path.resolve()
        if real in seen:
            raise SwiftlikeError(f"{src.given}: the same adapter as {seen[real]}; name each adapter once (use "
                                 f"--weights to weigh it)")
        seen[real] = src.given
    _check_same_base(found)
    _check_combinable(found, method)
    return Plan(found, method, weights, density, name, overwrite)


def _source(given) -> Source:
    """An installed adapter (checked against its seal) or a checkpoint dir with a swiftlike.json."""
    from .adapters import resolve
    from .adapters.store import get
    from .checkpoint import adapter_config, check_manifest_fields, check_manifest_files, parse_manifest, \
        read_manifest_bytes
    from .hub.refs import looks_like_ref

    text = str(given)
    path = Path(text).expanduser()
    if not path.is_dir() and looks_like_ref(text):
        raise SwiftlikeError(f"{text}: a hub reference; install it first (`swiftlike adapter install {text}`) and "
                             f"merge it by name")
    installed = None if path.is_dir() else get(text)  # a name: "no adapter named …" when there is none
    path = Path(resolve(text))
    file = path / MANIFEST
    if not file.is_file():
        raise SwiftlikeError(f"{text}: no {MANIFEST}; merge adapters trained by `swiftlike sft` or installed from a "
                             f"hub")
    data = read_manifest_bytes(file)
    manifest = parse_manifest(data, file)
    check_manifest_fields(manifest, file)
    if manifest.get("kind", "adapter") != "adapter":
        raise SwiftlikeError(f"{text}: a full model, not an adapter; only LoRA adapters can be merged")
    if installed is None and manifest.get("files") is not None:  # a checkpoint dir: its files as it lists them
        from .adapters.checks import verify_file

        listed = check_manifest_files(manifest, file)
        for rel in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            if rel in listed:
                try:
                    verify_file(path / rel, rel, listed[rel])
                except SwiftlikeError as err:
                    raise SwiftlikeError(f"{text}: {err}; the checkpoint changed after it was written") from None
    cfg = adapter_config(path)
    peft_type = str(cfg.get("peft_type", "LORA")).upper()
    if peft_type != "LORA" or manifest.get("tuner") not in (None, "lora", "qlora"):
        raise SwiftlikeError(f"{text}: a {manifest.get('tuner') or peft_type} adapter; only LoRA adapters can be "
                             f"merged (PEFT's add_weighted_adapter)")
    for key, why in (("use_dora", "a DoRA adapter (its magnitude vectors cannot be combined)"),
                     ("target_parameters", "targets nn.Parameter (target_parameters)"),
                     ("use_rslora", "an rsLoRA adapter (PEFT gives the merged adapter alpha = r, which rsLoRA "
                                    "scales by sqrt(r): the result would be wrong)")):
        if cfg.get(key):
            raise SwiftlikeError(f"{text}: {why}; PEFT's add_weighted_adapter cannot merge it")
    r = cfg.get("r")
    pattern = cfg.get("rank_pattern") or {}
    if not isinstance(r, int) or r < 1 or not isinstance(pattern, dict):
        raise SwiftlikeError(f"{path / ADAPTER_CONFIG}: no valid rank `r`; the adapter is damaged")
    rank = max([r, *(v for v in pattern.values() if isinstance(v, int))])
    if installed is not None:
        name, ref = installed.name, installed.ref
    else:
        name, ref = str(manifest.get("name") or path.name), None
    return Source(text, name, ref, path, manifest, hashlib.sha256(data).hexdigest(), cfg, rank)


def _check_same_base(sources: list) -> None:
    first = sources[0]
    for src in sources:
        if not src.manifest.get("base_model_type"):
            raise SwiftlikeError(f"{src.given}: its {MANIFEST} does not say which base it was trained on "
                                 f"(base_model_type); cannot check that the adapters share one")
    for src in sources[1:]:
        a, b = first.manifest, src.manifest
        if a["base_model_type"] != b["base_model_type"]:
            raise SwiftlikeError(f"{first.given} was trained on {a['base_model_type']!r}, {src.given} on "
                                 f"{b['base_model_type']!r}; only adapters of one base can be merged")
        if a.get("base_fingerprint") and b.get("base_fingerprint") and a["base_fingerprint"] != b["base_fingerprint"]:
            raise SwiftlikeError(f"{first.given} and {src.given} were trained on different {a['base_model_type']} "
                                 f"weights (base fingerprints {a['base_fingerprint'][:12]}… and "
                                 f"{b['base_fingerprint'][:12]}…); only adapters of one base can be merged")
        texts = (a.get("template_text"), b.get("template_text"))
        if a.get("template") and b.get("template") and a["template"] != b["template"] or \
                all(texts) and texts[0] != texts[1]:
            raise SwiftlikeError(f"{first.given} was trained with chat template {a['template']!r}, {src.given} with "
                                 f"{b['template']!r}; a merged adapter answers in one chat format — merge adapters "
                                 f"of one template")


def _check_combinable(sources: list, method: str) -> None:
    """PEFT's rules (LoraModel._check_add_weighted_adapter), checked on the configs before anything loads."""
    if method in SAME_RANK and len({s.rank for s in sources}) > 1:
        ranks = ", ".join(f"{s.given}: r={s.rank}" for s in sources)
        raise SwiftlikeError(f"--method {method} needs adapters of one rank ({ranks}); retrain to one rank, or use "
                             f"cat or svd, which combine different ranks")
    kinds = {s.given: "a pattern" if isinstance(s.config.get("target_modules"), str) else "a list"
             for s in sources}
    if len(set(kinds.values())) > 1:
        shown = ", ".join(f"{g}: {k}" for g, k in kinds.items())
        raise SwiftlikeError(f"target_modules mix a regex pattern and a module list ({shown}); PEFT cannot "
                             f"combine them — retrain with the same kind of --target_modules")
    saved: dict = {}
    for src in sources:
        for module in src.config.get("modules_to_save") or ():
            if module in saved:
                raise SwiftlikeError(f"{saved[module]} and {src.given} both train the whole module {module!r} "
                                     f"(modules_to_save); PEFT cannot merge those")
            saved[module] = src.given


def merge_adapters(sources, *, method: str, name: str, weights=None, density=None, overwrite: bool = False,
                   progress=None):
    """Merge `sources` (installed adapter names or checkpoint dirs) into the store as `name`; returns the
    InstalledAdapter. The base loads once, on CPU in float32; only the new adapter is saved."""
    the_plan = plan(sources, method=method, name=name, weights=weights, density=density, overwrite=overwrite)
    say = progress or (lambda msg: None)
    tmp = Path(tempfile.mkdtemp(prefix=f"swiftlike-merge-{name}-"))
    try:
        say(f"loading the base and {len(the_plan.sources)} adapters")
        out = _merge_into(the_plan, tmp)
        from .adapters.store import add

        say(f"adding {name} to the adapter store")
        return add(out, name, replace=overwrite, origin={
            "made_by": f"swiftlike adapter merge --method {method}",
            "sources": [s.name for s in the_plan.sources]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _merge_into(the_plan: Plan, tmp: Path) -> Path:
    """Load the base once with every source, call add_weighted_adapter, write the new adapter dir; returns it."""
    import torch

    from . import checkpoint
    from .adapters import load as load_adapter
    from .infer import load_checkpoint
    from .models.load import quiet_progress
    from .models.options import ModelArguments

    first, rest = the_plan.sources[0], the_plan.sources[1:]
    # from_pretrained without a device map loads on CPU; float32 so that the arithmetic loses nothing
    loaded = load_checkpoint(first.path, options=ModelArguments(torch_dtype="float32"))
    model = loaded.model
    names = ["default"] + [f"source{i}" for i in range(1, len(the_plan.sources))]
    for src, adapter_name in zip(rest, names[1:]):
        model = load_adapter(model, src.path, adapter_name=adapter_name, base_dir=loaded.base_dir,
                             base_model_type=loaded.model_type)
    try:
        model.add_weighted_adapter(names, the_plan.weights, MERGED, combination_type=the_plan.method,
                                   density=the_plan.density)
    except (ValueError, TypeError) as err:  # a rule PEFT has that plan() does not know yet
        raise SwiftlikeError(f"adapter merge: PEFT refused: {err}") from None
    saved = tmp / "peft"
    with torch.no_grad(), quiet_progress():
        model.save_pretrained(saved, selected_adapters=[MERGED], safe_serialization=True)
    made = saved / MERGED if (saved / MERGED).is_dir() else saved  # PEFT saves a non-default adapter in a subdir
    out = tmp / "adapter"
    out.mkdir()
    for rel in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        shutil.move(made / rel, out / rel)
    args = {"model_type": loaded.model_type, "model_dir": str(loaded.base_dir),
            "template": first.manifest.get("template"), "system": first.manifest.get("system"),
            "merged_from": [s.name for s in the_plan.sources], "method": the_plan.method}
    info = _manifest_info(the_plan, model.peft_config[MERGED])
    checkpoint.check_manifest_fields(info, f"{the_plan.name} ({MANIFEST})")
    checkpoint.finalize(out, info, args=args)
    return out


def _manifest_info(the_plan: Plan, config) -> dict:
    first = the_plan.sources[0].manifest
    tuner_config = json.loads(json.dumps(config.to_dict(), default=lambda o: sorted(o) if isinstance(o, set)
                                         else str(o)))
    datasets = list(dict.fromkeys(d for s in the_plan.sources for d in s.manifest.get("datasets") or []))
    info = {"name": the_plan.name, "kind": "adapter", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "stage": "merge", "tuner": "lora", "tuner_config": tuner_config, "datasets": datasets,
            "recipe": the_plan.recipe()}
    for key in ("base_model_type", "base_model", "base_revision", "base_fingerprint", "template", "template_text",
                "system", "license"):  # one base: its licence travels with the merge
        if first.get(key) is not None:
            info[key] = first[key]
    return info
