"""README.md model card with Hugging Face metadata (front matter) for a published adapter or model."""
from __future__ import annotations

import json
import re

# License ids the Hugging Face Hub knows (its model-card spec); any other licence is `license: other` + license_name.
HUB_LICENSES = frozenset({"apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m",
                          "bsd-3-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "gpl-3.0",
                          "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "gemma", "other"})
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", re.ASCII)


def _yaml_str(value) -> str:
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid YAML scalar


def render(info: dict, *, ref: str | None = None, install_name: str | None = None, pip_name: str | None = None) -> str:
    """The card for manifest fields `info`; `ref` (hub reference) or `pip_name` (wheel) say how to install it."""
    name = info.get("name") or "adapter"
    is_adapter = info.get("kind", "adapter") == "adapter"
    base = info.get("base_model")
    base_id = base if isinstance(base, str) and _HUB_ID.fullmatch(base) else None  # local paths are not hub ids
    tuner = info.get("tuner") or ("lora" if is_adapter else "full")
    cfg = info.get("tuner_config") or {}
    tags = ["swiftlike", str(tuner)] + (["peft"] if is_adapter else [])
    if is_adapter and base_id:
        tags.append(f"base_model:adapter:{base_id}")
    # The Hub derives a repo's tags from these: `adapter search --base/--tuner` filters on them server-side
    if info.get("base_model_type"):
        tags.append(f"swiftlike-base:{info['base_model_type']}")
    tags.append(f"swiftlike-tuner:{tuner}")
    front = ["---"]
    if is_adapter:
        front.append("library_name: peft")
    else:
        front.append("library_name: transformers")
    license = info.get("license")
    if license:  # the base model's terms bind the adapter too; the Hub's own ids as is, any other as `other`
        front += [f"license: {license}"] if license in HUB_LICENSES else \
            ["license: other", f"license_name: {_yaml_str(license)}"]
    if base_id:
        front.append(f"base_model: {_yaml_str(base_id)}")
    front.append("pipeline_tag: text-generation")
    front.append("tags:")
    front += [f"- {_yaml_str(t)}" for t in dict.fromkeys(tags)]
    front += search_metadata(info, tuner, cfg)
    front.append("---")

    label = {"lora": "LoRA", "qlora": "QLoRA", "dora": "DoRA"}.get(str(tuner), str(tuner))
    what = (f"A {label} adapter (r={cfg.get('r')}, alpha={cfg.get('lora_alpha')}, "
            f"targets {_targets(cfg)})" if is_adapter and cfg.get("r") else
            f"A {label} adapter" if is_adapter else "A fine-tuned model")
    on = f" for `{info.get('base_model_type')}`" + (f" ([{base_id}](https://huggingface.co/{base_id}))"
                                                     if base_id else "") if info.get("base_model_type") else ""
    recipe = info.get("recipe") if isinstance(info.get("recipe"), dict) else None
    made = f"combined from {len(recipe['sources'])} adapters" if recipe else "trained"
    lines = [*front, "", f"# {name}", "", f"{what}{on}, {made} with [swiftlike](https://pypi.org/project/swiftlike/)."]
    lines += recipe_lines(recipe)
    lines += ["", "## Use it with swiftlike", "", "```bash"]
    published = bool(ref or pip_name or install_name)
    alias = install_name or (name if published else "path/to/this/checkpoint")
    if pip_name:
        lines.append(f"pip install {pip_name}   # registers the adapter `{alias}`")
    elif ref:
        lines.append(f"swiftlike adapter install {ref} --name {alias}   # sha256 of every file verified")
    lines += [f"swiftlike infer --ckpt_dir {alias}",
              *([f"swiftlike merge-lora --ckpt_dir {alias}"] if is_adapter else []),
              *([] if published else [f"swiftlike adapter push {alias} hf:ORG/NAME   # publish it"]), "```"]
    if ref:
        lines += ["", f"`swiftlike infer --ckpt_dir {ref}` installs it on first use."]
    if is_adapter:
        lines += ["", "```python", "import swiftlike.adapters", "from swiftlike import get_model_tokenizer",
                  "", f"model, tokenizer = get_model_tokenizer({_yaml_str(info.get('base_model_type') or 'BASE')})",
                  f"model = swiftlike.adapters.load(model, swiftlike.adapters.resolve({_yaml_str(ref or alias)}))",
                  "```", "", "With PEFT alone:", "", "```python", "from peft import PeftModel",
                  "from transformers import AutoModelForCausalLM", "",
                  f"base = AutoModelForCausalLM.from_pretrained({_yaml_str(base_id or 'BASE_MODEL')})",
                  "model = PeftModel.from_pretrained(base, \"path/to/this/adapter\")", "```"]
    lines += ["", "## Training", "", "| | |", "|---|---|"]
    rows = {"base model type": info.get("base_model_type"), "base model": base,
            "base revision": info.get("base_revision"), "base weights fingerprint": info.get("base_fingerprint"),
            "base model licence": info.get("license"),
            "chat template": info.get("template"), "tuner": tuner,
            "datasets": ", ".join(map(str, info.get("datasets") or [])) or None, "steps": info.get("step"),
            "version": info.get("version"), "created": info.get("created")}
    rows.update({k: round(v, 4) if isinstance(v, float) else v for k, v in (info.get("metrics") or {}).items()})
    lines += [f"| {k} | `{v}` |" for k, v in rows.items() if v not in (None, "")]
    lines += evaluation_lines(info.get("evaluations"))
    lines += ["", "`swiftlike.json` lists the sha256 and size of every file; swiftlike verifies them on install and "
              "refuses to load the adapter on another base model (`--force` overrides)."]
    return "\n".join(lines) + "\n"


def search_metadata(info: dict, tuner, cfg) -> list[str]:
    """A `swiftlike:` block of the front matter: what a search row shows (the Hub returns it as cardData in the
    same listing request, so no file is fetched per hit)."""
    fields = {"base_model_type": info.get("base_model_type"), "tuner": tuner,
              "rank": cfg.get("r") if isinstance(cfg.get("r"), int) else None, "version": info.get("version")}
    lines = [f"  {k}: {v if isinstance(v, int) else _yaml_str(v)}" for k, v in fields.items() if v is not None]
    return ["swiftlike:", *lines] if lines else []


def recipe_lines(recipe) -> list[str]:
    """How `swiftlike adapter merge` made the adapter: the method, its parameters and each source."""
    if not recipe:
        return []
    density = f", density {recipe['density']}" if recipe.get("density") is not None else ""
    lines = ["", "## Recipe", "", f"Merged with PEFT's `add_weighted_adapter` (method `{recipe.get('method')}`"
             f"{density}) from:", "", "| source | ref | weight | manifest sha256 |", "|---|---|---|---|"]
    for src, weight in zip(recipe.get("sources") or [], recipe.get("weights") or []):
        ref = f"`{src['ref']}`" if src.get("ref") else "-"
        lines.append(f"| `{src.get('name')}` | {ref} | {weight:g} | `{str(src.get('manifest_sha256'))[:16]}…` |")
    return lines


def evaluation_lines(evaluations) -> list[str]:
    """The `swiftlike eval` results of a manifest as a markdown section (the newest first)."""
    if not evaluations:
        return []
    lines = ["", "## Evaluation", ""]
    for e in reversed(evaluations):
        data = ", ".join(f"`{d.get('name')}` ({d.get('rows')} rows, sha256 `{str(d.get('sha256'))[:12]}…`)"
                         for d in e.get("datasets") or [])
        tasks = ", ".join(f"`{t}`" for t in e.get("tasks") or [])
        on = f"on {data or tasks or 'its data'}" + (f" through {e['backend']}" if e.get("backend") not in
                                                      (None, "native") else "")
        lines += [f"{e.get('date', '')} {on}:", ""]
        base = e.get("baseline") or {}
        lines += ["| metric | this adapter | base model |" if base else "| metric | value |",
                  "|---|---|---|" if base else "|---|---|"]
        for key, value in (e.get("metrics") or {}).items():
            cells = [_number(value)] + ([_number(base.get(key))] if base else [])
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines[:-1]


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _targets(cfg: dict) -> str:
    targets = cfg.get("target_modules")
    if isinstance(targets, (list, tuple, set)):  # PEFT saves full module paths; the layer names say it
        return ", ".join(sorted({str(t).rsplit(".", 1)[-1] for t in targets}))
    return str(targets)
