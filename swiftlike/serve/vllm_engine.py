"""vLLM as the engine of `swiftlike serve` (--infer_backend vllm).

Everything in front of the engine stays swiftlike's: tenants and keys, the marketplace's resolution and seals, the
adapter pool (LRU within --max_resident, pins, versioned replacement), templates and tokenising, stop strings, the
OpenAI API, metrics and error semantics. What changes is what runs the model:

- `VllmRuntime` (a Runtime) loads no torch model: the tokenizer for swiftlike's templates, and vLLM's AsyncLLM with
  enable_lora, max_loras = --max_resident, max_lora_rank, max_num_seqs = --max_batch_size;
- `VllmEngine` has the interface the requests use (submit, cancel, forget_adapter, start/stop and the gauges): each
  request goes to `AsyncLLM.generate` as token ids with SamplingParams and the LoRARequest of the adapter it pinned,
  and its tokens come back to the request's sink exactly as the pt engine delivers them;
- adapter loads and unloads of the pool map to `AsyncLLM.add_lora` / `remove_lora`: a lazy load or an admin
  POST /v1/adapters (or /v1/load_lora_adapter) adds it to vLLM after swiftlike's seal and base checks, from the
  verified directory; an eviction, or an admin DELETE once the adapter's last running request is done, removes it.

Each adapter version has its own lora_int_id (`infer.vllm_backend.LoraIds`): a replaced adapter's running requests
keep their weights, as with the pt engine. The mapping to vLLM's objects lives in swiftlike.infer.vllm_backend.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..infer.engine import QueueFull
from ..infer.lora import ResidentAdapter
from ..infer.memory import human
from ..infer.vllm_backend import (LoraIds, adapter_rank, check_adapter_vllm, context_length, engine_kwargs,
                                  finish_reason, lora_request, lora_request_kwargs, request_sampling_kwargs,
                                  require_vllm, sampling_params, served_rank, tokens_prompt)
from ..registry import SwiftlikeError
from .runtime import Runtime, parse_adapter_arg

log = logging.getLogger("swiftlike.serve")
ADD_LORA_TIMEOUT = 600.0


@dataclass(frozen=True, eq=False)
class VllmAdapter(ResidentAdapter):
    """A resident adapter whose weights vLLM holds: `lora_request` is what each of its requests carries."""
    lora_request: object = None


class _NoLoraContext:
    """The pool tells the pt engine's LoRA layers which adapters are resident; vLLM keeps its own."""

    def set_resident(self, adapters) -> None:
        pass


class _NoCache:
    nbytes = 0  # vLLM's KV cache is its own (--gpu_memory_utilization); not counted in swiftlike's gauges


class VllmEngine:
    """The engine interface of swiftlike serve on vLLM's AsyncLLM, which runs on the server's event loop (its
    engine core is a separate process). `submit`, `cancel` and `forget_adapter` are called on the loop;
    `add_adapter` from the pool's loader threads; `stop` from any thread."""

    def __init__(self, llm, *, max_batch_size: int = 32, max_queue: int = 256, pad_token_id: int = 0):
        self.llm = llm
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.pad_token_id = pad_token_id
        self.device = "cuda"
        self.max_kv_bytes = None
        self.kv_bytes_per_token = 0
        self.cache = _NoCache()
        self.waiting: tuple = ()  # vLLM queues what does not fit its batch; swiftlike holds no queue of its own
        self.stats = collections.Counter()  # prefills (requests sent), prompt_tokens, generated_tokens, lora_adds...
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._tasks: dict = {}  # Request -> its asyncio.Task
        self._lora_ids: dict[int, int] = {}  # ResidentAdapter.uid -> lora_int_id, while vLLM holds it
        self._background: set = set()
        self._stopping = False

    # -- control ------------------------------------------------------------------------------------------------
    def start(self) -> "VllmEngine":
        self.loop = asyncio.get_running_loop()  # the app's lifespan runs this on the server's loop
        self._stopping = False
        return self

    def stop(self) -> None:
        """Cancel what runs (its requests end `cancelled`, as the pt engine's do) and shut vLLM down."""
        self._stopping = True
        loop = self.loop
        if loop is not None and not loop.is_closed() and loop.is_running():
            if self._on_loop():
                for task in list(self._tasks.values()):
                    task.cancel()
            else:
                try:
                    asyncio.run_coroutine_threadsafe(self._cancel_all(), loop).result(timeout=30)
                except Exception as err:  # noqa: BLE001 - shutting down anyway
                    log.warning("vLLM requests not cancelled cleanly: %s", err)
        try:
            self.llm.shutdown()
        except Exception as err:  # noqa: BLE001
            log.warning("vLLM shutdown: %s", err)

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def alive(self) -> bool:
        return self.loop is not None and not self._stopping and not getattr(self.llm, "errored", False)

    @property
    def running(self) -> int:
        """Requests sent to vLLM and not finished (running or queued inside vLLM)."""
        return len(self._tasks)

    def kv_token_limit(self, prompt_tokens: int) -> Optional[int]:
        return None  # vLLM admits by its own KV cache

    # -- requests -----------------------------------------------------------------------------------------------
    def submit(self, req) -> None:
        if self._stopping or self.loop is None:
            raise QueueFull("the engine is not running")
        if len(self._tasks) >= self.max_batch_size + self.max_queue:
            raise QueueFull(f"{len(self._tasks)} requests in vLLM")
        self._tasks[req] = self.loop.create_task(self._run(req))

    def cancel(self, req) -> None:
        req.cancelled = True
        task = self._tasks.get(req)
        if task is None or task.done():
            return
        if self._on_loop():
            task.cancel()  # generate() aborts the request in vLLM
        elif self.loop is not None:
            self.loop.call_soon_threadsafe(task.cancel)

    async def _run(self, req) -> None:
        finish = "error"
        try:
            params = sampling_params(request_sampling_kwargs(req))
            lora = getattr(req.adapter, "lora_request", None) if req.adapter is not None else None
            self.stats["prefills"] += 1
            self.stats["prompt_tokens"] += len(req.prompt_ids)
            async for out in self.llm.generate(tokens_prompt(req.prompt_ids), params, uuid.uuid4().hex,
                                               lora_request=lora):
                for completion in out.outputs[:1]:  # n = 1
                    ids = list(completion.token_ids)
                    self.stats["generated_tokens"] += len(ids)
                    for token in ids:
                        req.sink(int(token), None)
                    reason = finish_reason(completion.finish_reason)
                    if reason is not None:
                        finish = reason
                if out.finished:
                    break
        except asyncio.CancelledError:
            finish = "cancelled"
        except Exception:  # noqa: BLE001 - the request fails, the server goes on
            log.exception("vLLM request failed")
            finish = "error"
        finally:
            self._tasks.pop(req, None)
            req.sink(None, finish)

    # -- adapters -----------------------------------------------------------------------------------------------
    def add_adapter(self, kwargs: dict):
        """Load an adapter into vLLM (blocking; the pool's loader thread): its LoRARequest, once vLLM holds it."""
        request = lora_request(kwargs)
        try:
            ok = self._call(self.llm.add_lora(request), ADD_LORA_TIMEOUT)
        except SwiftlikeError:
            raise
        except Exception as err:  # vLLM's own refusal (shapes, modules it cannot serve...)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise SwiftlikeError(f"{kwargs['lora_path']}: vLLM cannot load it: {first}") from None
        if ok is False:
            raise SwiftlikeError(f"{kwargs['lora_path']}: vLLM did not load it")
        self.stats["lora_adds"] += 1
        return request

    def track(self, uid: int, lora_int_id: int) -> None:
        self._lora_ids[uid] = lora_int_id

    def forget_adapter(self, uid: int) -> None:
        """The pool dropped an adapter (evicted, replaced or removed, and no request runs with it): vLLM too."""
        lora_int_id = self._lora_ids.pop(uid, None)
        if lora_int_id is None or self.loop is None or self.loop.is_closed() or self._stopping:
            return
        if self._on_loop():
            task = self.loop.create_task(self._remove(lora_int_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        else:
            asyncio.run_coroutine_threadsafe(self._remove(lora_int_id), self.loop)

    async def _remove(self, lora_int_id: int) -> None:
        try:
            await self.llm.remove_lora(lora_int_id)
            self.stats["lora_removes"] += 1
        except Exception as err:  # noqa: BLE001 - vLLM loads it again from its path if ever asked
            log.warning("vLLM remove_lora(%s) failed: %s", lora_int_id, err)

    def loaded(self) -> dict[int, int]:
        """{ResidentAdapter.uid: lora_int_id} of the adapters vLLM holds for the pool."""
        return dict(self._lora_ids)

    # -- internals ----------------------------------------------------------------------------------------------
    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def _call(self, coro, timeout: float):
        """Run a coroutine on the server's loop from another thread and wait for it."""
        if self.loop is None or self.loop.is_closed() or self._stopping:
            coro.close()
            raise SwiftlikeError("the vLLM engine is not running")
        if self._on_loop():
            coro.close()
            raise RuntimeError("VllmEngine._call would block the event loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def start_async_llm(kwargs: dict):
    """vLLM's AsyncLLM for these engine arguments (loads the model on the GPU; its engine core is a process)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    try:
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError:  # other vLLM versions: the same class under its older name
        from vllm.engine.async_llm_engine import AsyncLLMEngine as AsyncLLM
    return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))


class VllmRuntime(Runtime):
    """A Runtime whose engine is vLLM. `llm_factory(engine_kwargs) -> AsyncLLM`: vLLM's by default (after the
    one-line refusal where it cannot run); tests pass a stand-in for the GPU part."""

    def __init__(self, opts, llm_factory: Optional[Callable[[dict], object]] = None):
        opts.check_backend()
        if (opts.max_kv_memory or "auto") != "auto":
            raise SwiftlikeError(f"--max_kv_memory {opts.max_kv_memory}: the pt engine's KV budget; with "
                                 f"--infer_backend vllm, vLLM sizes its KV cache (--gpu_memory_utilization)")
        self.vllm_version = None
        if llm_factory is None:
            self.vllm_version = require_vllm()  # before anything loads
            llm_factory = start_async_llm
        self._llm_factory = llm_factory
        self.lora_ids = LoraIds()
        self.max_lora_rank = None
        self.engine_kwargs: dict = {}
        super().__init__(opts)

    # -- the model and the engine -------------------------------------------------------------------------------
    def load_model(self) -> None:
        from ..models.load import load_tokenizer

        opts = self.opts
        self.tokenizer = load_tokenizer(self.resolved.path, opts.trust_remote_code)  # swiftlike's templates
        self.context_length = context_length(self.resolved.path, opts.trust_remote_code, opts.max_model_len)
        self.ctx = _NoLoraContext()
        self.wrapped = {}
        self.model = None

    def start_engine(self) -> None:
        opts = self.opts
        self.max_lora_rank = opts.max_lora_rank or served_rank(self._given_ranks())
        self.engine_kwargs = engine_kwargs(
            self.resolved.path, served_model_name=self.base_name, torch_dtype=opts.torch_dtype,
            trust_remote_code=opts.trust_remote_code, max_loras=opts.max_resident, max_lora_rank=self.max_lora_rank,
            max_num_seqs=opts.max_batch_size, max_model_len=opts.max_model_len,
            gpu_memory_utilization=opts.gpu_memory_utilization)
        self.max_kv_bytes, self.kv_budget_source = 0, "vLLM's"
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        llm = self._llm_factory(self.engine_kwargs)
        # prompts are checked against the context vLLM settled on (it may derive another one from the config)
        self.context_length = int(getattr(getattr(llm, "model_config", None), "max_model_len", 0) or
                                  self.context_length)
        self.engine = VllmEngine(llm, max_batch_size=opts.max_batch_size, max_queue=opts.max_queue, pad_token_id=pad)

    def _given_ranks(self) -> list[int]:
        """The ranks of the adapters given with --adapters (for the default --max_lora_rank)."""
        ranks = []
        for text in self.opts.adapters or []:
            _, source = parse_adapter_arg(text)
            config = self.resolve_source(source) / "adapter_config.json"
            if config.is_file():
                ranks.append(adapter_rank(json.loads(config.read_text())))
        return ranks

    # -- adapters -----------------------------------------------------------------------------------------------
    def check_adapter(self, path: Path) -> dict:
        manifest = super().check_adapter(path)  # swiftlike's refusals (not LoRA, DoRA...) and the base check
        check_adapter_vllm(path, max_lora_rank=self.max_lora_rank, max_loras=self.opts.max_resident,
                           max_position_embeddings=self.context_length)
        return manifest

    def load_adapter(self, name: str, version: int, path: Path) -> VllmAdapter:
        """Check the adapter as the pt engine does at every load (a store copy against its seal), then have vLLM
        load that same directory (blocking; the pool calls it in a worker thread)."""
        from ..adapters import resolve

        t0 = time.perf_counter()
        path = Path(resolve(str(path))).resolve()
        self.check_adapter(path)
        template = self.adapter_template(path)
        cfg = json.loads((path / "adapter_config.json").read_text())
        request = self.engine.add_adapter(lora_request_kwargs(name, self.lora_ids.get(name, version), path))
        nbytes = sum(f.stat().st_size for f in path.glob("adapter_model.*"))
        adapter = VllmAdapter(name, version, path, {}, template, adapter_rank(cfg), nbytes,
                              time.perf_counter() - t0, lora_request=request)
        self.engine.track(adapter.uid, request.lora_int_id)
        return adapter

    # -- start-up -----------------------------------------------------------------------------------------------
    def banner(self) -> str:
        o = self.opts
        gpu = o.gpu_memory_utilization or "vLLM's default"
        line = (f"  engine: vLLM {self.vllm_version or '(stand-in)'}: max_loras {o.max_resident}, max_lora_rank "
                f"{self.max_lora_rank}, max_num_seqs {o.max_batch_size}, gpu_memory_utilization {gpu}; bodies up to "
                f"{human(self.max_body)}")
        lines = super().banner().splitlines()
        return "\n".join(line if text.startswith("  KV cache budget") else text for text in lines)

    def warm_up(self) -> None:
        pass  # vLLM warmed up (and captured its CUDA graphs) when it started

