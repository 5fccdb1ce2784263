"""The plugin registry: specs, hookspecs, plugin manager and name resolution."""
from .core import Registry, get_registry, reset_registry
from .errors import ConflictError, SwiftlikeError, UnknownNameError
from .hookspecs import hookimpl
from .loader import get_plugin_manager, reset_plugin_manager
from .specs import (AdapterSpec, DatasetSpec, HubSpec, ModelSpec, PluginPackSpec, RewardSpec, TemplateSpec,
                    TunerSpec, resolve_callable)

__all__ = [
    "Registry", "get_registry", "reset_registry", "get_plugin_manager", "reset_plugin_manager", "hookimpl",
    "SwiftlikeError", "UnknownNameError", "ConflictError",
    "ModelSpec", "TemplateSpec", "DatasetSpec", "TunerSpec", "HubSpec", "AdapterSpec", "RewardSpec", "PluginPackSpec",
    "resolve_callable",
]
