"""`swiftlike serve`: one base model, many tenants, LoRA adapters hot-swapped per request behind an OpenAI-compatible
API. Modules: arguments (the options), runtime (what a server holds), app (routes), generation (one request), engine (continuous batching),
kvcache, lora (batched multi-LoRA), pool (resident adapters), auth (tenants), schemas, errors, metrics, text,
sampling."""
from __future__ import annotations

__all__ = ["ServeArguments", "build", "serve"]


def __getattr__(name):  # `import swiftlike.serve` stays light; torch comes with the runtime
    if name == "ServeArguments":
        from .arguments import ServeArguments

        return ServeArguments
    raise AttributeError(name)


def build(opts):
    """(runtime, FastAPI app) for `opts`: the model is loaded, the engine starts with the app."""
    from .app import create_app
    from .runtime import Runtime

    rt = Runtime(opts)
    rt.warm_up()
    return rt, create_app(rt)


def serve(opts, log_level: str | None = None) -> None:
    """Load, print what is served (and whether it is open), and run uvicorn until interrupted."""
    import sys

    import uvicorn

    rt, app = build(opts)
    print(rt.banner(), file=sys.stderr, flush=True)
    uvicorn.run(app, host=opts.host, port=opts.port, log_level=log_level or opts.log_level,
                timeout_graceful_shutdown=5)
