"""Adapters' own chat templates (text from their manifests) rendered out of process, with a time and a size limit:
a small pool of `render_worker` processes, started on first use, killed and replaced when a render overruns."""
from __future__ import annotations

import json
import os
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path


class TemplateFailed(Exception):
    pass


class TemplateRenderer:
    def __init__(self, *, timeout: float, max_chars: int, workers: int = 2, memory: int = 1 << 30):
        self.timeout = timeout
        self.max_chars = max_chars
        self.memory = memory
        self._idle: queue.LifoQueue = queue.LifoQueue()
        for _ in range(workers):
            self._idle.put(None)  # a place for a worker, started when first needed
        self._procs: set = set()
        self._lock = threading.Lock()
        self._closed = False

    def render(self, source: str, context: dict) -> str:
        """The rendered text (blocking; call it off the event loop). Raises TemplateFailed."""
        proc = self._idle.get()
        try:
            if proc is None or proc.poll() is not None:
                proc = self._spawn()
            data = json.dumps({"source": source, "context": context, "max_chars": self.max_chars},
                              ensure_ascii=False).encode()
            proc.stdin.write(struct.pack(">I", len(data)) + data)
            proc.stdin.flush()
            reply = json.loads(self._read(proc, time.monotonic() + self.timeout))
        except TimeoutError:
            proc = self._kill(proc)
            raise TemplateFailed(f"rendering took longer than {self.timeout:g}s") from None
        except (OSError, EOFError, ValueError):
            proc = self._kill(proc)
            raise TemplateFailed("the renderer process failed (out of memory?)") from None
        finally:
            self._idle.put(proc)
        if "error" in reply:
            raise TemplateFailed(reply["error"])
        return reply["text"]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            procs, self._procs = list(self._procs), set()
        for proc in procs:
            proc.kill()
            proc.wait()

    # -- internals ----------------------------------------------------------------------------------------------
    def _spawn(self) -> subprocess.Popen:
        import swiftlike

        root = str(Path(swiftlike.__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        with self._lock:
            if self._closed:
                raise OSError("the server is shutting down")
            proc = subprocess.Popen([sys.executable, "-m", "swiftlike.serve.render_worker", str(self.memory)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
            self._procs.add(proc)
        return proc

    def _kill(self, proc):
        if proc is not None:
            proc.kill()
            proc.wait()
            with self._lock:
                self._procs.discard(proc)
        return None

    def _read(self, proc, deadline: float) -> bytes:
        fd = proc.stdout.fileno()
        buf = b""
        need = 4
        header = True
        while True:
            while len(buf) < need:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise TimeoutError
                chunk = os.read(fd, need - len(buf))
                if not chunk:
                    raise EOFError
                buf += chunk
            if not header:
                return buf
            need = struct.unpack(">I", buf)[0]
            buf, header = b"", False
