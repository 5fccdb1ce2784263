"""What a server holds: the base model (its Linear layers wrapped for batched LoRA), tokenizer and template, the
adapter pool, the engine, tenants and limits."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..infer.engine import Engine
from ..infer.lora import LoraContext, ResidentAdapter, lora_config, read_lora, wrap_linears
from ..infer.memory import human
from ..registry import SwiftlikeError
from .arguments import ServeArguments, is_loopback
from .auth import Auth
from .http import answered_hosts
from .limits import kv_budget, parse_size
from .metrics import Metrics
from .pool import AdapterPool
from .render import TemplateRenderer


def resolve_source(source: str, base=None) -> Path:
    """A local adapter dir, an installed adapter name or a hub reference, always through the marketplace's resolver
    (a directory inside the adapter store gets its seal checked like a name); `base` (the base model dir) lets it
    refuse a wrong base before installing anything. The signature policy of `adapter install` applies to whatever
    it resolves to: a bad signature is refused, and with require_signature = true in config.toml an unsigned or
    untrusted adapter too (an adapter installed before the setting was turned on included)."""
    from ..adapters import resolve
    from ..adapters.signing import check_directory, enforce
    from ..settings import require_signature

    require = require_signature()  # read first: a broken config.toml is refused before anything is installed
    path = Path(resolve(str(Path(source).expanduser()) if Path(source).expanduser().is_dir() else source,
                        base=str(base) if base is not None else None)).resolve()
    try:
        enforce(check_directory(path), require=require)
    except SwiftlikeError as err:
        raise SwiftlikeError(f"adapter {source}: {err}") from None
    return path


def parse_adapter_arg(text: str) -> tuple[str, str]:
    import re

    name, sep, source = text.partition("=")
    if not sep:  # a bare dir or ref: named after its last path component
        source = text
        name = Path(text.rstrip("/")).name or text
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name) or not source:
        raise SwiftlikeError(f"--adapters {text!r}: use NAME=DIR_OR_REF (NAME: letters, digits, . _ -)")
    return name, source


class Runtime:
    def __init__(self, opts: ServeArguments):
        from ..checkpoint import checkpoint_template
        from ..templates import get_template

        self.opts = opts
        opts.check_model_options()
        self.auth = Auth.load(opts.tenants, opts.admin_key_env)
        if self.auth.open and not is_loopback(opts.host):
            raise SwiftlikeError(f"--host {opts.host}: without --tenants the server has no keys, so it only listens "
                                 f"on loopback (127.0.0.1); give --tenants tenants.toml to serve other machines")
        for flag in ("max_resident", "max_batch_size", "max_queue", "max_tokens", "max_connections"):
            if getattr(opts, flag) < 1:
                raise SwiftlikeError(f"--{flag} must be at least 1")
        for flag in ("template_timeout", "read_timeout"):
            if not getattr(opts, flag) > 0:
                raise SwiftlikeError(f"--{flag} must be more than 0 seconds")
        self.max_body = parse_size(opts.max_body_size, "max_body_size")
        self.hosts = answered_hosts(opts.host, opts.allowed_hosts, is_loopback(opts.host))
        self.cors = frozenset(o.rstrip("/") for o in opts.cors_origins or [])
        if opts.num_threads:
            import torch

            torch.set_num_threads(opts.num_threads)
        self.resolved = opts.resolve_model()
        self.shared = None
        if opts.shared_state:  # checked (directory, file, base) before the model loads
            from .shared import Replication

            self.shared = Replication(opts.shared_state, opts.served_model_name or self.resolved.spec.name,
                                      opts.sync_interval)
        self.load_model()
        spec, system = checkpoint_template(None, template=opts.template, system=opts.system,
                                           default=self.resolved.spec.template)
        self.template = get_template(spec, self.tokenizer, system=system)
        self.base_name = opts.served_model_name or self.resolved.spec.name
        self._fingerprint = None
        self.metrics = Metrics()
        self.start_engine()
        self.pool = AdapterPool(self.load_adapter, self.resolve_source, opts.max_resident,
                                on_drop=lambda a: self.engine.forget_adapter(a.uid),
                                on_change=self.ctx.set_resident)
        # parsing, rendering and tokenising run here, off the event loop (a few threads: the tokenizer releases the
        # GIL, and more would only queue behind it)
        self.prep = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="swiftlike-prep")
        self.renderer = TemplateRenderer(timeout=opts.template_timeout, max_chars=2 * self.max_body + (1 << 20))
        self.inflight = 0  # admitted requests not finished yet (waiting for an adapter, queued or running)
        self.max_inflight = opts.max_batch_size + opts.max_queue
        self.started = int(time.time())
        for text in opts.adapters or []:
            name, source = parse_adapter_arg(text)
            if name == self.base_name:
                raise SwiftlikeError(f"--adapters {text}: {name!r} is the base model's name")
            if name in self.pool:
                raise SwiftlikeError(f"--adapters: {name!r} given twice")
            path = self.resolve_source(source)
            self.check_adapter(path)
            self.pool.register(name, source, path)
        if self.shared:  # what the admin API changed on any replica, on top of --adapters
            self.shared.attach(self)

    # -- the model and the engine (vllm_engine.VllmRuntime runs vLLM instead) -----------------------------------
    def load_model(self) -> None:
        """The tokenizer, the base model with its Linear layers wrapped for batched LoRA, the context length."""
        from ..models.load import load_model_tokenizer

        opts = self.opts
        model, self.tokenizer = load_model_tokenizer(resolved=self.resolved, torch_dtype=opts.torch_dtype,
                                                     trust_remote_code=opts.trust_remote_code)
        model.eval()
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        kinds = set(getattr(config, "layer_types", None) or ["full_attention"])
        if kinds != {"full_attention"}:
            raise SwiftlikeError(f"{self.resolved.spec.name}: attention layers {sorted(kinds)}; swiftlike serve "
                                 f"batches full-attention models only")
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 4096)
        self.ctx = LoraContext()
        self.wrapped = wrap_linears(model, ctx=self.ctx)
        self.model = model

    def start_engine(self) -> None:
        """The continuous-batching engine and its KV cache budget (started with the app)."""
        opts, model = self.opts, self.model
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(model.parameters()).device
        self.max_kv_bytes, self.kv_budget_source = kv_budget(opts.max_kv_memory, device)
        self.engine = Engine(model, self.ctx, max_batch_size=opts.max_batch_size, max_queue=opts.max_queue,
                             pad_token_id=pad, max_kv_bytes=self.max_kv_bytes, context_length=self.context_length)
        if self.engine.kv_token_limit(0) < 2:
            raise SwiftlikeError(f"--max_kv_memory {opts.max_kv_memory}: {human(self.max_kv_bytes)} cannot hold even "
                                 f"one token of KV cache ({self.engine.kv_bytes_per_token} bytes per token)")

    # -- adapters -----------------------------------------------------------------------------------------------
    def resolve_source(self, source: str) -> Path:
        return resolve_source(source, None if self.opts.force else self.resolved.path)

    def base_fingerprint(self) -> str:
        if self._fingerprint is None:
            from ..checkpoint import base_fingerprint

            self._fingerprint = base_fingerprint(self.resolved.path)
        return self._fingerprint

    def check_adapter(self, path: Path) -> dict:
        """Refuse early what cannot be served: not LoRA, DoRA, another base. Returns the manifest."""
        from ..checkpoint import check_base, read_manifest

        lora_config(path)
        manifest = read_manifest(path)
        fingerprint = self.base_fingerprint() if manifest.get("base_fingerprint") and not self.opts.force else None
        check_base(manifest, base_model_type=self.resolved.spec.name, fingerprint=fingerprint, force=self.opts.force,
                   where=f"{path}: adapter")
        return manifest

    def adapter_template(self, path: Path):
        """The template the adapter trained with (exactly as `swiftlike infer` picks it), else the base model's."""
        from ..checkpoint import checkpoint_template, read_manifest
        from ..templates import get_template

        spec, system = checkpoint_template(path, default=self.template.spec)
        if spec is self.template.spec:
            return self.template
        template = get_template(spec, self.tokenizer, system=system)
        text = read_manifest(path).get("template_text")
        if isinstance(text, str) and text:  # the adapter's own jinja: untrusted, rendered out of process
            return IsolatedTemplate(template, self.renderer)
        return template

    def load_adapter(self, name: str, version: int, path: Path) -> ResidentAdapter:
        """Read an adapter into memory (blocking; the pool calls it in a worker thread)."""
        from ..adapters import resolve

        t0 = time.perf_counter()
        # a store copy is checked against its seal (else fully re-hashed) at every load, not only when its name was
        # resolved: serve loads lazily and again after an eviction, and the files may have changed in between
        resolve(str(path))
        self.check_adapter(path)
        modules = read_lora(path, self.wrapped)
        template = self.adapter_template(path)
        nbytes = sum(m.A.numel() * m.A.element_size() + m.B.numel() * m.B.element_size() for m in modules.values())
        rank = max(m.A.shape[0] for m in modules.values())
        return ResidentAdapter(name, version, path, modules, template, rank, nbytes, time.perf_counter() - t0)

    # -- start-up -----------------------------------------------------------------------------------------------
    def banner(self) -> str:
        o = self.opts
        lines = [f"swiftlike serve: {self.base_name} ({self.resolved.origin}: {self.resolved.path}), template "
                 f"{self.template.name}, context {self.context_length}",
                 f"  adapters: {', '.join(self.pool.names()) or '(none yet)'}; max_resident {o.max_resident}, "
                 f"max_batch_size {o.max_batch_size}, max_queue {o.max_queue}, max_tokens {o.max_tokens}",
                 f"  KV cache budget {human(self.max_kv_bytes)} ({self.kv_budget_source}; "
                 f"{self.engine.kv_bytes_per_token // 1024} KiB per token); bodies up to {human(self.max_body)}"]
        if self.auth.open:
            admin = "adapter admin needs the admin key" if self.auth.admin_sha256 else \
                "so can adapter admin (POST/DELETE /v1/adapters)"
            lines.append(f"  WARNING: no --tenants: open server, loopback only — any local process may call it, "
                         f"{admin}")
        else:
            lines.append(f"  tenants: {', '.join(sorted(self.auth.tenants)) or '(none)'}; admin key "
                         f"{'set' if self.auth.admin_sha256 else 'not set (adapter admin disabled)'}")
        if self.shared:
            refused = sorted(self.shared.refused)
            refused = f"; REFUSED here (see above): {', '.join(refused)}" if refused else ""
            lines.append(f"  shared state {self.shared.state.path} (generation {self.shared.generation}), looked at "
                         f"every {self.shared.interval:g} s{refused}")
        lines.append(f"  OpenAI API at http://{o.host}:{o.port}/v1")
        return "\n".join(lines)

    def close(self) -> None:
        """Stop what the runtime started besides the engine (render workers, prep threads)."""
        self.renderer.close()
        self.prep.shutdown(wait=False, cancel_futures=True)

    def warm_up(self) -> None:
        """One tiny forward, so the first request does not pay for lazy initialisation."""
        import torch

        with torch.inference_mode():
            ids = torch.tensor([[self.engine.pad_token_id]], device=self.engine.device)
            self.model(input_ids=ids, use_cache=False)


class IsolatedTemplate:
    """A Template whose jinja came with an adapter: rendered by the worker processes (time and size limits)."""

    def __init__(self, template, renderer: TemplateRenderer):
        self.template = template
        self.renderer = renderer

    def __getattr__(self, name):  # name, spec, stop words and ids: the wrapped template's
        return getattr(self.template, name)

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        t = self.template
        # the context Template.render builds, as plain data for the worker
        context = {**t.special_tokens(), **t.render_kwargs, "messages": t.prepare_messages(messages),
                   "add_generation_prompt": add_generation_prompt, "tools": None}
        return self.renderer.render(t.source, context)
