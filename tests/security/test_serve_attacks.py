"""The attacks of the security review of `swiftlike serve`, each replayed against a real server (uvicorn on
127.0.0.1, the tiny model, real HTTP) or the real engine; every test here failed before its fix."""
import json
import logging
import os
import queue
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from swiftlike.registry import SwiftlikeError
from test_serve import ASK, KEYS, Server, stream_lines
from test_serve_engine import make_adapter, reference

# An adapter's own chat template (manifest template_text) that misbehaves on request: slow, huge output, huge string.
TRAP_TEMPLATE = (
    "{%- set last = messages[-1]['content'] -%}"
    "{%- if last == 'slow' -%}{%- for i in range(100000) -%}{%- for j in range(1000) -%}{%- endfor -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if last == 'big' -%}{%- for i in range(100000) -%}{{ 'x' * 100000 }}{%- endfor -%}{%- endif -%}"
    "{%- if last == 'bomb' -%}{{ last * 400000000 }}{%- endif -%}"  # 1.6 GB (a constant would be folded at compile)
    "{%- for m in messages -%}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}")


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory):
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("attack-adapters")
    hot = make_adapter(tiny_model, root / "hot", seed=11)
    # finite weights so large that x·A already overflows float32: inf in the shared matmul, NaN logits for its rows
    tensors = load_file(str(hot / "adapter_model.safetensors"))
    save_file({k: torch.sign(v) * 3e38 if "lora_A" in k else v * 1e30 for k, v in tensors.items()},
              str(hot / "adapter_model.safetensors"))
    trap = make_adapter(tiny_model, root / "trap", seed=12, template="chatml")
    manifest = json.loads((trap / "swiftlike.json").read_text())
    (trap / "swiftlike.json").write_text(json.dumps({**manifest, "template_text": TRAP_TEMPLATE}))
    return {"a0": make_adapter(tiny_model, root / "a0", seed=10), "hot": hot, "trap": trap}


@pytest.fixture(scope="module")
def server(tiny_model, adapters):
    """Open (no tenants: every caller is admin), loopback, default limits but a 1 s template timeout."""
    s = Server(model=str(tiny_model), template="smollm2", max_batch_size=8, max_tokens=512, template_timeout=1.0,
               adapters=[f"{n}={p}" for n, p in adapters.items()])
    yield s
    s.close()


@pytest.fixture(scope="module")
def base_ref(tiny_model):
    return reference(None, ASK, 20, base_dir=tiny_model)


def chat_body(model, **kw):
    return {"model": model, "messages": ASK, "temperature": 0, "max_tokens": 20, **kw}


def raw(port, data: bytes, timeout=30) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    return s


def status_line(sock) -> str:
    try:
        return sock.recv(4096).split(b"\r\n")[0].decode()
    except OSError as err:
        return type(err).__name__


def health_latency_while(server, *jobs):
    """The worst /health latency while `jobs` run, and their results."""
    worst, stop = [0.0], threading.Event()

    def poll():
        while not stop.is_set():
            t0 = time.perf_counter()
            assert server.call("GET", "/health").status_code == 200
            worst[0] = max(worst[0], time.perf_counter() - t0)
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        with ThreadPoolExecutor(len(jobs)) as ex:
            results = list(ex.map(lambda job: job(), jobs))
    finally:
        stop.set()
        poller.join()
    return worst[0], results


# -- 1. one request takes the machine's memory ------------------------------------------------------------------
def test_kv_cache_holds_only_the_rows_in_use_capped_at_context_and_freed_when_idle(server):
    """One request used to allocate every batch slot × (prompt + 128) columns, double that past 128 new tokens, and
    keep it; now: one row, at most prompt + max_tokens columns, never past the context, freed when idle."""
    eng = server.rt.engine
    eng.stats["kv_peak_bytes"] = 0  # the engine is idle
    context = server.rt.context_length
    shapes, done = [], threading.Event()

    def watch():
        while not done.is_set():
            la = eng.cache.layers[0]
            keys = la.keys
            if keys is not None:
                shapes.append(tuple(keys.shape))
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    body = {"model": server.rt.base_name, "prompt": "word " * 300, "max_tokens": 400, "temperature": 0,
            "ignore_eos": True}
    r = server.call("POST", "/v1/completions", json=body)
    done.set()
    watcher.join()
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["total_tokens"] == context  # max_tokens was cut to what the context leaves
    assert shapes and {s[0] for s in shapes} == {1}, "one request, one row of cache"
    assert max(s[2] for s in shapes) <= context
    assert 0 < eng.stats["kv_peak_bytes"] <= eng.kv_bytes(1, usage["total_tokens"])
    deadline = time.time() + 5
    while eng.cache.nbytes or eng.cache.layers[0].keys is not None:
        assert time.time() < deadline, "the cache was not freed when the server went idle"
        time.sleep(0.02)


def test_kv_budget_queues_what_does_not_fit_and_refuses_what_never_can(server, tiny_model, base_ref):
    n = server.call("POST", "/v1/chat/completions", json=chat_body(server.rt.base_name, max_tokens=1)).json()[
        "usage"]["prompt_tokens"]
    budget = (2 * (n + 20) + n) * 256 + 100  # tiny model: 256 bytes per token; two rows, and one prompt's prefill
    s = Server(model=str(tiny_model), template="smollm2", max_batch_size=8, max_kv_memory=str(budget))
    try:
        eng = s.rt.engine
        assert eng.kv_bytes_per_token == 256
        with ThreadPoolExecutor(6) as ex:
            answers = list(ex.map(lambda _: s.call("POST", "/v1/chat/completions", json=chat_body(s.rt.base_name)),
                                  range(6)))
        for r in answers:
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == base_ref
        assert 0 < eng.stats["kv_peak_bytes"] <= budget
        assert eng.stats["decode_rows"] > eng.stats["decode_steps"], "two requests fit together"
        # a request without max_tokens gets what the budget leaves; one whose prompt alone cannot fit is refused
        r = s.call("POST", "/v1/chat/completions", json={"model": s.rt.base_name, "messages": ASK,
                                                         "ignore_eos": True, "temperature": 0})
        assert r.status_code == 200 and r.json()["usage"]["total_tokens"] <= budget // 256
        r = s.call("POST", "/v1/completions", json={"model": s.rt.base_name, "prompt": "word " * 120})
        assert r.status_code == 422 and r.json()["error"]["code"] == "context_length_exceeded"
        assert "--max_kv_memory" in r.json()["error"]["message"]
        assert f"swiftlike_kv_cache_budget_bytes {budget}" in s.call("GET", "/metrics").text
    finally:
        s.close()


# -- 2. one tenant kills every tenant's requests ----------------------------------------------------------------
def test_overflowing_temperature_does_not_touch_its_neighbours(server, base_ref):
    """temperature 1e-37 with frequency_penalty -2 overflowed to NaN in the batched step and every row got a 500;
    now it is greedy, and neighbours joining its batch get exactly their answers."""
    base = server.rt.base_name
    lines = stream_lines(server.url + "/v1/chat/completions", {},
                         chat_body(base, temperature=1e-37, frequency_penalty=-2, max_tokens=200, ignore_eos=True,
                                   stream=True))
    first = next(lines)
    with ThreadPoolExecutor(2) as ex:
        neighbours = list(ex.map(lambda _: server.call("POST", "/v1/chat/completions", json=chat_body(base)),
                                 range(2)))
    rest = [first] + list(lines)
    assert rest[-1] == "data: [DONE]" and not any('"error"' in x for x in rest)
    assert json.loads(rest[-2][6:])["choices"][0]["finish_reason"] == "length"
    for r in neighbours:
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == base_ref
    for t in (1e-300, 5e-324, 1e-6):
        r = server.call("POST", "/v1/chat/completions", json=chat_body(base, temperature=t, frequency_penalty=-2))
        assert r.status_code == 200, (t, r.text)


def test_poisoned_adapter_fails_only_its_own_request(server, base_ref):
    base = server.rt.base_name
    with ThreadPoolExecutor(3) as ex:
        hot, *others = ex.map(lambda m: server.call("POST", "/v1/chat/completions", json=chat_body(m)),
                              ["hot", base, base])
    assert hot.status_code == 500 and hot.json()["error"]["code"] == "engine_error"
    assert "non-finite" in hot.json()["error"]["message"]
    for r in others:
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == base_ref


class Bare:
    """The tiny model wrapped for batched LoRA, its adapters read (no server)."""

    def __init__(self, tiny_model, adapters):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from swiftlike.infer.lora import LoraContext, ResidentAdapter, read_lora, wrap_linears

        self.model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
        self.ctx = LoraContext()
        self.wrapped = wrap_linears(self.model, self.ctx)
        self.loaded = {n: ResidentAdapter(n, 1, p, read_lora(p, self.wrapped), None, 4, 0)
                       for n, p in adapters.items()}
        self.tok = AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def bare(tiny_model, adapters):
    return Bare(tiny_model, adapters)


def test_an_overflowing_adapter_stays_in_its_rows(bare):
    """Rows of several adapters share one matmul; the other rows' columns were zeroed by multiplying, and 0 * inf
    is NaN: one adapter's overflow reached every row of the batch."""
    from swiftlike.infer.lora import LoraBatch

    model, ctx, loaded = bare.model, bare.ctx, bare.loaded
    ids = torch.randint(3, 1000, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), ctx.use(LoraBatch.of([loaded["hot"], loaded["a0"]])):
        mixed = model(input_ids=ids).logits
    with torch.no_grad(), ctx.use(LoraBatch.of([loaded["a0"]])):
        alone = model(input_ids=ids[1:]).logits
    assert not torch.isfinite(mixed[0]).all()
    torch.testing.assert_close(mixed[1], alone[0], atol=1e-5, rtol=1e-4)


def test_a_row_that_fails_in_decode_fails_alone(bare):
    """A row whose sampling raises (here: +inf logits once its penalty applies, in the first decode step) used to
    fail the whole batch."""
    from swiftlike.infer.engine import Engine, Request

    ids = bare.tok("Once upon a time", add_special_tokens=False).input_ids

    def make(**kw):
        done = queue.Queue()
        return Request(ids, 24, lambda t, f: f is not None and done.put(f), **kw), done

    def run(*reqs):
        engine = Engine(bare.model, bare.ctx, max_batch_size=4, pad_token_id=bare.tok.pad_token_id)
        for req, _ in reqs:
            engine.submit(req)  # before the engine starts: admitted together, decoded in the same steps
        engine.start()
        try:
            return [done.get(timeout=30) for _, done in reqs]
        finally:
            engine.stop()

    alone = make()
    assert run(alone) == ["length"]
    bad, good = make(frequency_penalty=float("-inf")), make()
    finishes = run(bad, good)
    assert finishes[0].startswith("error: NonFiniteLogits") and finishes[1] == "length"
    assert good[0].output == alone[0].output


def test_non_finite_adapter_weights_are_refused(server, tiny_model, tmp_path, bare):
    from safetensors.torch import load_file, save_file

    from swiftlike.infer.lora import read_lora

    bad = make_adapter(tiny_model, tmp_path / "inf", seed=3)
    tensors = load_file(str(bad / "adapter_model.safetensors"))
    first = next(iter(tensors))
    tensors[first] = tensors[first].clone().fill_(float("inf"))
    save_file(tensors, str(bad / "adapter_model.safetensors"))
    with pytest.raises(SwiftlikeError, match="non-finite"):
        read_lora(bad, bare.wrapped)
    r = server.call("POST", "/v1/adapters", json={"name": "inf", "source": str(bad)})
    assert r.status_code == 400 and "non-finite" in r.json()["error"]["message"] and "inf" not in server.rt.pool


# -- 3. large or slow requests freeze the server ----------------------------------------------------------------
def test_big_bodies_are_refused_and_health_keeps_answering(server):
    port, big = server.port, 20 * 2 ** 20
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {big}\r\n\r\n").encode()
    chunk = b"x" * 2 ** 20

    def send(first: bytes, body):
        """Send a request; the status line of the answer, read while the body is still going out."""
        s = raw(port, first)
        answer = []
        reader = threading.Thread(target=lambda: answer.append(status_line(s)))
        reader.start()
        try:
            for piece in body:
                s.sendall(piece)
        except OSError:
            pass  # answered and closed before the whole body went out
        reader.join(30)
        s.close()
        return answer[0] if answer else "no answer"

    def announced():
        return send(head, [chunk] * 20)

    def chunked():
        return send((f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: "
                     f"application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode(),
                    [b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(20)] + [b"0\r\n\r\n"])

    base = server.rt.base_name
    many = lambda: server.call("POST", "/v1/chat/completions",  # noqa: E731
                               json={"model": base, "messages": [{"role": "user", "content": "x"}] * 200_000})
    long_prompt = lambda: server.call("POST", "/v1/completions",  # noqa: E731
                                      json={"model": base, "prompt": "hello world, this is a test. " * 100_000})
    worst, (a, c, m, p) = health_latency_while(server, announced, chunked, many, long_prompt)
    assert " 413 " in a and " 413 " in c, (a, c)
    assert m.status_code == 422 and "messages" in m.json()["error"]["message"]
    assert p.status_code == 422 and p.json()["error"]["code"] == "context_length_exceeded"
    # the figure itself (~0.1 s) is bench/serve_memory.py's; this only catches a loop blocked by the upload
    assert worst < 3.0, f"/health took {worst:.2f}s"
    r = server.call("POST", "/v1/chat/completions", json=chat_body(base))
    assert r.status_code == 200


def test_an_adapters_own_template_is_rendered_out_of_process_with_limits(server):
    def trap(content):
        t0 = time.perf_counter()
        r = server.call("POST", "/v1/chat/completions",
                        json=chat_body("trap", messages=[{"role": "user", "content": content}]))
        return r, time.perf_counter() - t0

    worst, [(slow, seconds)] = health_latency_while(server, lambda: trap("slow"))
    assert slow.status_code == 422 and slow.json()["error"]["code"] == "template_error", slow.text
    assert "longer than 1s" in slow.json()["error"]["message"] and seconds < 5
    # the figure itself (~0.1 s) is bench/serve_memory.py's; this only catches a loop blocked by the upload
    assert worst < 3.0, f"/health took {worst:.2f}s"
    big, _ = trap("big")
    assert big.status_code == 422 and "longer than" in big.json()["error"]["message"]
    bomb, _ = trap("bomb")
    assert bomb.status_code == 422 and "memory" in bomb.json()["error"]["message"]
    ok, _ = trap("Hello!")  # the killed workers were replaced
    assert ok.status_code == 200, ok.text


# -- 4. a non-streaming request keeps generating after its client leaves ----------------------------------------
def test_a_client_that_leaves_stops_its_generation(server):
    eng = server.rt.engine
    before = eng.stats["generated_tokens"]
    body = json.dumps({"model": server.rt.base_name, "prompt": "Hello", "max_tokens": 500, "temperature": 0,
                       "ignore_eos": True}).encode()
    s = raw(server.port, b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
    deadline = time.time() + 10
    while eng.running == 0:
        assert time.time() < deadline
        time.sleep(0.002)
    s.close()
    deadline = time.time() + 2
    while eng.running:
        assert time.time() < deadline, "the request kept running after its client left"
        time.sleep(0.005)
    assert eng.stats["generated_tokens"] - before < 500


# -- 5. any web page can drive an open server -------------------------------------------------------------------
def test_a_web_page_cannot_drive_an_open_server(server, adapters):
    s = server
    as_form = {"Content-Type": "text/plain"}
    r = s.call("POST", "/v1/adapters", headers=as_form,
               content=json.dumps({"name": "evil", "source": str(adapters["a0"])}).encode())
    assert r.status_code == 415 and "evil" not in s.rt.pool
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = s.call("POST", "/v1/unload_lora_adapter", headers={"Content-Type": kind}, content=b'{"lora_name": "a0"}')
        assert r.status_code == 415 and "a0" in s.rt.pool
    # DNS rebinding: the attacker's name in Host
    for host in ("evil.example", f"evil.example:{s.port}", "127.0.0.1.evil.example"):
        r = s.call("GET", "/v1/models", headers={"Host": host})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host", host
    for host in (f"127.0.0.1:{s.port}", f"localhost:{s.port}", "localhost"):
        assert s.call("GET", "/v1/models", headers={"Host": host}).status_code == 200
    # a cross-origin page sending JSON (after a preflight the browser would not get through)
    evil = {"Origin": "http://evil.example"}
    assert s.call("OPTIONS", "/v1/adapters", headers={**evil, "Access-Control-Request-Method": "POST"}) \
        .status_code == 403
    r = s.call("POST", "/v1/adapters", headers=evil, json={"name": "evil", "source": str(adapters["a0"])})
    assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin" and "evil" not in s.rt.pool
    assert s.call("GET", "/v1/models", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    same = {"Origin": f"http://127.0.0.1:{s.port}", "Sec-Fetch-Site": "same-origin"}
    assert s.call("GET", "/v1/models", headers=same).status_code == 200


def test_cors_origins_and_allowed_hosts_open_what_they_name(tiny_model):
    s = Server(model=str(tiny_model), template="smollm2", cors_origins=["http://app.example"],
               allowed_hosts=["api.example"])
    try:
        app = {"Origin": "http://app.example"}
        pre = s.call("OPTIONS", "/v1/chat/completions", headers={**app, "Access-Control-Request-Method": "POST",
                                                                 "Access-Control-Request-Headers": "content-type"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://app.example"
        r = s.call("POST", "/v1/chat/completions", headers=app, json=chat_body(s.rt.base_name, max_tokens=2))
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"
        assert s.call("GET", "/v1/models", headers={"Origin": "http://other.example"}).status_code == 403
        assert s.call("GET", "/v1/models", headers={"Host": "api.example"}).status_code == 200
        assert s.call("GET", "/v1/models", headers={"Host": "other.example"}).status_code == 400
    finally:
        s.close()


# -- 9. an installed adapter is re-checked whenever serve loads it ---------------------------------------------------
def test_a_store_adapter_tampered_after_start_is_refused_when_loaded(tiny_model, adapters, tmp_path, monkeypatch,
                                                                     swiftlike_home):
    """The seal was checked when a name was resolved (start-up, POST /v1/adapters), but serve loads lazily and again
    after an eviction: weights changed in the store in between were loaded and served."""
    from swiftlike.adapters import resolve
    from swiftlike.adapters.publish import push
    from swiftlike.adapters.store import install
    from swiftlike.checkpoint import write_manifest

    monkeypatch.setenv("SWIFTLIKE_LOCAL_HUB", str(tmp_path / "hub"))
    src = make_adapter(tiny_model, tmp_path / "nova", seed=13)
    write_manifest(src, json.loads((src / "swiftlike.json").read_text()))  # with its file table, as sft writes it
    push(src, "local:acme/nova")
    install("local:acme/nova")
    weights = resolve("nova") / "adapter_model.safetensors"
    original = weights.read_bytes()

    def tamper():  # one weight changed; same size and mtime (what `adapter verify` catches)
        st = weights.stat()
        flipped = bytearray(original)
        flipped[-1] ^= 1
        weights.write_bytes(bytes(flipped))
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))

    s = Server(model=str(tiny_model), template="smollm2", max_resident=1, adapters=["nova=nova",
                                                                                    f"a0={adapters['a0']}"])
    try:
        tamper()  # after start-up resolved it, before its first (lazy) load
        r = s.call("POST", "/v1/chat/completions", json=chat_body("nova"))
        assert r.status_code == 500 and r.json()["error"]["code"] == "adapter_unavailable", r.text
        assert str(swiftlike_home) not in r.text  # the reason (store paths) is for the operator's log
        assert "nova" not in s.rt.pool.resident() and s.rt.pool.load_failures == 1

        weights.write_bytes(original)  # repaired: loads (after one full re-hash), then evicted by a0
        assert s.call("POST", "/v1/chat/completions", json=chat_body("nova")).status_code == 200
        assert s.call("POST", "/v1/chat/completions", json=chat_body("a0")).status_code == 200
        assert s.rt.pool.resident() == ["a0"]
        tamper()  # between an eviction and the next load
        r = s.call("POST", "/v1/chat/completions", json=chat_body("nova"))
        assert r.status_code == 500 and r.json()["error"]["code"] == "adapter_unavailable", r.text
        assert s.call("POST", "/v1/chat/completions", json=chat_body("a0")).status_code == 200  # others unaffected
    finally:
        s.close()


# -- 11. slow clients are never timed out; dropped bodies log tracebacks ----------------------------------------
class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_slow_clients_are_cut_off_and_dropped_bodies_log_one_line(tiny_model):
    records = _Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "swiftlike.serve")]
    levels = [lg.level for lg in loggers]
    s = Server(model=str(tiny_model), template="smollm2", read_timeout=1.0)
    for lg in loggers:
        lg.addHandler(records)
        lg.setLevel(logging.INFO)
    try:
        port = s.port
        half = [raw(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ") for _ in range(30)]
        huge = [raw(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                          b"\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 1000) for _ in range(10)]
        trickle = [raw(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                             b"application/json\r\nContent-Length: 1000000\r\n\r\n{") for _ in range(10)]
        dropped = raw(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                            b"application/json\r\nContent-Length: 1000000\r\n\r\n" + b" " * 100_000)
        time.sleep(0.3)
        dropped.close()
        open_ = {sock: b"" for sock in half + huge + trickle}
        deadline = time.time() + 4
        while open_ and time.time() < deadline:
            ready, _, _ = select.select(list(open_), [], [], 0.2)
            for sock in ready:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if data:
                    open_[sock] += data
                else:
                    sock.close()
                    del open_[sock]
        assert not open_, f"{len(open_)} slow connections still open"
        assert s.call("GET", "/health").status_code == 200
        time.sleep(0.2)
        assert not [r for r in records.records if r.exc_info], "a traceback was logged"
        lines = [r.getMessage() for r in records.records]
        # one line per connection: the bodies cut off or dropped (10 + 1), the headers never completed (30)
        assert sum("request body incomplete" in m for m in lines) == 11, lines
        assert sum("no complete request within 1s" in m for m in lines) == 30, lines
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(records)
            lg.setLevel(level)
        s.close()


def test_connections_beyond_max_connections_are_answered_503(tiny_model):
    """300 half-sent requests all held a connection; past --max_connections a request is answered 503 at once."""
    s = Server(model=str(tiny_model), template="smollm2", max_connections=4, read_timeout=30.0)
    try:
        half = [raw(s.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ") for _ in range(4)]
        deadline = time.time() + 5
        while len(s.server.server_state.connections) < 4:
            assert time.time() < deadline
            time.sleep(0.01)
        r = s.call("GET", "/health")
        assert r.status_code == 503, r.text
        for sock in half:
            sock.close()
        deadline = time.time() + 5
        while s.server.server_state.connections:
            assert time.time() < deadline
            time.sleep(0.01)
        assert s.call("GET", "/health").status_code == 200
    finally:
        s.close()


# -- 12. 500 instead of 422 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", [
    '"seed": 18446744073709551616', '"seed": -9223372036854775809', '"temperature": 1e999', '"temperature": NaN',
    '"temperature": Infinity', '"top_p": -Infinity', '"max_tokens": 1' + "0" * 5000,
    '"messages": ' + "[" * 200_000 + "]" * 200_000,
], ids=["seed>=2^64", "seed<-2^63", "1e999", "NaN", "Infinity", "-Infinity", "5000-digit int", "200k-deep"])
def test_out_of_range_values_are_422(server, field):
    content = json.dumps(chat_body(server.rt.base_name))[:-1] + ", " + field + "}"  # the last duplicate key wins
    r = server.call("POST", "/v1/chat/completions", content=content.encode())
    assert r.status_code == 422, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_seed_bounds_are_accepted(server):
    for seed in (2 ** 64 - 1, -2 ** 63, 0):
        r = server.call("POST", "/v1/chat/completions", json=chat_body(server.rt.base_name, seed=seed,
                                                                       temperature=0.8, max_tokens=4))
        assert r.status_code == 200, r.text


# -- 15. the admin key of --admin_key_env may be a tenant's key --------------------------------------------------
def test_admin_key_env_that_is_a_tenant_key_is_refused(tmp_path, monkeypatch):
    from swiftlike.serve.auth import key_hash
    from swiftlike.serve.runtime import Runtime, ServeArguments

    tenants = tmp_path / "tenants.toml"
    tenants.write_text(f'[tenants.acme]\nkey_sha256 = "{key_hash("k-acme")}"\nadapters = ["*"]\n')
    monkeypatch.setenv("SL_ADMIN", "k-acme")
    with pytest.raises(SwiftlikeError, match="also tenant 'acme'"):
        Runtime(ServeArguments(model="unused", tenants=str(tenants), admin_key_env="SL_ADMIN"))


# -- 17. /openapi.json and /docs without a key -------------------------------------------------------------------
def test_api_schema_needs_a_key_and_docs_are_off(tiny_model, tmp_path):
    from swiftlike.serve.auth import key_hash

    tenants = tmp_path / "tenants.toml"
    tenants.write_text(f'[tenants.acme]\nkey_sha256 = "{key_hash(KEYS["acme"])}"\n')
    s = Server(model=str(tiny_model), template="smollm2", tenants=str(tenants))
    try:
        assert s.call("GET", "/openapi.json").status_code == 401
        r = s.call("GET", "/openapi.json", KEYS["acme"])
        assert r.status_code == 200 and "/v1/chat/completions" in r.json()["paths"]
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert s.call("GET", path).status_code in (401, 404)
            assert s.call("GET", path, KEYS["acme"]).status_code == 404
    finally:
        s.close()


# -- the stacked-weights cache shared by the event loop and the engine thread ------------------------------------
def test_only_the_engine_thread_touches_the_stacked_lora_weights(bare, tiny_model, adapters):
    """drop_cached (event loop) used to edit each layer's dict while the engine thread read and reordered it; now
    other threads only queue the uid, and the engine thread drops it."""
    from swiftlike.infer.engine import Engine, Request

    ctx, a0, a1 = bare.ctx, bare.loaded["a0"], bare.loaded["trap"]
    ids = bare.tok("Hi", add_special_tokens=False).input_ids
    engine = Engine(bare.model, ctx, max_batch_size=4, pad_token_id=bare.tok.pad_token_id)
    done = queue.Queue()
    for adapter in (a0, a1):  # queued before the start: prefilled alone, then decoded together (stacked weights)
        engine.submit(Request(ids, 3, lambda t, f: f and done.put(f), adapter=adapter))
    engine.start()
    try:
        assert [done.get(timeout=30) for _ in range(2)] == ["length", "length"]
        layers = [la for la in ctx.layers if la._cat]
        assert layers and all(any(a0.uid in k for k in la._cat) for la in layers)
        with engine.cond:  # the engine thread is parked on this lock: nothing may change under us
            engine.forget_adapter(a0.uid)
            time.sleep(0.1)
            assert all(any(a0.uid in k for k in la._cat) for la in layers), "another thread edited the cache"
        deadline = time.time() + 5
        while any(any(a0.uid in k for k in la._cat) for la in layers):
            assert time.time() < deadline, "the engine thread did not drop the forgotten adapter"
            time.sleep(0.01)
    finally:
        engine.stop()
