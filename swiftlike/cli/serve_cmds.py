"""`swiftlike serve`: an OpenAI-compatible server for one base model and many LoRA adapters."""
from __future__ import annotations

import click

from .arguments import ListArgsCommand


class _ServeCommand(ListArgsCommand):
    list_options = {"--adapters", "--lora_modules", "--lora-modules"}


@click.command("serve", cls=_ServeCommand, short_help="OpenAI-compatible server: one base, many LoRA adapters.")
@click.option("--model_type", "--model-type")
@click.option("--model", "--model_id_or_path", help="A model dir or hub id (type inferred).")
@click.option("--model_cache_dir", "--model-cache-dir", help="The base weights are here.")
@click.option("--model_revision", "--model-revision")
@click.option("--hub", type=click.Choice(["hf", "ms"]), default=None)
@click.option("--template", "--template_type", "template", help="Template of the base model (adapters use their own).")
@click.option("--system", help="Default system prompt of the base model's template.")
@click.option("--torch_dtype", "--dtype", "torch_dtype", default="auto", show_default=True)
@click.option("--trust_remote_code", is_flag=False, flag_value=True, type=click.BOOL, default=False)
@click.option("--adapters", "--lora_modules", "--lora-modules", "adapters", multiple=True,
              help="NAME=DIR_OR_REF … (loaded lazily on first use).")
@click.option("--tenants", type=click.Path(dir_okay=False), help="tenants.toml: API keys (sha256) and their adapters.")
@click.option("--admin_key_env", "--admin-key-env", help="Environment variable holding the admin key.")
@click.option("--served_model_name", "--served-model-name", help="Name of the base model in the API.")
@click.option("--max_resident", "--max-resident", "--max_loras", "max_resident", type=int, default=8,
              show_default=True, help="Adapters kept in memory (LRU; in-use adapters are never evicted).")
@click.option("--max_batch_size", "--max-batch-size", "--max_num_seqs", "max_batch_size", type=int, default=32,
              show_default=True, help="Requests decoded together.")
@click.option("--max_queue", "--max-queue", type=int, default=256, show_default=True,
              help="Requests waiting beyond the batch; more are answered 429.")
@click.option("--max_tokens", "--max-tokens", type=int, default=2048, show_default=True,
              help="Cap on max_tokens per request.")
@click.option("--num_threads", "--num-threads", type=int, default=None,
              help="torch CPU threads (default: all cores; on a shared machine fewer is often faster).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--force", is_flag=True, help="Serve adapters trained on another base.")
@click.option("--log_level", "--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(log_level, adapters, **kw):
    """Serve a base model and LoRA adapters behind an OpenAI-compatible API (/v1/chat/completions,
    /v1/completions, /v1/models), hot-swapping adapters per request and batching requests for different adapters
    together. Without --tenants it is open and listens on loopback only."""
    from ..serve import ServeOptions, serve as run

    run(ServeOptions(adapters=list(adapters), **kw), log_level=log_level)
