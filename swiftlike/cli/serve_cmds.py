"""`swiftlike serve`: an OpenAI-compatible server for one base model and many LoRA adapters."""
from __future__ import annotations

import click

from ..serve.arguments import ServeArguments
from .options import build, command_for, options_from


@command_for(ServeArguments, "serve", short_help="OpenAI-compatible server: one base, many LoRA adapters.")
@options_from(ServeArguments)
def serve(**kwargs):
    """Serve a base model and LoRA adapters behind an OpenAI-compatible API (/v1/chat/completions,
    /v1/completions, /v1/models), hot-swapping adapters per request and batching requests for different adapters
    together. Without --tenants it is open and listens on loopback only."""
    from ..serve import serve as run

    args = build(ServeArguments, kwargs)
    if args.log_level not in ("critical", "error", "warning", "info", "debug"):
        raise click.BadParameter("use critical, error, warning, info or debug", param_hint="--log_level")
    run(args)
