"""The HTTP edge: which Host and Origin are answered, how big a body may be, how long a client may take to send a
request, and the uvicorn settings that go with them."""
from __future__ import annotations

import json
import logging
from typing import Optional
from urllib.parse import urlsplit

from .errors import ApiError

log = logging.getLogger("swiftlike.serve")

_WILDCARD = {"0.0.0.0", "::", ""}


class BodyTooLarge(Exception):
    pass


def host_name(value: str) -> str:
    """'Example.com:8000' -> 'example.com', '[::1]:8000' -> '::1'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def answered_hosts(host: str, allowed: list, loopback: bool) -> Optional[frozenset]:
    """Host header names the server answers (None: any). DNS rebinding sends the attacker's name, so a server bound
    to one address answers only that address (and localhost's names on loopback) unless --allowed_hosts adds names."""
    extra = {host_name(h) for h in allowed or []}
    if "*" in extra:
        return None
    bound = host.strip().strip("[]").lower()
    if bound in _WILDCARD and not extra:
        return None  # every interface: non-loopback needs --tenants, so keys guard it
    names = set(extra)
    if bound not in _WILDCARD:
        names.add(bound)
    if loopback:
        names |= {"localhost", "127.0.0.1", "::1"}
    return frozenset(names)


def _error(status: int, message: str, code: str, close: bool = False):
    body = json.dumps(ApiError(status, message, code=code).body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    return [{"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body}]


class Guard:
    """ASGI middleware, outermost: refuses unknown Host names (DNS rebinding), cross-origin browser requests not in
    --cors_origins, and bodies over --max_body_size (413, also for chunked bodies), and closes the connection after
    answering a request whose body was not read to the end."""

    def __init__(self, app, *, hosts: Optional[frozenset], cors: frozenset, max_body: int):
        self.app = app
        self.hosts = hosts
        self.cors_any = "*" in cors
        self.cors = cors
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for k, v in scope.get("headers") or []:
            headers.setdefault(k.decode("latin-1"), v.decode("latin-1"))
        refusal = self._refuse(headers)
        if refusal is not None:
            for message in refusal:
                await send(message)
            return
        length = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        try:
            declared = int(length) if length is not None else None
        except ValueError:
            declared = -1
        if declared is not None and (declared < 0 or declared > self.max_body):
            for message in _error(413, f"The request body is larger than this server's limit of {self.max_body} "
                                       f"bytes (--max_body_size).", "body_too_large", close=True):
                await send(message)
            return
        state = {"read": 0, "done": not chunked and not declared}

        async def receive_counted():
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > self.max_body:
                    raise BodyTooLarge()
                if not message.get("more_body", False):
                    state["done"] = True
            return message

        async def send_closing(message):
            if message["type"] == "http.response.start" and not state["done"]:
                # an unread body would be taken for the next request: end the connection with this response
                message = {**message, "headers": list(message.get("headers", [])) + [(b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive_counted, send_closing)

    def _refuse(self, headers: dict):
        host = headers.get("host")
        if self.hosts is not None and host is not None and host_name(host) not in self.hosts:
            return _error(400, f"This server does not answer for host {host_name(host)!r}; start it with "
                               f"--allowed_hosts to add a name.", "invalid_host", close=True)
        if self.cors_any:
            return None
        origin = headers.get("origin")
        if origin is not None:
            same = host is not None and urlsplit(origin).netloc.lower() == host.strip().lower()
            if not same and origin not in self.cors:
                return _error(403, f"Cross-origin requests from {origin} are refused; start the server with "
                                   f"--cors_origins {origin} to allow them.", "cross_origin", close=True)
        elif headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return _error(403, "Cross-origin browser requests are refused (see --cors_origins).", "cross_origin",
                          close=True)
        return None


def deadline_protocol(read_timeout: float):
    """uvicorn's HTTP protocol, plus a deadline: a client has `read_timeout` seconds from connecting (or from the end
    of its previous response) to send a whole request, headers and body; a slower one is disconnected."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class DeadlineProtocol(AutoHTTPProtocol):
        _deadline = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc):
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

        def _arm(self):
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(read_timeout, self._expired)

        def _expired(self):
            self._deadline = None
            cycle = self.cycle
            if self.transport.is_closing():
                return
            if cycle is None or cycle.response_complete:  # headers still incomplete
                client = "%s:%s" % tuple(self.client[:2]) if self.client else "a client"
                log.info("closed the connection of %s: no complete request within %gs", client, read_timeout)
                self.transport.close()
            elif cycle.more_body:  # the body is incomplete: the app reading it logs the one line
                self.transport.close()

    return DeadlineProtocol


def uvicorn_config(app, opts, **overrides):
    """uvicorn.Config for `app` with the limits of `opts` (ServeArguments)."""
    import uvicorn

    kw = dict(host=opts.host, port=opts.port, log_level=opts.log_level, timeout_graceful_shutdown=5,
              http=deadline_protocol(opts.read_timeout), limit_concurrency=opts.max_connections,
              timeout_keep_alive=5)
    kw.update(overrides)
    return uvicorn.Config(app, **kw)
