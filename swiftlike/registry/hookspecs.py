"""The plugin contract. Each hook is a collector: swiftlike calls it with a `register` callable."""
import pluggy

hookspec = pluggy.HookspecMarker("swiftlike")
hookimpl = pluggy.HookimplMarker("swiftlike")


@hookspec
def register_models(register):
    """register(name, hf=..., ms=..., template=..., lora_target_modules=..., ...) — keys of [models.NAME]."""


@hookspec
def register_templates(register):
    """register(name, chat_template=... | file=..., default_system=..., stop_words=[...])."""


@hookspec
def register_datasets(register):
    """register(name, hf=... | ms=... | path=..., format=..., split=..., subsets=[...])."""


@hookspec
def register_tuners(register):
    """register(name, prepare=callable(model, args) -> model)."""


@hookspec
def register_hubs(register):
    """register(name, factory=callable() -> hub object)."""


@hookspec
def register_adapters(register):
    """register(name, path=..., base_model_type=...)."""


@hookspec
def register_rewards(register):
    """register(name, func=callable(completions, **columns) -> list[float], summary=...) — GRPO reward functions."""


@hookspec
def register_commands(cli):
    """Add click commands to the `swiftlike` group: `@cli.command()`."""


@hookspec
def register_plugin_index(register):
    """register(name, pip=..., sha256=..., summary=...) — entries of the plugin-pack marketplace index."""
