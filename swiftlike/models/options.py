"""The model options every command shares (sft, infer, serve, merge-lora, export): one definition, one set of
defaults. The CLI builds its flags from these dataclass fields (swiftlike.cli.options), so the Python API and the
command line cannot drift."""
from __future__ import annotations

import os
import sys
from dataclasses import MISSING, dataclass, field, fields
from typing import Optional

from ..registry import SwiftlikeError, get_registry


def arg(default=MISSING, help="", aliases=(), **kw):
    """A dataclass field with its CLI help and alias spellings (ms-swift/LLaMA-Factory names)."""
    meta = {"help": help, "aliases": tuple(aliases), **kw}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def list_fields(cls) -> set[str]:
    return {f.name for f in fields(cls) if f.default_factory is list or isinstance(f.default, list)
            or f.type in ("list", list)}


@dataclass
class ModelArguments:
    model_type: Optional[str] = arg(None, "A registered model type (swiftlike models list).")
    model: Optional[str] = arg(None, "A local model dir or a hub id (ORG/NAME); the type is inferred.",
                               aliases=["model_id_or_path", "model_name_or_path"])
    model_cache_dir: Optional[str] = arg(None, "The weights are already in this directory.")
    model_revision: Optional[str] = arg(None, "Hub revision (branch, tag or commit).")
    hub: Optional[str] = arg(None, "hf, ms or a plugin's hub (default: SWIFTLIKE_HUB / USE_HF, else hf).",
                             aliases=["hub_name"])
    use_hf: Optional[bool] = arg(None, "ms-swift 3/4: true = --hub hf, false = --hub ms.")
    cache_dir: Optional[str] = arg(None, "Hub cache directory.")
    template: Optional[str] = arg(None, "Chat template (default: the checkpoint's, else the model type's).",
                                  aliases=["template_type"])
    system: Optional[str] = arg(None, "System prompt, or a .txt file holding it (a dataset's own system wins).")
    torch_dtype: str = arg("auto", "auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.",
                           aliases=["dtype"])
    trust_remote_code: bool = arg(False, "Allow the model repo's own Python code.")
    attn_impl: str = arg("auto", "Attention: auto (sdpa; per-sequence sdpa for padding-free training batches), "
                         "sdpa, eager, flash_attention_2.", aliases=["attn_implementation"])

    def __post_init__(self):
        # one value where a list is expected is that one value (SftArguments(dataset="a.jsonl"))
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and f.type in ("list", list):
                setattr(self, f.name, [value])
            elif isinstance(value, tuple) and f.type in ("list", list):
                setattr(self, f.name, list(value))
        if self.use_hf is not None and self.hub is None:
            self.hub = "hf" if self.use_hf else "ms"
        # ms-swift spells FlashAttention 2 `flash_attn`, LLaMA-Factory `fa2`; transformers `flash_attention_2`
        self.attn_impl = {"flash_attn": "flash_attention_2", "fa2": "flash_attention_2"}.get(self.attn_impl,
                                                                                               self.attn_impl)
        if self.system and self.system.endswith(".txt") and os.path.isfile(os.path.expanduser(self.system)):
            # ms-swift: --system may name a .txt file holding the prompt (its GRPO examples do)
            with open(os.path.expanduser(self.system), encoding="utf-8") as f:
                self.system = f.read()

    def model_arguments(self) -> "ModelArguments":
        """Just the model options of a command's arguments (InferArguments, MergeArguments...)."""
        names = {f.name for f in fields(ModelArguments)}
        return ModelArguments(**{k: v for k, v in vars(self).items() if k in names})

    def check_model_options(self) -> None:
        """Cheap checks with one-line errors, before anything loads."""
        hubs = get_registry().hubs
        if self.hub is not None and self.hub not in hubs:
            raise SwiftlikeError(f"--hub {self.hub!r}: not a registered hub; one of {', '.join(sorted(hubs.names()))}")
        from .load import DTYPES

        if (self.torch_dtype or "auto").lower() not in DTYPES:
            raise SwiftlikeError(f"--torch_dtype {self.torch_dtype!r}: use {', '.join(DTYPES)}")

    def resolve_model(self):
        """The base model's ResolvedModel (downloads through the hub when needed)."""
        from .resolve import resolve_model

        model_type = self.model_type
        if model_type and (self.model or self.model_cache_dir) and model_type not in get_registry().models:
            # ms-swift 3/4 --model_type names an architecture family (llama, qwen2_5...), not a catalog entry
            print(f"swiftlike: --model_type {model_type} is not a swiftlike model type; taking the type from "
                  f"--model", file=sys.stderr)
            model_type = None
        return resolve_model(model_type, self.model, hub=self.hub, revision=self.model_revision,
                             cache_dir=self.cache_dir, model_cache_dir=self.model_cache_dir)
