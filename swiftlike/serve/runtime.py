"""What a server holds: the base model (its Linear layers wrapped for batched LoRA), tokenizer and template, the
adapter pool, the engine, tenants and limits."""
from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..registry import SwiftlikeError
from .auth import Auth
from .engine import Engine
from .lora import Adapter, LoraContext, drop_cached, lora_config, read_lora, wrap_linears
from .metrics import Metrics
from .pool import AdapterPool

@dataclass
class ServeOptions:
    model_type: Optional[str] = None
    model: Optional[str] = None
    model_cache_dir: Optional[str] = None
    model_revision: Optional[str] = None
    hub: Optional[str] = None
    template: Optional[str] = None
    system: Optional[str] = None
    torch_dtype: str = "auto"
    trust_remote_code: bool = False
    adapters: list = field(default_factory=list)  # "NAME=DIR_OR_REF"
    tenants: Optional[str] = None
    admin_key_env: Optional[str] = None
    served_model_name: Optional[str] = None
    max_resident: int = 8
    max_batch_size: int = 32
    max_queue: int = 256
    max_tokens: int = 2048
    num_threads: Optional[int] = None  # torch intra-op threads (default: torch's choice, all cores)
    host: str = "127.0.0.1"
    port: int = 8000
    force: bool = False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_source(source: str, base=None) -> Path:
    """A local adapter dir, or (through swiftlike.adapters.resolve, where it exists) an installed adapter name or a
    hub reference; `base` (the base model dir) lets the resolver refuse a wrong base before installing anything."""
    import inspect

    import swiftlike.adapters

    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    resolve = getattr(swiftlike.adapters, "resolve", None)
    if resolve is None:
        raise SwiftlikeError(f"adapter source {source!r}: no such directory (installed adapter names and hub "
                             f"refs need the adapter marketplace, which this swiftlike lacks)")
    if base is not None and "base" in inspect.signature(resolve).parameters:
        return Path(resolve(source, base=str(base)))
    return Path(resolve(source))


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
    def __init__(self, opts: ServeOptions):
        from ..models.load import load_model_tokenizer
        from ..models.resolve import resolve_model
        from ..templates import get_template

        self.opts = opts
        self.auth = Auth.load(opts.tenants, opts.admin_key_env)
        if self.auth.open and not is_loopback(opts.host):
            raise SwiftlikeError(f"--host {opts.host}: without --tenants the server has no keys, so it only listens "
                                 f"on loopback (127.0.0.1); give --tenants tenants.toml to serve other machines")
        for flag in ("max_resident", "max_batch_size", "max_queue", "max_tokens"):
            if getattr(opts, flag) < 1:
                raise SwiftlikeError(f"--{flag} must be at least 1")
        if opts.num_threads:
            import torch

            torch.set_num_threads(opts.num_threads)
        self.resolved = resolve_model(opts.model_type, opts.model, hub=opts.hub, revision=opts.model_revision,
                                      model_cache_dir=opts.model_cache_dir)
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
        name = opts.template or self.resolved.spec.template
        if name == "auto":
            raise SwiftlikeError(f"cannot tell which chat template {self.resolved.path} uses; pass --template NAME")
        self.template = get_template(name, self.tokenizer, system=opts.system)
        self.base_name = opts.served_model_name or self.resolved.spec.name
        self._fingerprint = None
        self.metrics = Metrics()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.engine = Engine(model, self.ctx, max_batch_size=opts.max_batch_size, max_queue=opts.max_queue,
                             pad_token_id=pad)
        self.pool = AdapterPool(self.load_adapter, self.resolve_source, opts.max_resident,
                                on_drop=lambda a: drop_cached(self.wrapped, a.uid),
                                on_change=self.ctx.set_resident)
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

    # -- adapters -----------------------------------------------------------------------------------------------
    def resolve_source(self, source: str) -> Path:
        return resolve_source(source, None if self.opts.force else self.resolved.path)

    def base_fingerprint(self) -> str:
        if self._fingerprint is None:
            from ..train.sft import base_fingerprint

            self._fingerprint = base_fingerprint(Path(self.resolved.path))
        return self._fingerprint

    def check_adapter(self, path: Path) -> dict:
        """Refuse early what cannot be served: not LoRA, DoRA, another base. Returns the manifest."""
        from ..adapters.loading import check_base, read_manifest

        lora_config(path)
        manifest = read_manifest(path)
        check_base({k: v for k, v in manifest.items() if k != "base_fingerprint"}, None, self.resolved.spec.name,
                   self.opts.force)
        want = manifest.get("base_fingerprint")
        if want and not self.opts.force and want != self.base_fingerprint():
            raise SwiftlikeError(f"{path}: adapter was trained on other {manifest.get('base_model_type') or 'base'} "
                                 f"weights (fingerprint {want[:12]}…, this base {self.base_fingerprint()[:12]}…)")
        return manifest

    def adapter_template(self, path: Path, manifest: dict):
        """The template the adapter trained with (as `swiftlike infer` picks it), else the base model's."""
        from ..infer import _ckpt_args
        from ..registry import get_registry
        from ..registry.specs import TemplateSpec
        from ..templates import get_template

        saved = _ckpt_args(path)
        name = saved.get("template") or manifest.get("template")
        system = saved.get("system", manifest.get("system"))
        if not name:
            return self.template
        if name not in get_registry().templates:
            text = manifest.get("template_text")
            if not text:
                raise SwiftlikeError(f"{path}: template {name!r} is not installed and the manifest has no "
                                     f"template_text")
            spec = TemplateSpec(name=name, chat_template=text, plugin="(adapter manifest)")
            return get_template(spec, self.tokenizer, system=system)
        return get_template(name, self.tokenizer, system=system)

    def load_adapter(self, name: str, version: int, path: Path) -> Adapter:
        """Read an adapter into memory (blocking; the pool calls it in a worker thread)."""
        t0 = time.perf_counter()
        manifest = self.check_adapter(path)
        modules = read_lora(path, self.wrapped)
        template = self.adapter_template(path, manifest)
        nbytes = sum(m.A.numel() * m.A.element_size() + m.B.numel() * m.B.element_size() for m in modules.values())
        rank = max(m.A.shape[0] for m in modules.values())
        return Adapter(name, version, path, modules, template, rank, nbytes, time.perf_counter() - t0)

    # -- start-up -----------------------------------------------------------------------------------------------
    def banner(self) -> str:
        o = self.opts
        lines = [f"swiftlike serve: {self.base_name} ({self.resolved.origin}: {self.resolved.path}), template "
                 f"{self.template.name}, context {self.context_length}",
                 f"  adapters: {', '.join(self.pool.names()) or '(none yet)'}; max_resident {o.max_resident}, "
                 f"max_batch_size {o.max_batch_size}, max_queue {o.max_queue}, max_tokens {o.max_tokens}"]
        if self.auth.open:
            admin = "adapter admin needs the admin key" if self.auth.admin_sha256 else \
                "so can adapter admin (POST/DELETE /v1/adapters)"
            lines.append(f"  WARNING: no --tenants: open server, loopback only — any local process may call it, "
                         f"{admin}")
        else:
            lines.append(f"  tenants: {', '.join(sorted(self.auth.tenants)) or '(none)'}; admin key "
                         f"{'set' if self.auth.admin_sha256 else 'not set (adapter admin disabled)'}")
        lines.append(f"  OpenAI API at http://{o.host}:{o.port}/v1")
        return "\n".join(lines)

    def warm_up(self) -> None:
        """One tiny forward, so the first request does not pay for lazy initialisation."""
        import torch

        with torch.inference_mode():
            ids = torch.tensor([[self.engine.pad_token_id]], device=self.engine.device)
            self.model(input_ids=ids, use_cache=False)
