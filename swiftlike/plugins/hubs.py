"""Built-in hubs: Hugging Face, ModelScope and a local/shared-directory hub."""
from ..registry.hookspecs import hookimpl


@hookimpl
def register_hubs(register):
    register("hf", factory="swiftlike.hub.hf:HFHub", summary="Hugging Face Hub (huggingface_hub)")
    register("ms", factory="swiftlike.hub.ms:MSHub", summary="ModelScope (modelscope)")
    register("local", factory="swiftlike.hub.local:LocalHub",
             summary="a directory hub at --hub_root / SWIFTLIKE_LOCAL_HUB (works on a shared filesystem)")
