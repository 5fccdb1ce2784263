"""Write a template next to saved weights: chat_template.jinja plus stop ids in generation_config.json."""
from __future__ import annotations

import json
from pathlib import Path


def save_template(directory, template) -> Path:
    """Write `chat_template.jinja` (generation markers stripped) into `directory` and merge the template's stop
    token ids into `generation_config.json` (created when missing). Returns the jinja path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "chat_template.jinja"
    path.write_text(template.chat_template_for_export(), encoding="utf-8")
    if template.tokenizer is None:
        return path  # stop ids are tokenizer-specific; nothing to merge without one
    stop_ids = template.stop_token_ids
    gen_path = directory / "generation_config.json"
    config = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.exists() else {}
    existing = config.get("eos_token_id")
    existing = [] if existing is None else existing if isinstance(existing, list) else [existing]
    merged = list(existing) + [i for i in stop_ids if i not in existing]
    config["eos_token_id"] = merged[0] if len(merged) == 1 else merged
    if config.get("pad_token_id") is None and getattr(template.tokenizer, "pad_token_id", None) is not None:
        config["pad_token_id"] = template.tokenizer.pad_token_id
    gen_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path
