"""FastAPI routes: the OpenAI-compatible API, health and metrics, and adapter admin."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..registry import SwiftlikeError
from .errors import ApiError, invalid, model_not_found, unauthorized
from .generation import Job
from .http import BodyTooLarge, Guard
from .pool import ReplacedMeanwhile
from .shared import SharedStateError
from .schemas import AdapterPut, ChatCompletionRequest, CompletionRequest, VllmLoad, VllmUnload

log = logging.getLogger("swiftlike.serve")
CLIENT_GONE = 499  # nginx's "client closed request": what the metrics count for it


def create_app(rt) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        rt.engine.start()
        watch = asyncio.get_running_loop().create_task(rt.shared.watch()) if rt.shared else None
        try:
            yield
        finally:
            if watch is not None:
                watch.cancel()
            await asyncio.to_thread(rt.engine.stop)
            rt.close()

    # the schema is served below, behind the same keys as the API; no /docs (it would load scripts from a CDN)
    app = FastAPI(title="swiftlike serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    if rt.cors:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=sorted(rt.cors), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["authorization", "content-type"], max_age=600)
    app.add_middleware(Guard, hosts=rt.hosts, cors=rt.cors, max_body=rt.max_body)
    app.add_middleware(_CountRequests, metrics=rt.metrics)

    @app.exception_handler(ApiError)
    async def _api_error(request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request, err):
        body = ApiError(413, f"The request body is larger than this server's limit of {rt.max_body} bytes "
                             f"(--max_body_size).", code="body_too_large")
        return JSONResponse(body.body(), status_code=413)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request, err):
        client = request.client
        log.info("%s: request body incomplete (the client left, or was slower than --read_timeout)",
                 f"{client.host}:{client.port}" if client else "a client")
        return Response(status_code=CLIENT_GONE)  # nobody to read it

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, err):
        body = ApiError(err.status_code, str(err.detail), code="not_found" if err.status_code == 404 else None)
        return JSONResponse(body.body(), status_code=err.status_code)

    # -- who is calling -----------------------------------------------------------------------------------------
    async def caller(request: Request):
        who = rt.auth.authenticate(request.headers.get("authorization"))
        if who is None:
            raise unauthorized()
        return who

    async def admin(who=Depends(caller)):
        if not who.is_admin:
            raise ApiError(403, "This endpoint needs the admin key.", code="forbidden")
        return who

    # -- public -------------------------------------------------------------------------------------------------
    async def read_json(request: Request, schema: type[BaseModel]):
        """The body as `schema`, read after authentication; JSON only, so that a browser cannot send it from another
        site without a CORS preflight. Parsed off the event loop."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise ApiError(415, "Send the request body as JSON, with `Content-Type: application/json`.",
                           code="unsupported_media_type")
        raw = await request.body()
        return await asyncio.get_running_loop().run_in_executor(rt.prep, _parse, schema, raw, rt.context_length)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(who=Depends(caller)):
        return JSONResponse(app.openapi())

    @app.get("/health")
    async def health():
        if not rt.engine.alive:
            return JSONResponse({"status": "engine stopped"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics", dependencies=[Depends(admin)])
    async def metrics():
        return PlainTextResponse(rt.metrics.render(_gauges(rt), _counters(rt)),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    def model_card(name: str) -> dict:
        parent = None if name == rt.base_name else rt.base_name
        return {"id": name, "object": "model", "created": rt.started, "owned_by": "swiftlike", "root": name,
                "parent": parent}

    def visible(who) -> list[str]:
        return [rt.base_name] + [n for n in rt.pool.names() if who.may_use(n)]

    @app.get("/v1/models")
    async def list_models(who=Depends(caller)):
        return {"object": "list", "data": [model_card(n) for n in visible(who)]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, who=Depends(caller)):
        if model_id not in visible(who):
            raise model_not_found(model_id)
        return model_card(model_id)

    async def generate(request: Request, who, schema, chat: bool):
        body = await read_json(request, schema)
        job = Job(rt, who, body, chat=chat)
        await job.start()
        headers = {"x-swiftlike-adapter": job.fingerprint}
        if body.stream:
            return _JobStream(job, media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})
        answer = asyncio.ensure_future(job.response())
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            # a client that leaves stops its generation, as a stream's does
            await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not answer.done():
                return Response(status_code=CLIENT_GONE)
            return JSONResponse(answer.result(), headers=headers)
        finally:
            for task in (answer, gone):
                task.cancel()
            job.close()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, who=Depends(caller)):
        return await generate(request, who, ChatCompletionRequest, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request, who=Depends(caller)):
        return await generate(request, who, CompletionRequest, chat=False)

    # -- adapter admin ------------------------------------------------------------------------------------------
    @app.get("/v1/adapters", dependencies=[Depends(admin)])
    async def list_adapters():
        return {"object": "list", "max_resident": rt.pool.max_resident, "resident": rt.pool.resident(),
                "data": rt.pool.snapshot(), **({"shared_state": rt.shared.describe()} if rt.shared else {})}

    async def put_adapter(name: str, source: str) -> dict:
        if name == rt.base_name:
            raise invalid(f"{name!r} is the base model's name", param="name")
        replaced = name in rt.pool
        try:
            # with --shared_state, recorded for the other replicas once it loaded here
            adapter = await (rt.shared.put(name, source) if rt.shared else rt.pool.put(name, source))
        except ReplacedMeanwhile as err:
            raise ApiError(409, str(err), code="conflict") from None
        except SharedStateError as err:
            raise ApiError(503, f"adapter {name!r}: {err}", type="server_error", code="shared_state") from None
        except (SwiftlikeError, OSError, ValueError) as err:
            raise ApiError(400, f"cannot load adapter {name!r} from {source!r}: {err}", param="source",
                           code="invalid_adapter") from None
        return {"name": name, "version": adapter.version, "source": source, "replaced": replaced,
                "resident": name in rt.pool.resident(), "load_seconds": round(adapter.load_seconds, 4)}

    @app.post("/v1/adapters", dependencies=[Depends(admin)])
    async def post_adapter(request: Request):
        body = await read_json(request, AdapterPut)
        return await put_adapter(body.name, body.source)

    @app.delete("/v1/adapters/{name}", dependencies=[Depends(admin)])
    async def delete_adapter(name: str):
        try:
            removed = await rt.shared.remove(name) if rt.shared else rt.pool.remove(name)
        except SharedStateError as err:
            raise ApiError(503, f"adapter {name!r}: {err}", type="server_error", code="shared_state") from None
        if not removed:
            raise ApiError(404, f"no adapter named {name!r}", code="not_found", param="name")
        return {"name": name, "deleted": True}

    # vLLM's runtime LoRA endpoints, for clients written against it
    @app.post("/v1/load_lora_adapter", dependencies=[Depends(admin)])
    async def vllm_load(request: Request):
        body = await read_json(request, VllmLoad)
        await put_adapter(body.lora_name, body.lora_path)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")

    @app.post("/v1/unload_lora_adapter", dependencies=[Depends(admin)])
    async def vllm_unload(request: Request):
        body = await read_json(request, VllmUnload)
        await delete_adapter(body.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")

    return app


class _JobStream(StreamingResponse):
    """Closes the job however the response ends (a generator that never started has no `finally` to run)."""

    def __init__(self, job: Job, **kw):
        super().__init__(job.sse(), **kw)
        self.job = job

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.close()


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read: only a disconnect can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _parse(schema: type[BaseModel], raw: bytes, max_messages: int = 0):
    """The body, validated after authentication (so an unauthenticated caller learns nothing from a 422)."""
    try:
        data = json.loads(raw or b"null", parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise invalid(f"the request body is not valid JSON ({err})", code="invalid_json") from None
    except RecursionError:
        raise invalid("the request body is nested too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise invalid("the request body must be a JSON object", code="invalid_json")
    messages = data.get("messages")
    if max_messages and isinstance(messages, list) and len(messages) > max_messages:
        # every message takes at least one token: refuse before validating (and later rendering) all of them
        raise invalid(f"messages: {len(messages)} messages cannot fit in a context of {max_messages} tokens",
                      param="messages", code="context_length_exceeded")
    try:
        return schema.model_validate(data)
    except RecursionError:
        raise invalid("the request body is nested too deeply", code="invalid_json") from None
    except ValidationError as err:
        problems = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "body"
            problems.append(f"{where}: {e['msg']}")
        first = err.errors()[0]["loc"]
        raise invalid("; ".join(problems), param=str(first[0]) if first else None) from None


def _gauges(rt) -> dict:
    return {
        "swiftlike_adapters_resident": ("Adapters in memory.", len(rt.pool.resident())),
        "swiftlike_adapters_known": ("Adapters that can be requested.", len(rt.pool.names())),
        "swiftlike_max_resident": ("--max_resident.", rt.pool.max_resident),
        "swiftlike_requests_running": ("Requests in the running batch.", rt.engine.running),
        "swiftlike_requests_waiting": ("Requests queued for the engine.", len(rt.engine.waiting)),
        "swiftlike_requests_in_flight": ("Requests admitted and not finished.", rt.inflight),
        "swiftlike_kv_cache_bytes": ("KV cache memory allocated now.", rt.engine.cache.nbytes),
        "swiftlike_kv_cache_peak_bytes": ("Most KV cache memory held at once (prefill copies included).",
                                          rt.engine.stats["kv_peak_bytes"]),
        "swiftlike_kv_cache_budget_bytes": ("--max_kv_memory.", rt.engine.max_kv_bytes or 0),
        **({"swiftlike_shared_state_generation": ("Generation of --shared_state last applied or written here.",
                                                  rt.shared.generation)} if rt.shared else {}),
    }


def _counters(rt) -> dict:
    s = rt.engine.stats
    return {
        "swiftlike_adapter_loads_total": ("Adapter loads from disk (lazy and admin).", rt.pool.loads),
        "swiftlike_adapter_evictions_total": ("Adapters evicted (LRU) to stay within --max_resident.",
                                              rt.pool.evictions),
        "swiftlike_adapter_load_failures_total": ("Adapter loads that failed.", rt.pool.load_failures),
        "swiftlike_adapter_load_seconds_total": ("Time spent loading adapters.", sum(rt.pool.load_seconds)),
        "swiftlike_engine_decode_steps_total": ("Batched decode steps.", s["decode_steps"]),
        "swiftlike_engine_decode_rows_total": ("Rows over all decode steps (mean batch = rows / steps).",
                                               s["decode_rows"]),
        "swiftlike_engine_prefills_total": ("Prompts prefilled.", s["prefills"]),
        "swiftlike_engine_generated_tokens_total": ("Tokens generated (incl. cancelled requests).",
                                                    s["generated_tokens"]),
        **({"swiftlike_shared_state_syncs_total": ("Changes of --shared_state read and applied by this replica.",
                                                   rt.shared.syncs),
            "swiftlike_shared_state_adapter_changes_total": ("Adapter loads/removals applied from --shared_state.",
                                                             rt.shared.changes),
            "swiftlike_shared_state_errors_total": ("--shared_state reads/writes that failed, and adapters of it "
                                                    "this replica refused.", rt.shared.errors)}
           if rt.shared else {}),
    }


class _CountRequests:
    """ASGI middleware counting responses by route template and status (streaming-safe, unlike BaseHTTPMiddleware)."""

    def __init__(self, app, metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "other"
            self.metrics.request(endpoint, status.get("code", 500))
