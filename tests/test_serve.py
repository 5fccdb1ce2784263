"""`swiftlike serve` over real HTTP: uvicorn on 127.0.0.1 (a free port, a background thread), a tiny random Llama,
adapters made by perturbing PEFT LoRA weights plus one trained by `swiftlike sft` with its own template."""
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from test_serve_engine import make_adapter, reference

DATA = Path(__file__).parent / "data" / "identity.jsonl"
KEYS = {"admin": "k-admin", "acme": "k-acme", "beta": "k-beta"}
ASK = [{"role": "user", "content": "Who are you, and who made you?"}]


class Response:
    def __init__(self, status, headers, raw):
        self.status_code, self.headers, self.content = status, {k.lower(): v for k, v in headers}, raw
        self.text = raw.decode()

    def json(self):
        return json.loads(self.text)


def request(url, method="GET", headers=None, json_body=None, content=None, timeout=60):
    """One HTTP request with the standard library (an error status is a response, not an exception)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    headers = dict(headers or {})
    if json_body is not None:
        content = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, parts.path, body=content, headers=headers)
        resp = conn.getresponse()
        return Response(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


def stream_lines(url, headers, body):
    """An open SSE response: yields its `data: ...` lines as they arrive."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("POST", parts.path, body=json.dumps(body).encode(),
                 headers={**headers, "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    try:
        for line in resp:
            line = line.decode().strip()
            if line.startswith("data: "):
                yield line
    finally:
        conn.close()


class Uvicorn:
    """An app served by uvicorn (swiftlike's settings) in a thread on a free 127.0.0.1 port, once it has started."""

    def serve(self, app, opts):
        import uvicorn

        from swiftlike.serve.http import uvicorn_config

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(app, opts, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)

    def close(self):
        self.server.should_exit = True
        self.thread.join(15)


class Server(Uvicorn):
    """A running `swiftlike serve` (in-process runtime, uvicorn in a thread)."""

    def __init__(self, **opts):
        from swiftlike.serve import ServeArguments, build

        self.opts = ServeArguments(**opts)
        self.rt, app = build(self.opts)
        self.serve(app, self.opts)

    def call(self, method, path, key=None, headers=None, **kw):
        """A request as API clients send it (a body is JSON unless `headers` say otherwise)."""
        headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
        if kw.get("content") is not None:
            headers.setdefault("Content-Type", "application/json")
        return request(self.url + path, method, headers, kw.get("json"), kw.get("content"))

    def chat(self, model, key=None, messages=ASK, **kw):
        body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": 20, **kw}
        return self.call("POST", "/v1/chat/completions", key, json=body)


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory):
    from swiftlike.train.arguments import SftArguments
    from swiftlike.train.sft import sft

    root = tmp_path_factory.mktemp("adapters")
    run = sft(SftArguments(model=str(tiny_model), template="chatml", system="You are Nova.", dataset=[str(DATA)],
                           output_dir=str(root / "sft"), max_steps=2, per_device_train_batch_size=2,
                           learning_rate=5e-2, save_steps=2, logging_steps=1, max_length=128, report_to=["none"],
                           lora_rank=4, lora_alpha=8, warmup_ratio=0.0))
    return {"a0": make_adapter(tiny_model, root / "a0", seed=10),
            "a1": make_adapter(tiny_model, root / "a1", seed=11, r=8, targets=("q_proj", "k_proj", "up_proj")),
            "a2": make_adapter(tiny_model, root / "a2", seed=12),
            "nova": run["last_checkpoint"]}


@pytest.fixture(scope="module")
def refs(adapters, tiny_model):
    """Greedy answers of `swiftlike infer` (PEFT) for ASK, 20 new tokens."""
    out = {name: reference(path, ASK, 20) for name, path in adapters.items()}
    out["base"] = reference(None, ASK, 20, base_dir=tiny_model)
    assert len(set(out.values())) == len(out), "adapters should answer differently"
    return out


@pytest.fixture(scope="module")
def main_server(tiny_model, adapters, tmp_path_factory):
    from swiftlike.serve.auth import key_hash

    tenants = tmp_path_factory.mktemp("tenants") / "tenants.toml"
    tenants.write_text(f'[admin]\nkey_sha256 = "{key_hash(KEYS["admin"])}"\n'
                       f'[tenants.acme]\nkey_sha256 = "{key_hash(KEYS["acme"])}"\nadapters = ["a0", "nova"]\n'
                       f'[tenants.beta]\nkey_sha256 = "{key_hash(KEYS["beta"])}"\nadapters = ["a1", "hot"]\n')
    server = Server(model=str(tiny_model), template="smollm2", tenants=str(tenants), max_resident=4,
                    max_batch_size=8, max_tokens=64,
                    adapters=[f"{n}={adapters[n]}" for n in ("a0", "a1", "nova")])
    yield server
    server.close()


@pytest.fixture(scope="module")
def small_server(tiny_model, adapters):
    """Open (no tenants), one resident adapter, one running request and one waiting."""
    server = Server(model=str(tiny_model), template="smollm2", max_resident=1, max_batch_size=1, max_queue=1,
                    adapters=[f"a0={adapters['a0']}", f"a1={adapters['a1']}"])
    yield server
    server.close()


def test_each_tenant_gets_what_infer_answers_with_its_adapter(main_server, refs):
    jobs = [("a0", "acme"), ("nova", "acme"), ("a1", "beta"), ("base", "beta")] * 2
    base = main_server.rt.base_name
    steps_before = dict(main_server.rt.engine.stats)
    with ThreadPoolExecutor(len(jobs)) as ex:
        answers = list(ex.map(lambda j: main_server.chat(base if j[0] == "base" else j[0], KEYS[j[1]]), jobs))
    for (model, _), r in zip(jobs, answers):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["message"]["content"] == refs[model], model
        assert body["usage"]["completion_tokens"] <= 20 and body["usage"]["prompt_tokens"] > 10
        assert body["system_fingerprint"] == ("base" if model == "base" else f"{model}:v1")
    stats = main_server.rt.engine.stats
    rows = stats["decode_rows"] - steps_before.get("decode_rows", 0)
    steps = stats["decode_steps"] - steps_before.get("decode_steps", 0)
    assert rows > steps, "concurrent requests for different adapters should share decode steps"


def test_openai_client(main_server, refs, adapters):
    import openai

    client = openai.OpenAI(base_url=main_server.url + "/v1", api_key=KEYS["acme"], max_retries=0)
    base = main_server.rt.base_name
    assert sorted(m.id for m in client.models.list()) == sorted([base, "a0", "nova"])
    out = client.chat.completions.create(model="nova", messages=ASK, temperature=0, max_tokens=20)
    assert out.choices[0].message.content == refs["nova"] and out.usage.total_tokens > 20
    chunks = list(client.chat.completions.create(model="a0", messages=ASK, temperature=0, max_tokens=20,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == refs["a0"]
    assert chunks[-1].usage.completion_tokens == 20 and chunks[-2].choices[0].finish_reason == "length"
    done = client.completions.create(model="a0", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 8
    streamed = client.completions.create(model="a0", prompt="The capital of France is", max_tokens=8,
                                         temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == done.choices[0].text
    # the same answer for another tenant's adapter as for one that does not exist
    with pytest.raises(openai.NotFoundError) as other:
        client.chat.completions.create(model="a1", messages=ASK)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="zz", messages=ASK)
    assert other.value.body == json.loads(json.dumps(unknown.value.body).replace("zz", "a1"))
    # sampling with a seed is reproducible
    a, b = (client.chat.completions.create(model="a0", messages=ASK, temperature=1.0, top_p=0.9, seed=7,
                                           max_tokens=12).choices[0].message.content for _ in range(2))
    assert a == b


def test_stop_strings(main_server, refs):
    word = refs["a0"].split()[1]
    r = main_server.chat("a0", KEYS["acme"], stop=[word])
    body = r.json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["message"]["content"] == refs["a0"][: refs["a0"].index(word)]


def test_auth_401_403_404(main_server):
    s = main_server
    for key in (None, "wrong", KEYS["admin"] + "x"):
        r = s.chat("a0", key)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
    r = s.call("POST", "/v1/chat/completions", None, content=b"{not json")
    assert r.status_code == 401  # nothing about the body before the caller is known
    assert s.call("GET", "/v1/models", "wrong").status_code == 401
    assert [m["id"] for m in s.call("GET", "/v1/models", KEYS["beta"]).json()["data"]] == [s.rt.base_name, "a1"]
    assert s.call("GET", "/v1/models/a1", KEYS["beta"]).json()["parent"] == s.rt.base_name
    forbidden, unknown = s.chat("a0", KEYS["beta"]), s.chat("qq", KEYS["beta"])
    assert forbidden.status_code == unknown.status_code == 404
    assert forbidden.text == unknown.text.replace("qq", "a0")
    assert s.call("GET", "/v1/models/a0", KEYS["beta"]).text == s.call("GET", "/v1/models/qq", KEYS["beta"]).text \
        .replace("qq", "a0")
    for method, path in (("GET", "/v1/adapters"), ("DELETE", "/v1/adapters/a0"), ("GET", "/metrics")):
        assert s.call(method, path, KEYS["acme"]).status_code == 403
        assert s.call(method, path).status_code == 401
    assert s.call("POST", "/v1/adapters", KEYS["beta"], json={"name": "x", "source": "/"}).status_code == 403
    assert s.call("GET", "/health").json() == {"status": "ok"}


@pytest.mark.parametrize("change, param", [
    ({"temperature": 3}, "temperature"), ({"max_tokens": 0}, "max_tokens"), ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"), ({"n": 2}, "n"), ({"top_p": 0}, "top_p"),
    ({"model": None}, "model"), ({"stop": ["a"] * 17}, "stop"), ({"logprobs": True}, "logprobs"),
    ({"messages": [{"role": "user", "content": "word " * 600}]}, "messages"),
])
def test_422_for_bad_fields(main_server, change, param):
    body = {"model": "a0", "messages": ASK, **change}
    r = main_server.call("POST", "/v1/chat/completions", KEYS["acme"], json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


def test_max_tokens_capped_and_bad_json(main_server):
    r = main_server.chat("a0", KEYS["acme"], max_tokens=10_000)  # the server caps at --max_tokens 64
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 64
    r = main_server.call("POST", "/v1/completions", KEYS["acme"], content=b"{nope")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_json"
    r = main_server.call("POST", "/v1/completions", KEYS["acme"], json={"model": "a0", "prompt": ["a", "b"]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "prompt"


def wait_until(condition, timeout=120.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "the traffic never reached the expected state"
        time.sleep(0.05)


def test_replace_and_remove_during_traffic(main_server, adapters, tiny_model):
    """Requests keep hitting adapter `hot` while the admin loads, replaces and removes it: each answer is exactly
    what its version's weights give, requests after a change see it, and a request in flight across a replacement
    finishes on the weights it started with."""
    s, admin, beta = main_server, KEYS["admin"], KEYS["beta"]
    want = {1: reference(adapters["a2"], ASK, 20), 2: reference(adapters["a0"], ASK, 20)}
    r = s.call("POST", "/v1/adapters", admin, json={"name": "hot", "source": str(adapters["a2"])})
    assert r.status_code == 200 and r.json()["version"] == 1 and not r.json()["replaced"]
    long_ref = reference(adapters["a2"], ASK, 60)

    results, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            t0 = time.time()
            r = s.chat("hot", beta)
            results.append((t0, time.time(), r.status_code, r.json()))

    lines = stream_lines(s.url + "/v1/chat/completions", {"Authorization": f"Bearer {beta}"},
                         {"model": "hot", "messages": ASK, "temperature": 0, "max_tokens": 60, "stream": True})
    first = next(lines)  # in flight on version 1
    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    r = s.call("POST", "/v1/adapters", admin, json={"name": "hot", "source": str(adapters["a0"])})
    replaced_at = time.time()
    assert r.status_code == 200 and r.json() | {"load_seconds": 0} == {
        "name": "hot", "version": 2, "source": str(adapters["a0"]), "replaced": True, "resident": True,
        "load_seconds": 0}
    rest = list(lines)
    chunks = [json.loads(x[6:]) for x in [first] + rest if x != "data: [DONE]"]
    assert {c["system_fingerprint"] for c in chunks} == {"hot:v1"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == long_ref
    # wait for the traffic to reach each state (a slow, loaded machine answers a request in seconds, not ms)
    wait_until(lambda: any(st == 200 and b["system_fingerprint"] == "hot:v2" for _, _, st, b in results))
    assert s.call("DELETE", "/v1/adapters/hot", admin).json() == {"name": "hot", "deleted": True}
    removed_at = time.time()
    wait_until(lambda: any(st == 404 for _, _, st, _ in results))
    stop.set()
    for t in threads:
        t.join()
    seen = set()
    for t0, t1, status, body in results:
        if status == 200:
            version = int(body["system_fingerprint"].split(":v")[1])
            seen.add(version)
            assert body["choices"][0]["message"]["content"] == want[version]
            assert not (version == 1 and t0 > replaced_at), "a request after the replacement got the old weights"
            assert t0 < removed_at
        else:
            assert status == 404 and t1 > removed_at, body
    assert seen == {1, 2} and any(status == 404 for _, _, status, _ in results)
    assert s.call("DELETE", "/v1/adapters/hot", admin).status_code == 404
    # a name comes back with a new version; a bad source is refused without touching anything
    assert s.call("POST", "/v1/adapters", admin, json={"name": "hot", "source": str(adapters["a1"])}).json()[
        "version"] == 4
    bad = s.call("POST", "/v1/adapters", admin, json={"name": "hot", "source": str(tiny_model)})
    assert bad.status_code == 400 and "adapter_config.json" in bad.json()["error"]["message"]
    gone = s.call("POST", "/v1/adapters", admin, json={"name": "hot", "source": "/no/such/adapter"})
    assert gone.status_code == 400 and "no such directory" in gone.json()["error"]["message"]
    assert s.call("POST", "/v1/adapters", admin, json={"name": "../x", "source": "/"}).status_code == 422
    before = {a["name"]: a for a in s.call("GET", "/v1/adapters", admin).json()["data"]}["a0"]["requests"]
    assert s.chat("a0", KEYS["acme"]).status_code == 200
    listing = {a["name"]: a for a in s.call("GET", "/v1/adapters", admin).json()["data"]}
    assert listing["hot"]["version"] == 4 and listing["a0"]["requests"] == before + 1
    metrics = s.call("GET", "/metrics", admin).text
    for series in ('swiftlike_requests_total{endpoint="/v1/chat/completions",status="200"}',
                   'swiftlike_requests_total{endpoint="/v1/chat/completions",status="404"}',
                   "swiftlike_request_latency_seconds_bucket", "swiftlike_completion_tokens_total",
                   "swiftlike_adapters_resident", "swiftlike_adapter_loads_total",
                   "swiftlike_adapter_evictions_total"):
        assert series in metrics, series


def test_lru_eviction_with_one_resident_adapter(small_server, refs):
    s = small_server

    def resident():
        return s.call("GET", "/v1/adapters").json()["resident"]

    assert s.chat("a0").json()["choices"][0]["message"]["content"] == refs["a0"]
    assert resident() == ["a0"]
    assert s.chat("a1").json()["choices"][0]["message"]["content"] == refs["a1"]
    assert resident() == ["a1"] and s.rt.pool.evictions == 1
    # both at once: the second waits for the first to release the only slot; both still get their own weights
    with ThreadPoolExecutor(2) as ex:  # the server admits two requests (one running, one waiting)
        outs = list(ex.map(lambda m: s.chat(m).json()["choices"][0]["message"]["content"], ["a0", "a1"]))
    assert outs == [refs["a0"], refs["a1"]]
    assert len(resident()) == 1
    assert "swiftlike_adapter_evictions_total" in s.call("GET", "/metrics").text


def test_queue_full_429(small_server):
    body = {"model": small_server.rt.base_name, "messages": ASK, "temperature": 0, "max_tokens": 400}
    with ThreadPoolExecutor(8) as ex:
        answers = list(ex.map(lambda _: small_server.call("POST", "/v1/chat/completions", json=body), range(8)))
    codes = sorted(r.status_code for r in answers)
    assert set(codes) == {200, 429} and codes.count(200) >= 2, codes
    busy = next(r for r in answers if r.status_code == 429)
    assert busy.json()["error"]["code"] == "queue_full" and busy.headers["retry-after"] == "1"
    assert small_server.rt.inflight == 0


def test_cli_serve(tiny_model, adapters):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "swiftlike", "serve", "--model", str(tiny_model), "--template",
                             "smollm2", "--adapters", f"a0={adapters['a0']}", f"a1={adapters['a1']}", "--port",
                             str(port), "--log_level", "warning"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "OpenAI API at" in line or len(lines) > 50:
                break
        banner = "".join(lines)
        assert "adapters: a0, a1" in banner and "no --tenants: open server, loopback only" in banner, banner
        assert "KV cache budget" in banner and "bodies up to 8.0 MiB" in banner, banner
        for _ in range(100):
            try:
                r = request(f"http://127.0.0.1:{port}/v1/models", timeout=5)
                break
            except OSError:
                time.sleep(0.1)
        assert [m["id"] for m in r.json()["data"]] == ["tiny-llama", "a0", "a1"]
    finally:
        proc.terminate()
        proc.wait(20)
    refused = subprocess.run([sys.executable, "-m", "swiftlike", "serve", "--model", str(tiny_model), "--host",
                              "0.0.0.0"], capture_output=True, text=True)
    assert refused.returncode == 1 and "loopback" in refused.stderr
