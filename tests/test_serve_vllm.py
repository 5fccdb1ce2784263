"""--infer_backend vllm on the CPU: the mapping from swiftlike's requests, adapters and options to vLLM's objects, and
the one-line refusal where vLLM cannot run.

Three parts:
- pure mapping (always): lora ids, sampling/engine/LoRA kwargs, adapter refusals, option checks, the refusal line
  (in process and through the CLI, before any model loads);
- vLLM's real objects (where `vllm` imports): SamplingParams, LoRARequest, AsyncEngineArgs and PEFTHelper built from
  those kwargs;
- `swiftlike serve` over HTTP with VllmRuntime (where `vllm` imports): tenants, the pool, templates, stop strings,
  streaming, admin load/unload and metrics run for real; only vLLM's GPU engine (AsyncLLM) is a stand-in that answers
  fixed tokens per LoRA in vLLM's real RequestOutput objects and records the SamplingParams and LoRARequest each
  request carried and the add_lora / remove_lora calls. The GPU run is bench/vllm_smoke.py.

vLLM imports on a CPU-only machine without its dependencies: `pip install --no-deps vllm==0.34.0 msgspec pyzmq
pybase64 cachetools uvloop py-cpuinfo prometheus_client` (about 240 MB to download, 570 MB installed; no torch).
"""
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from swiftlike.registry import SwiftlikeError
from test_serve import Uvicorn

ROOT = Path(__file__).resolve().parent.parent


def _vllm_objects():
    try:
        from vllm.lora.request import LoRARequest  # noqa: F401
        from vllm.outputs import CompletionOutput, RequestOutput  # noqa: F401
        from vllm.sampling_params import RequestOutputKind, SamplingParams  # noqa: F401
    except Exception as err:  # noqa: BLE001
        return f"vLLM's request objects do not import here ({type(err).__name__}: {err})"
    return None


VLLM_MISSING = _vllm_objects()
needs_vllm = pytest.mark.skipif(VLLM_MISSING is not None, reason=str(VLLM_MISSING))


# -- pure mapping -------------------------------------------------------------------------------------------------
def test_lora_ids_are_stable_per_version_and_unique():
    from swiftlike.infer.vllm_backend import LoraIds

    ids = LoraIds()
    a1, b1 = ids.get("a", 1), ids.get("b", 1)
    assert a1 >= 1 and b1 >= 1 and a1 != b1
    assert ids.get("a", 1) == a1  # evicted and loaded again: the same adapter to vLLM
    a2 = ids.get("a", 2)  # replaced: a new id while requests on the old one may still run
    assert a2 not in (a1, b1) and ids.get("a", 1) == a1

    got = []
    threads = [threading.Thread(target=lambda k=k: got.extend(ids.get(f"t{k % 5}", k // 5) for _ in range(50)))
               for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    by_key = {}
    for k in range(20):
        by_key[(f"t{k % 5}", k // 5)] = ids.get(f"t{k % 5}", k // 5)
    assert len(set(by_key.values())) == len(by_key) == 20
    assert set(got) == set(by_key.values()) and len(ids) == 23


def test_sampling_kwargs_keep_swiftlikes_semantics():
    from swiftlike.infer.vllm_backend import sampling_kwargs

    kw = sampling_kwargs(max_tokens=20, temperature=0.0, top_p=0.5, seed=-1, stop=["</s>", "\n\n", "</s>", ""],
                         stop_token_ids={7, 2}, presence_penalty=0.5, frequency_penalty=-0.25)
    assert kw == {"n": 1, "max_tokens": 20, "temperature": 0.0, "top_p": 1.0, "seed": 2 ** 64 - 1,
                  "stop": ["</s>", "\n\n"], "stop_token_ids": [2, 7], "ignore_eos": True,
                  "include_stop_str_in_output": True, "detokenize": True, "skip_special_tokens": True,
                  "presence_penalty": 0.5, "frequency_penalty": -0.25, "repetition_penalty": 1.0,
                  "output_kind": "DELTA"}
    kw = sampling_kwargs(max_tokens=5, temperature=0.7, top_p=0.9, seed=42, n=2, stream=False)
    assert (kw["temperature"], kw["top_p"], kw["seed"], kw["n"], kw["stop"], kw["detokenize"], kw["output_kind"]) \
        == (0.7, 0.9, 42, 2, [], False, "FINAL_ONLY")
    with pytest.raises(ValueError, match="max_tokens"):
        sampling_kwargs(max_tokens=0)


def test_request_sampling_kwargs_from_an_engine_request():
    from swiftlike.infer.engine import Request
    from swiftlike.infer.vllm_backend import request_sampling_kwargs

    req = Request([1, 2, 3], 9, lambda *a: None, temperature=0.8, top_p=0.95, seed=3, stop_ids=frozenset({5}),
                  stop=("END",), presence_penalty=0.1, frequency_penalty=0.2, repetition_penalty=1.1)
    kw = request_sampling_kwargs(req)
    assert (kw["max_tokens"], kw["temperature"], kw["top_p"], kw["seed"], kw["stop"], kw["stop_token_ids"],
            kw["presence_penalty"], kw["frequency_penalty"], kw["repetition_penalty"]) == \
        (9, 0.8, 0.95, 3, ["END"], [5], 0.1, 0.2, 1.1)


def test_lora_request_kwargs_and_ranks(tmp_path):
    from swiftlike.infer.vllm_backend import lora_request_kwargs, served_rank

    link = tmp_path / "link"
    (tmp_path / "real").mkdir()
    link.symlink_to(tmp_path / "real")
    assert lora_request_kwargs("a0", 3, link) == {"lora_name": "a0", "lora_int_id": 3,
                                                  "lora_path": str((tmp_path / "real").resolve())}
    with pytest.raises(ValueError, match="at least 1"):
        lora_request_kwargs("a0", 0, tmp_path)
    assert [served_rank(r) for r in ([], [4], [16], [17], [64], [300])] == [16, 16, 16, 32, 64, 320]
    with pytest.raises(SwiftlikeError, match="at most 512"):
        served_rank([1024])


@pytest.mark.parametrize("cfg, problem", [
    ({"r": 8}, None),
    ({"r": 8, "init_lora_weights": True}, None),
    ({"r": 8, "init_lora_weights": "gaussian"}, None),
    ({"r": 32}, "LoRA rank 32 is more than --max_lora_rank 16; start with --max_lora_rank 32"),
    ({"r": 8, "rank_pattern": {"q_proj": 48}}, "LoRA rank 48 is more than --max_lora_rank 16; start with "
                                                "--max_lora_rank 64"),
    ({"r": 8, "init_lora_weights": "pissa"}, "init_lora_weights 'pissa' changes the base weights"),
    ({"r": 8, "lora_bias": True}, "lora_bias"),
])
def test_vllm_adapter_problem(cfg, problem):
    from swiftlike.infer.vllm_backend import vllm_adapter_problem

    got = vllm_adapter_problem({"peft_type": "LORA", **cfg}, 16)
    assert (got is None) if problem is None else (problem in got), got


def test_engine_kwargs():
    from swiftlike.infer.vllm_backend import engine_kwargs

    kw = engine_kwargs("/m", served_model_name="base", torch_dtype="bf16", max_loras=8, max_lora_rank=32,
                       max_num_seqs=64, gpu_memory_utilization=0.5)
    assert kw == {"model": "/m", "tokenizer": "/m", "dtype": "bfloat16", "trust_remote_code": False,
                  "enable_lora": True, "disable_log_stats": True, "served_model_name": "base", "max_loras": 8,
                  "max_lora_rank": 32, "max_cpu_loras": 16, "max_num_seqs": 64, "gpu_memory_utilization": 0.5}
    plain = engine_kwargs("/m", enable_lora=False, max_model_len=2048)
    assert "max_loras" not in plain and not plain["enable_lora"] and plain["max_model_len"] == 2048
    with pytest.raises(SwiftlikeError, match="--max_lora_rank 12: vLLM takes one of 1, 8, 16"):
        engine_kwargs("/m", max_lora_rank=12)


@pytest.mark.parametrize("opts, message", [
    ({"infer_backend": "sglang"}, "--infer_backend 'sglang': use pt (swiftlike's own engine) or vllm"),
    ({"max_lora_rank": 16}, "--max_lora_rank: vLLM's settings; they apply with --infer_backend vllm only"),
    ({"infer_backend": "vllm", "max_lora_rank": 24}, "--max_lora_rank 24: vLLM takes one of"),
    ({"infer_backend": "vllm", "gpu_memory_utilization": 1.5}, "--gpu_memory_utilization 1.5: a share"),
    ({"infer_backend": "vllm", "max_model_len": 1}, "--max_model_len 1: at least 2 tokens"),
])
def test_backend_options_refused_in_one_line(opts, message):
    from swiftlike.infer import InferArguments
    from swiftlike.serve.arguments import ServeArguments

    for cls in (ServeArguments, InferArguments):
        with pytest.raises(SwiftlikeError) as err:
            cls(**opts).check_backend()
        assert message in str(err.value) and "\n" not in str(err.value)
    ServeArguments(infer_backend="VLLM", max_lora_rank=64, gpu_memory_utilization=0.8).check_backend()
    assert ServeArguments(infer_backend="vllm").use_vllm and not ServeArguments().use_vllm


def test_require_vllm_refuses_in_one_line(monkeypatch):
    import torch

    from swiftlike.infer import vllm_backend

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(SwiftlikeError) as err:
        vllm_backend.require_vllm()
    assert str(err.value) == ("--infer_backend vllm: vLLM is not installed; `pip install vllm` (Linux, a CUDA GPU), "
                              "or use --infer_backend pt (swiftlike's own engine)")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SwiftlikeError) as err:
        vllm_backend.require_vllm()
    assert str(err.value) == (f"--infer_backend vllm: vLLM needs a CUDA GPU and torch {torch.__version__} sees none; "
                              f"or use --infer_backend pt (swiftlike's own engine)")
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(SwiftlikeError, match="^--infer_backend vllm: vLLM runs on Linux with a CUDA GPU, not on "
                                             "darwin; or use --infer_backend pt"):
        vllm_backend.require_vllm()


@pytest.mark.parametrize("command", [["serve"], ["infer", "--query", "hi"]])
def test_cli_refuses_before_the_model_loads(command, tmp_path):
    """Here (no GPU): one line, exit 1, and the model (a directory that does not exist) is never looked at."""
    import torch

    installed = importlib.util.find_spec("vllm") is not None
    if installed and torch.cuda.is_available():
        pytest.skip("vLLM and a CUDA GPU are here: nothing to refuse")
    why = "needs a CUDA GPU" if installed else "vLLM is not installed"
    proc = subprocess.run([sys.executable, "-m", "swiftlike", *command, "--infer_backend", "vllm", "--model",
                           str(tmp_path / "no-such-model")], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get(
                              "PYTHONPATH", "")] if p)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: --infer_backend vllm: ") \
        and why in proc.stderr, proc.stderr


# -- vLLM's real objects ------------------------------------------------------------------------------------------
@needs_vllm
def test_real_sampling_params_and_lora_request(tmp_path):
    from vllm.lora.request import LoRARequest
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    from swiftlike.infer.vllm_backend import (lora_request, lora_request_kwargs, sampling_kwargs, sampling_params,
                                              tokens_prompt)

    p = sampling_params(sampling_kwargs(max_tokens=12, temperature=0.0, top_p=0.3, seed=-5, stop=["\n\nUser:"],
                                        stop_token_ids=[2, 0]))
    assert isinstance(p, SamplingParams)
    assert (p.max_tokens, p.temperature, p.top_p, p.seed, p.stop, p.stop_token_ids, p.ignore_eos, p.n,
            p.output_kind, p.detokenize) == (12, 0.0, 1.0, 2 ** 64 - 5, ["\n\nUser:"], [0, 2], True, 1,
                                             RequestOutputKind.DELTA, True)
    p = sampling_params(sampling_kwargs(max_tokens=3, temperature=1.2, top_p=0.9, seed=None, n=3, stream=False))
    assert (p.temperature, p.top_p, p.seed, p.n, p.output_kind, p.detokenize, p.stop) == \
        (1.2, 0.9, None, 3, RequestOutputKind.FINAL_ONLY, False, [])
    assert p.clone().max_tokens == 3  # what vLLM does to every request's params
    req = lora_request(lora_request_kwargs("a0", 7, tmp_path))
    assert isinstance(req, LoRARequest) and (req.lora_name, req.lora_int_id, req.lora_path) == \
        ("a0", 7, str(tmp_path.resolve()))
    assert req == LoRARequest("a0", 7, "/elsewhere") and req != LoRARequest("a0", 8, str(tmp_path))
    assert tokens_prompt([1, 2]) == {"prompt_token_ids": [1, 2]}


@needs_vllm
def test_engine_kwargs_are_vllms_engine_args(tmp_path):
    from vllm.engine.arg_utils import AsyncEngineArgs

    from swiftlike.infer.vllm_backend import engine_kwargs

    kw = engine_kwargs(tmp_path, served_model_name="base", torch_dtype="fp16", max_loras=4, max_lora_rank=64,
                       max_num_seqs=16, max_model_len=1024, gpu_memory_utilization=0.6)
    args = AsyncEngineArgs(**kw)  # an unknown name would be a TypeError
    assert (args.enable_lora, args.max_loras, args.max_lora_rank, args.max_cpu_loras, args.max_num_seqs,
            args.max_model_len, args.dtype, args.gpu_memory_utilization, args.served_model_name) == \
        (True, 4, 64, 8, 16, 1024, "float16", 0.6, "base")


@needs_vllm
def test_finish_reasons_cover_vllms():
    pytest.importorskip("vllm.v1.engine", reason="vllm.v1.engine does not import here")
    from vllm.v1.engine import FinishReason

    from swiftlike.infer.vllm_backend import FINISH, finish_reason

    assert {str(r) for r in FinishReason} <= set(FINISH)
    assert [finish_reason(str(r)) for r in (FinishReason.STOP, FinishReason.LENGTH, FinishReason.ABORT,
                                            FinishReason.ERROR)] == ["stop", "length", "cancelled", "error"]
    assert finish_reason(None) is None and finish_reason("something new") == "error"


def _adapter_dir(path: Path, **cfg) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                                          "target_modules": ["q_proj", "v_proj"], **cfg}))
    (path / "adapter_model.safetensors").write_bytes(b"")  # what the config checks look for (never read)
    return path


@needs_vllm
@pytest.mark.parametrize("cfg, refused", [
    ({}, None),
    ({"r": 16, "use_rslora": True}, None),
    ({"r": 32}, "LoRA rank 32 is more than --max_lora_rank 16"),
    ({"init_lora_weights": "pissa"}, "init_lora_weights 'pissa'"),
    ({"init_lora_weights": "olora"}, "init_lora_weights 'olora'"),
    ({"use_dora": True}, "DoRA"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"peft_type": "IA3"}, "an IA3 adapter"),
])
def test_adapter_refusals_agree_with_vllms_peft_helper(cfg, refused, tmp_path):
    """swiftlike refuses (in one line, before vLLM sees it) exactly what vLLM's own PEFTHelper refuses."""
    pytest.importorskip("vllm.lora.peft_helper", reason="vLLM's PEFTHelper does not import here")
    from vllm.config.lora import LoRAConfig
    from vllm.lora.peft_helper import PEFTHelper

    from swiftlike.infer.vllm_backend import check_adapter_vllm

    path = _adapter_dir(tmp_path / "a", **cfg)
    try:
        PEFTHelper.from_local_dir(str(path), 2048).validate_legal(LoRAConfig(max_lora_rank=16, max_loras=2))
        vllm_refuses = False
    except (ValueError, TypeError):
        vllm_refuses = True
    if cfg.get("peft_type", "LORA") == "LORA":
        assert vllm_refuses == (refused is not None)
    if refused is None:
        assert check_adapter_vllm(path, max_lora_rank=16)["r"] == cfg.get("r", 8)
    else:
        with pytest.raises(SwiftlikeError) as err:
            check_adapter_vllm(path, max_lora_rank=16)
        assert refused in str(err.value) and "\n" not in str(err.value)


# -- serve on VllmRuntime, vLLM's GPU engine stood in -------------------------------------------------------------
WORDS = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"


class StandInLLM:
    """vLLM's AsyncLLM as far as swiftlike serve calls it, without a GPU: `generate` answers "<lora name or base>
    says: one two three ..." token by token (vLLM's DELTA outputs, in its real RequestOutput objects), stopping as
    vLLM would (max_tokens, stop_token_ids, stop strings); add_lora / remove_lora keep vLLM's set of loaded ids; every
    call is recorded."""

    def __init__(self, kwargs: dict, max_model_len=None):
        from types import SimpleNamespace

        from transformers import AutoTokenizer

        self.kwargs = kwargs
        self.tokenizer = AutoTokenizer.from_pretrained(kwargs["tokenizer"])
        if max_model_len:  # the context vLLM settled on (AsyncLLM.model_config)
            self.model_config = SimpleNamespace(max_model_len=max_model_len)
        self.calls: list = []
        self.loaded: set = set()
        self.errored = False
        self.fail_next = False

    async def add_lora(self, request) -> bool:
        from vllm.lora.request import LoRARequest

        assert isinstance(request, LoRARequest)
        await asyncio.sleep(0)
        if len(self.loaded) >= self.kwargs["max_cpu_loras"]:
            raise RuntimeError("stand-in: more adapters than max_cpu_loras")
        self.calls.append(("add", request.lora_name, request.lora_int_id, request.lora_path))
        self.loaded.add(request.lora_int_id)
        return True

    async def remove_lora(self, lora_int_id: int) -> bool:
        self.calls.append(("remove", lora_int_id))
        known = lora_int_id in self.loaded
        self.loaded.discard(lora_int_id)
        return known

    async def generate(self, prompt, params, request_id, *, lora_request=None):
        from vllm.outputs import CompletionOutput, RequestOutput
        from vllm.sampling_params import SamplingParams

        assert isinstance(params, SamplingParams) and set(prompt) == {"prompt_token_ids"}
        self.calls.append(("generate", request_id, prompt["prompt_token_ids"], params, lora_request))
        if lora_request is not None:
            assert lora_request.lora_int_id in self.loaded, "a request's LoRA was not added (or removed under it)"
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("stand-in: the engine failed")
        name = lora_request.lora_name if lora_request is not None else "base"
        ids = self.tokenizer(f"{name} says: {WORDS}", add_special_tokens=False).input_ids
        out = []
        try:
            for token in ids:
                await asyncio.sleep(0.001)
                out.append(token)
                text = self.tokenizer.decode(out, skip_special_tokens=True)
                finish = None
                if token in params.stop_token_ids or any(s in text for s in params.stop):
                    finish = "stop"
                elif len(out) >= params.max_tokens:
                    finish = "length"
                completion = CompletionOutput(0, "", [token], None, None, finish_reason=finish)
                yield RequestOutput(request_id, None, prompt["prompt_token_ids"], None, [completion],
                                    finished=finish is not None)
                if finish:
                    return
            completion = CompletionOutput(0, "", [], None, None, finish_reason="length")
            yield RequestOutput(request_id, None, prompt["prompt_token_ids"], None, [completion], finished=True)
        except (asyncio.CancelledError, GeneratorExit):
            self.calls.append(("abort", request_id))
            raise

    def shutdown(self):
        self.calls.append(("shutdown",))

    def of(self, kind):
        return [c for c in self.calls if c[0] == kind]


class VllmServer(Uvicorn):
    """`swiftlike serve --infer_backend vllm` in process (uvicorn in a thread) with the stand-in engine."""

    def __init__(self, vllm_max_model_len=None, **opts):
        from swiftlike.serve import ServeArguments
        from swiftlike.serve.app import create_app
        from swiftlike.serve.vllm_engine import VllmRuntime

        self.opts = ServeArguments(infer_backend="vllm", **opts)
        self.llm = None

        def factory(kwargs):
            self.llm = StandInLLM(kwargs, vllm_max_model_len)
            return self.llm

        self.rt = VllmRuntime(self.opts, llm_factory=factory)
        self.serve(create_app(self.rt), self.opts)

    def call(self, method, path, key=None, **kw):
        from test_serve import request

        return request(self.url + path, method, {"Authorization": f"Bearer {key}"} if key else {}, kw.get("json"))

    def chat(self, model, key=None, **kw):
        body = {"model": model, "messages": [{"role": "user", "content": "Who are you?"}], "temperature": 0,
                "max_tokens": 20, **kw}
        return self.call("POST", "/v1/chat/completions", key, json=body)

    def said(self, name, n):
        """What the stand-in answers for LoRA `name` in n tokens, as swiftlike decodes it."""
        tok = self.rt.tokenizer
        return tok.decode(tok(f"{name} says: {WORDS}", add_special_tokens=False).input_ids[:n],
                          skip_special_tokens=True)


KEYS = {"admin": "k-admin", "acme": "k-acme", "beta": "k-beta"}


@pytest.fixture(scope="module")
def vllm_adapters(tiny_model, tmp_path_factory):
    from test_serve_engine import make_adapter

    root = tmp_path_factory.mktemp("vllm-adapters")
    return {"a0": make_adapter(tiny_model, root / "a0", seed=10),
            "a1": make_adapter(tiny_model, root / "a1", seed=11, r=8, targets=("q_proj", "k_proj", "up_proj")),
            "a2": make_adapter(tiny_model, root / "a2", seed=12),
            "dora": make_adapter(tiny_model, root / "dora", seed=13, dora=True),
            "r32": make_adapter(tiny_model, root / "r32", seed=14, r=32)}


@pytest.fixture(scope="module")
def vserver(tiny_model, vllm_adapters, tmp_path_factory):
    if VLLM_MISSING:
        pytest.skip(VLLM_MISSING)
    from swiftlike.serve.auth import key_hash

    tenants = tmp_path_factory.mktemp("vllm-tenants") / "tenants.toml"
    tenants.write_text(f'[admin]\nkey_sha256 = "{key_hash(KEYS["admin"])}"\n'
                       f'[tenants.acme]\nkey_sha256 = "{key_hash(KEYS["acme"])}"\nadapters = ["a0", "hot"]\n'
                       f'[tenants.beta]\nkey_sha256 = "{key_hash(KEYS["beta"])}"\nadapters = ["a1"]\n')
    server = VllmServer(model=str(tiny_model), template="smollm2", tenants=str(tenants), max_resident=2,
                        max_batch_size=8, max_tokens=64,
                        adapters=[f"{n}={vllm_adapters[n]}" for n in ("a0", "a1")])
    yield server
    server.close()


def _wait(condition, timeout=30.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "never reached the expected state"
        time.sleep(0.02)


@needs_vllm
def test_engine_arguments_from_serve_options(vserver, tiny_model):
    kw = vserver.llm.kwargs
    assert kw == {"model": str(tiny_model), "tokenizer": str(tiny_model), "dtype": "auto", "trust_remote_code": False,
                  "enable_lora": True, "disable_log_stats": True, "served_model_name": "tiny-llama", "max_loras": 2,
                  "max_lora_rank": 16, "max_cpu_loras": 4, "max_num_seqs": 8}
    banner = vserver.rt.banner()
    assert "engine: vLLM (stand-in): max_loras 2, max_lora_rank 16, max_num_seqs 8" in banner, banner
    assert "KV cache budget" not in banner and "tenants: acme, beta" in banner


@needs_vllm
def test_each_tenant_request_carries_its_adapters_lora_request(vserver, vllm_adapters):
    s, llm = vserver, vserver.llm
    r = s.chat("a0", KEYS["acme"], stop=["nine"], seed=-1, top_p=0.5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == s.said("a0", 20).split("nine")[0]
    assert body["choices"][0]["finish_reason"] == "stop" and r.headers["x-swiftlike-adapter"] == "a0:v1"
    _, _, prompt_ids, params, lora = llm.of("generate")[-1]
    tok = s.rt.tokenizer
    assert prompt_ids == tok(s.rt.template.render([{"role": "user", "content": "Who are you?"}],
                                                  add_generation_prompt=True), add_special_tokens=False).input_ids
    assert (lora.lora_name, lora.lora_path) == ("a0", str(Path(vllm_adapters["a0"]).resolve()))
    assert ("add", "a0", lora.lora_int_id, lora.lora_path) in llm.calls
    assert params.max_tokens == 20 and params.temperature == 0 and params.ignore_eos
    assert params.stop == list(dict.fromkeys([*s.rt.template.stop_words, "nine"]))
    assert params.stop_token_ids == sorted(s.rt.template.stop_token_ids or [tok.eos_token_id])
    assert params.seed == 2 ** 64 - 1

    r = s.chat("a1", KEYS["beta"], max_tokens=5)  # another tenant, another LoRA; max_tokens ends it
    assert r.json()["choices"][0] | {"message": None} == {"index": 0, "message": None, "logprobs": None,
                                                          "finish_reason": "length"}
    assert r.json()["choices"][0]["message"]["content"] == s.said("a1", 5)
    assert r.json()["usage"]["completion_tokens"] == 5
    assert llm.of("generate")[-1][4].lora_name == "a1"
    r = s.chat("tiny-llama", KEYS["beta"], max_tokens=4)
    assert r.json()["choices"][0]["message"]["content"] == s.said("base", 4) and llm.of("generate")[-1][4] is None
    assert s.chat("a1", KEYS["acme"]).status_code == 404  # not acme's: refused before vLLM
    assert s.chat("a0", "nope").status_code == 401


@needs_vllm
def test_stream_and_usage(vserver):
    from test_serve import stream_lines

    lines = list(stream_lines(vserver.url + "/v1/chat/completions", {"Authorization": f"Bearer {KEYS['acme']}"},
                              {"model": "a0", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 7,
                               "stream": True, "stream_options": {"include_usage": True}}))
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(x[6:]) for x in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == vserver.said("a0", 7)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 7


@needs_vllm
def test_admin_load_replace_unload_map_to_add_and_remove_lora(vserver, vllm_adapters):
    s, llm, admin = vserver, vserver.llm, KEYS["admin"]
    r = s.call("POST", "/v1/adapters", admin, json={"name": "hot", "source": str(vllm_adapters["a2"])})
    assert r.status_code == 200 and r.json()["version"] == 1, r.text
    add = llm.of("add")[-1]
    assert add[1:] == ("hot", add[2], str(Path(vllm_adapters["a2"]).resolve()))
    v1 = add[2]
    assert s.chat("hot", KEYS["acme"], max_tokens=3).json()["choices"][0]["message"]["content"] == s.said("hot", 3)
    assert llm.of("generate")[-1][4].lora_int_id == v1

    # replaced: a new lora id; the old one leaves vLLM (no request holds it)
    r = s.call("POST", "/v1/adapters", admin, json={"name": "hot", "source": str(vllm_adapters["a0"])})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["replaced"]
    v2 = llm.of("add")[-1][2]
    assert v2 != v1 and llm.of("add")[-1][3] == str(Path(vllm_adapters["a0"]).resolve())
    _wait(lambda: ("remove", v1) in llm.calls)
    s.chat("hot", KEYS["acme"], max_tokens=2)
    assert llm.of("generate")[-1][4].lora_int_id == v2

    # unloaded with vLLM's own endpoint: removed from vLLM too, and the name is gone
    r = s.call("POST", "/v1/unload_lora_adapter", admin, json={"lora_name": "hot"})
    assert r.status_code == 200, r.text
    _wait(lambda: ("remove", v2) in llm.calls)
    assert s.chat("hot", KEYS["acme"]).status_code == 404
    r = s.call("POST", "/v1/load_lora_adapter", admin, json={"lora_name": "hot", "lora_path": str(vllm_adapters["a2"])})
    assert r.status_code == 200 and llm.of("add")[-1][1] == "hot" and llm.of("add")[-1][2] not in (v1, v2)
    assert s.call("DELETE", "/v1/adapters/hot", admin).status_code == 200
    _wait(lambda: llm.of("remove")[-1] == ("remove", llm.of("add")[-1][2]))
    assert s.call("POST", "/v1/adapters", KEYS["acme"], json={"name": "x", "source": "y"}).status_code == 403


@needs_vllm
def test_what_vllm_cannot_serve_is_refused_before_it_loads(vserver, vllm_adapters):
    s, llm, admin = vserver, vserver.llm, KEYS["admin"]
    adds = len(llm.of("add"))
    for name, want in (("dora", "DoRA"), ("r32", "LoRA rank 32 is more than --max_lora_rank 16; start with "
                                                   "--max_lora_rank 32")):
        r = s.call("POST", "/v1/adapters", admin, json={"name": name, "source": str(vllm_adapters[name])})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_adapter", r.text
        assert want in r.json()["error"]["message"] and "\n" not in r.json()["error"]["message"]
    assert len(llm.of("add")) == adds


@needs_vllm
def test_engine_failure_is_a_500_and_the_server_goes_on(vserver):
    vserver.llm.fail_next = True
    r = vserver.chat("a0", KEYS["acme"])
    assert r.status_code == 500 and r.json()["error"]["code"] == "engine_error", r.text
    assert vserver.chat("a0", KEYS["acme"], max_tokens=2).status_code == 200


@needs_vllm
def test_client_gone_aborts_the_vllm_request(vserver):
    import http.client

    llm = vserver.llm
    conn = http.client.HTTPConnection("127.0.0.1", int(vserver.url.rsplit(":", 1)[1]), timeout=30)
    conn.request("POST", "/v1/chat/completions", body=json.dumps({
        "model": "a0", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 60, "ignore_eos": True,
        "stream": True}), headers={"Authorization": f"Bearer {KEYS['acme']}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.readline()
    request_id = llm.of("generate")[-1][1]
    conn.close()  # the client leaves mid-stream
    _wait(lambda: ("abort", request_id) in llm.calls)
    _wait(lambda: vserver.rt.engine.running == 0 and vserver.rt.inflight == 0)


@needs_vllm
def test_metrics_count_vllm_requests(vserver):
    from test_serve import request

    vserver.chat("a0", KEYS["acme"], max_tokens=3)
    text = request(vserver.url + "/metrics", headers={"Authorization": f"Bearer {KEYS['admin']}"}).text
    values = {line.split()[0]: float(line.split()[-1]) for line in text.splitlines() if line and line[0] != "#"}
    assert values["swiftlike_engine_generated_tokens_total"] >= 3
    assert values["swiftlike_adapter_loads_total"] >= 1 and values["swiftlike_kv_cache_bytes"] == 0
    assert values["swiftlike_requests_running"] == 0


@needs_vllm
def test_eviction_removes_from_vllm_and_reload_keeps_the_id(tiny_model, vllm_adapters):
    server = VllmServer(model=str(tiny_model), template="smollm2", max_resident=1, max_batch_size=2,
                        adapters=[f"a0={vllm_adapters['a0']}", f"a2={vllm_adapters['a2']}"], vllm_max_model_len=100)
    try:
        llm = server.llm
        # vLLM's context (100 here, less than the model's 512) is what prompts are checked against: a 422 before vLLM
        assert server.rt.context_length == 100
        r = server.chat("a0", messages=[{"role": "user", "content": "word " * 120}])
        assert r.status_code == 422 and r.json()["error"]["code"] == "context_length_exceeded", r.text
        assert llm.of("generate") == []
        assert server.llm.kwargs["max_loras"] == 1
        assert server.chat("a0", max_tokens=2).status_code == 200
        first = llm.of("add")[-1][2]
        assert server.chat("a2", max_tokens=2).status_code == 200  # a0 evicted (max_resident 1): vLLM drops it
        _wait(lambda: ("remove", first) in llm.calls)
        assert server.chat("a0", max_tokens=2).status_code == 200
        assert llm.of("add")[-1][1:3] == ("a0", first) and llm.of("generate")[-1][4].lora_int_id == first
        assert llm.loaded == {first}
    finally:
        server.close()
    assert ("shutdown",) in llm.calls


@needs_vllm
def test_a_tampered_store_copy_never_reaches_vllm(tiny_model, vllm_adapters, tmp_path, monkeypatch):
    import shutil

    from swiftlike.adapters.publish import push
    from swiftlike.checkpoint import write_manifest

    monkeypatch.setenv("SWIFTLIKE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SWIFTLIKE_LOCAL_HUB", str(tmp_path / "hub"))
    ckpt = shutil.copytree(vllm_adapters["a0"], tmp_path / "a0")
    manifest = json.loads((ckpt / "swiftlike.json").read_text())
    manifest.pop("format")
    write_manifest(ckpt, {**manifest, "kind": "adapter", "license": "apache-2.0"})  # with its files table
    push(ckpt, "local:acme/a0")
    server = VllmServer(model=str(tiny_model), template="smollm2", adapters=["a0=local:acme/a0"])
    try:
        path = Path(server.rt.pool.known("a0").path)  # installed into the store, loads on first use
        os.chmod(path, 0o755)
        weights = path / "adapter_model.safetensors"
        os.chmod(weights, 0o644)
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
        r = server.chat("a0", max_tokens=2)
        assert r.status_code == 500 and r.json()["error"]["code"] == "adapter_unavailable", r.text
        r = server.call("POST", "/v1/adapters", json={"name": "b0", "source": "local:acme/a0"})
        assert r.status_code == 400 and "sha256" in r.json()["error"]["message"], r.text
        assert server.llm.of("add") == []
    finally:
        server.close()


# -- infer on vLLM's offline LLM, stood in ------------------------------------------------------------------------
class StandInOfflineLLM:
    """vLLM's LLM as far as `infer --infer_backend vllm` calls it: `generate(prompts, params, lora_request=...)`
    answers every prompt with "<lora name or base> says: one two ..." in vLLM's RequestOutput objects."""

    def __init__(self, kwargs: dict):
        from transformers import AutoTokenizer

        self.kwargs = kwargs
        self.tokenizer = AutoTokenizer.from_pretrained(kwargs["tokenizer"])
        self.calls = []

    def generate(self, prompts, params, *, lora_request=None, use_tqdm=True):
        from vllm.outputs import CompletionOutput, RequestOutput

        self.calls.append((prompts, params, lora_request))
        name = lora_request.lora_name if lora_request is not None else "base"
        ids = self.tokenizer(f"{name} says: {WORDS}", add_special_tokens=False).input_ids[:params.max_tokens]
        return [RequestOutput(str(i), None, p["prompt_token_ids"], None,
                              [CompletionOutput(0, "", ids, None, None, finish_reason="length")], finished=True)
                for i, p in enumerate(prompts)]


@needs_vllm
def test_infer_on_vllm_answers_with_the_checkpoints_adapter(tiny_model, vllm_adapters, tmp_path):
    from swiftlike.infer import InferArguments, answer_prompts, generate
    from swiftlike.infer.vllm_backend import load_checkpoint_vllm

    made = []

    def factory(kwargs):
        made.append(StandInOfflineLLM(kwargs))
        return made[-1]

    loaded = load_checkpoint_vllm(str(vllm_adapters["a1"]), options=InferArguments(infer_backend="vllm"),
                                  llm_factory=factory)
    llm = made[0]
    assert llm.kwargs == {"model": str(tiny_model), "tokenizer": str(tiny_model), "dtype": "auto",
                          "trust_remote_code": False, "enable_lora": True, "disable_log_stats": True, "max_loras": 1,
                          "max_lora_rank": 16, "max_cpu_loras": 2}
    ask = [{"role": "user", "content": "Who are you?"}]
    tok = loaded.tokenizer
    want = tok.decode(tok("a1 says: " + WORDS, add_special_tokens=False).input_ids[:6], skip_special_tokens=True)
    assert generate(loaded.model, loaded.template, ask, max_new_tokens=6) == want
    assert list(generate(loaded.model, loaded.template, ask, max_new_tokens=6, stream=True)) == [want]
    prompts, params, lora = llm.calls[-1]
    assert prompts == [{"prompt_token_ids": tok(loaded.template.render(ask, add_generation_prompt=True),
                                                add_special_tokens=False).input_ids}]
    assert (params.max_tokens, params.temperature, params.ignore_eos, lora.lora_name, lora.lora_path) == \
        (6, 0.0, True, "a1", str(Path(vllm_adapters["a1"]).resolve()))
    assert params.stop_token_ids == sorted(loaded.template.stop_token_ids or [tok.eos_token_id])

    out = answer_prompts(loaded, [{"messages": ask, "response": "r"}] * 3, tmp_path / "answers.jsonl",
                         progress=False, max_new_tokens=6)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["response"] for r in rows] == [want] * 3 and len(llm.calls[-1][0]) == 3  # one vLLM batch

    big = load_checkpoint_vllm(str(vllm_adapters["r32"]), options=InferArguments(infer_backend="vllm"),
                               llm_factory=factory)
    assert made[-1].kwargs["max_lora_rank"] == 32 and big.model.lora_kwargs["lora_name"] == "r32"
    with pytest.raises(SwiftlikeError, match="DoRA"):
        load_checkpoint_vllm(str(vllm_adapters["dora"]), options=InferArguments(infer_backend="vllm"),
                             llm_factory=factory)
