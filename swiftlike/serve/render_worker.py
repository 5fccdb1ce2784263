"""`python -m swiftlike.serve.render_worker MEMORY_BYTES`: renders chat templates that came with adapters.

A template from an adapter's manifest is untrusted text. Jinja's sandbox stops it from touching the server, but not
from looping for hours or building a 10 GB string, so it runs here: in its own process, under an address-space limit,
and the server kills it when a render takes too long. Protocol on stdin/stdout: a 4-byte big-endian length, then that
many bytes of JSON; one reply ({"text"} or {"error"}) per request ({"source", "context", "max_chars"}).
"""
from __future__ import annotations

import json
import os
import struct
import sys


class _TooLong(Exception):
    pass


def _render(source: str, context: dict, max_chars: int) -> str:
    from swiftlike.templates.jinja_env import compile_template

    pieces, size = [], 0
    for piece in compile_template(source).generate(**context):
        size += len(piece)
        if size > max_chars:
            raise _TooLong(f"the rendered prompt is longer than {max_chars} characters")
        pieces.append(piece)
    return "".join(pieces)


def main() -> None:
    memory = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if memory:
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        except (ImportError, ValueError, OSError):  # not on this platform: the server's timeout still applies
            pass
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints must not corrupt the replies
    inp = sys.stdin.buffer
    import swiftlike.templates.jinja_env  # noqa: F401 (loaded before the first request's clock starts)

    while True:
        head = inp.read(4)
        if len(head) < 4:
            return
        request = json.loads(inp.read(struct.unpack(">I", head)[0]))
        try:
            reply = {"text": _render(request["source"], request["context"], request["max_chars"])}
        except MemoryError:
            reply = {"error": "rendering needs more memory than allowed"}
        except _TooLong as err:
            reply = {"error": str(err)}
        except Exception as err:  # the template's own errors (raise_exception, undefined...)
            reply = {"error": f"{type(err).__name__}: {err}"}
        data = json.dumps(reply, ensure_ascii=False).encode()
        out.write(struct.pack(">I", len(data)) + data)
        out.flush()


if __name__ == "__main__":
    main()
