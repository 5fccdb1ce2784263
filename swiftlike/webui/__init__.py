"""`swiftlike web-ui`: a gradio app over the CLI's own code (train, chat, compare, adapters, export).

Nothing here imports gradio, torch or transformers at import time; `settings` decides whether the UI may start before
any of them load. The tabs run training as `swiftlike sft|pt|rlhf` processes (runs.py), chat through
swiftlike.infer, and the marketplace through swiftlike.adapters.
"""
from .settings import UISettings, resolve_settings

__all__ = ["UISettings", "resolve_settings", "launch"]


def launch(settings: UISettings, *, block: bool = True):
    """Build the app and serve it (imports gradio)."""
    from .app import launch as run

    return run(settings, block=block)
