"""One completion request from HTTP to the engine and back: pick and pin the adapter, render and check the prompt,
queue it, and turn the engine's tokens into text (whole, or as SSE chunks)."""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import AsyncIterator, Optional

from ..infer.engine import QueueFull, Request
from ..infer.memory import human
from .errors import ApiError, invalid, model_not_found, queue_full
from .pool import UnknownAdapter
from .render import TemplateFailed
from .text import TextStream

log = logging.getLogger("swiftlike.serve")


class Job:
    """Owns what a request holds (an in-flight slot, the adapter pin, the engine request) until `close`."""

    def __init__(self, rt, caller, body, *, chat: bool):
        self.rt, self.caller, self.body, self.chat = rt, caller, body, chat
        self.adapter = None
        self.req: Optional[Request] = None
        self.stream: Optional[TextStream] = None
        self.prompt_ids: list = []
        self.t0 = time.perf_counter()
        self.first_token_at: Optional[float] = None
        self.finish: Optional[str] = None
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self._held = False

    # -- admission ----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        rt, body = self.rt, self.body
        is_base = body.model == rt.base_name
        if not is_base and not (self.caller.may_use(body.model) and body.model in rt.pool):
            raise model_not_found(body.model)
        if rt.inflight >= rt.max_inflight:
            raise queue_full(f"{rt.inflight} requests in flight")
        rt.inflight += 1
        self._held = True
        try:
            if not is_base:
                try:
                    self.adapter = await rt.pool.acquire(body.model)
                except UnknownAdapter:  # removed since the check above
                    raise model_not_found(body.model) from None
                except Exception as err:  # e.g. its store copy was tampered with: refused by its seal
                    log.warning("adapter %s could not be loaded: %s", body.model, err)
                    raise ApiError(500, f"The adapter `{body.model}` could not be loaded; the server's log says why.",
                                   type="server_error", code="adapter_unavailable") from None
            template = self.adapter.template if self.adapter is not None else rt.template
            # rendering and tokenising take a while for big requests: not on the event loop
            self.prompt_ids = await asyncio.get_running_loop().run_in_executor(rt.prep, self._encode, template)
            n = len(self.prompt_ids)
            param = "messages" if self.chat else "prompt"
            if not n:
                raise invalid("The prompt is empty once tokenised.", param=param)
            limit = rt.context_length - n
            if limit < 1:
                raise invalid(f"This model's maximum context length is {rt.context_length} tokens; the prompt has "
                              f"{n}.", param=param, code="context_length_exceeded")
            kv_limit = rt.engine.kv_token_limit(n)
            if kv_limit is not None:  # what one request may reserve of the KV cache budget, prompt included
                if kv_limit - n < 1:
                    most = (rt.engine.kv_token_limit(0) - 1) // 2
                    raise invalid(f"This server's KV cache budget ({human(rt.engine.max_kv_bytes)}, --max_kv_memory) "
                                  f"fits prompts of at most {most} tokens; the prompt has {n}.", param=param,
                                  code="context_length_exceeded")
                limit = min(limit, kv_limit - n)
            max_tokens = min(body.max_tokens or rt.opts.max_tokens, rt.opts.max_tokens, limit)
            stops = list(template.stop_words) + body.stops()
            self.stream = TextStream(rt.tokenizer, stops)
            stop_ids = [] if body.ignore_eos else template.stop_token_ids or [rt.tokenizer.eos_token_id]
            loop = asyncio.get_running_loop()
            self.queue: asyncio.Queue = asyncio.Queue()

            def sink(token, finish, _put=self.queue.put_nowait):
                loop.call_soon_threadsafe(_put, (token, finish))

            self.req = Request(self.prompt_ids, max_tokens, sink, adapter=self.adapter,
                               temperature=body.temperature, top_p=body.top_p, seed=body.seed,
                               stop_ids=frozenset(stop_ids), stop=tuple(self.stream.stops), presence_penalty=body.presence_penalty,
                               frequency_penalty=body.frequency_penalty)
            try:
                rt.engine.submit(self.req)
            except QueueFull as err:
                self.req = None
                raise queue_full(str(err)) from None
        except BaseException:
            self.close()
            raise

    def _encode(self, template) -> list:
        tok = self.rt.tokenizer
        if not self.chat:
            return tok(self.body.prompt).input_ids  # as a plain completion server tokenizes (special tokens added)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in self.body.messages]
        try:
            prompt = template.render(messages, add_generation_prompt=True)
        except TemplateFailed as err:  # an adapter's own template: too slow, too big, or refused
            raise invalid(f"messages: the chat template {template.name!r} cannot render them: {err}",
                          param="messages", code="template_error") from None
        except Exception as err:  # the template refused these messages (e.g. roles out of order)
            raise invalid(f"messages: the chat template {template.name!r} cannot render them: {err}",
                          param="messages") from None
        return tok(prompt, add_special_tokens=False).input_ids  # as `swiftlike infer` does

    # -- results ------------------------------------------------------------------------------------------------
    async def pieces(self) -> AsyncIterator[str]:
        """Text pieces until the end; sets `finish` (stop | length)."""
        while True:
            token, finish = await self.queue.get()
            if token is not None:
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                    self.rt.metrics.first_token(self.first_token_at - self.t0)
                piece = self.stream.add(token)
                if self.stream.stopped:  # a stop string: no need for the engine to go on
                    self.rt.engine.cancel(self.req)
                    self.finish = "stop"
                    if piece:
                        yield piece
                    return
                if piece:
                    yield piece
            if finish is not None:
                if finish not in ("stop", "length"):
                    self.finish = "error"
                    raise ApiError(500 if finish != "cancelled" else 503,
                                   f"generation failed ({finish})" if finish != "cancelled"
                                   else "the server is shutting down", type="server_error", code="engine_error")
                self.finish = finish
                tail = self.stream.flush()
                if tail:
                    yield tail
                return

    def close(self) -> None:
        """Release everything this request holds (idempotent)."""
        if not self._held:
            return
        self._held = False
        rt = self.rt
        if self.req is not None and self.finish is None:
            rt.engine.cancel(self.req)  # the client went away mid-generation
        if self.adapter is not None:
            rt.pool.release(self.adapter)
            if self.stream is not None:
                rt.pool.record(self.adapter.name, len(self.stream.ids))
        rt.inflight -= 1
        completion = len(self.stream.ids) if self.stream is not None else 0
        if self.finish in ("stop", "length"):
            rt.metrics.done(self.endpoint, time.perf_counter() - self.t0, len(self.prompt_ids), completion)

    @property
    def endpoint(self) -> str:
        return "/v1/chat/completions" if self.chat else "/v1/completions"

    # -- OpenAI shapes ------------------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return f"{self.adapter.name}:v{self.adapter.version}" if self.adapter is not None else "base"

    def usage(self) -> dict:
        n = len(self.stream.ids)
        return {"prompt_tokens": len(self.prompt_ids), "completion_tokens": n,
                "total_tokens": len(self.prompt_ids) + n}

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.body.model,
                "system_fingerprint": self.fingerprint}

    async def response(self) -> dict:
        text = "".join([p async for p in self.pieces()])
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": self.finish}
            return {**self._head("chat.completion"), "choices": [choice], "usage": self.usage()}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": self.finish}
        return {**self._head("text_completion"), "choices": [choice], "usage": self.usage()}

    async def sse(self) -> AsyncIterator[str]:
        """Server-sent events: one `data: {chunk}` per piece, a last chunk with finish_reason, then [DONE]."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"

        def chunk(piece: Optional[str], finish: Optional[str], role: bool = False) -> str:
            if self.chat:
                delta = {"role": "assistant", "content": ""} if role else ({"content": piece} if piece else {})
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
            return _event({**self._head(obj), "choices": [choice]})

        try:
            if self.chat:
                yield chunk(None, None, role=True)
            try:
                async for piece in self.pieces():
                    yield chunk(piece, None)
            except ApiError as err:
                yield _event(err.body())
                yield "data: [DONE]\n\n"
                return
            yield chunk(None, self.finish)
            opts = self.body.stream_options
            if opts is not None and opts.include_usage:
                yield _event({**self._head(obj), "choices": [], "usage": self.usage()})
            yield "data: [DONE]\n\n"
        finally:
            self.close()


def _event(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
