"""`swiftlike serve`: one base model, many tenants, LoRA adapters hot-swapped per request behind an OpenAI-compatible
API. Modules: arguments (the options), runtime (what a server holds), app (routes), http (Host/Origin/body guards,
uvicorn limits), generation (one request), limits (sizes), pool (resident adapters), render and render_worker
(adapters' own templates, out of process), auth (tenants), schemas, errors, metrics, text, vllm_engine (vLLM as the
engine: --infer_backend vllm). The batched multi-LoRA engine it runs (engine, kvcache, lora, sampling, memory) lives
one layer down, in swiftlike.infer."""
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

    opts.check_backend()
    if opts.use_vllm:  # vLLM runs the model; everything in front of it stays swiftlike's
        from .vllm_engine import VllmRuntime as Runtime
    else:
        from .runtime import Runtime
    rt = Runtime(opts)
    rt.warm_up()
    return rt, create_app(rt)


def serve(opts, log_level: str | None = None) -> None:
    """Load, print what is served (and whether it is open), and run uvicorn until interrupted."""
    import sys

    import uvicorn

    from .http import uvicorn_config

    rt, app = build(opts)
    print(rt.banner(), file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn_config(app, opts, log_level=log_level or opts.log_level)).run()
