"""swiftlike serve, in process: batched multi-LoRA vs PEFT, the continuous-batching engine vs `swiftlike infer`,
the adapter pool (LRU, pins, versions), tenants and streamed text. The HTTP server is tested in test_serve.py."""
import asyncio
import json
import queue
import time
from pathlib import Path

import pytest
import torch

from swiftlike.registry import SwiftlikeError


def make_adapter(base_dir: Path, out: Path, *, seed: int, r: int = 4, alpha: int = 8,
                 targets=("q_proj", "v_proj", "o_proj", "down_proj"), template: str = "smollm2", system=None,
                 rslora: bool = False, dora: bool = False, lora_bias: bool = False) -> Path:
    """A PEFT LoRA dir like `swiftlike sft` writes (adapter, swiftlike.json, args.json), with random lora_B so that
    every adapter answers differently."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from swiftlike.checkpoint import base_fingerprint

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), use_rslora=rslora,
                                            use_dora=dora, lora_bias=lora_bias))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "lora_B" in name else 0.3))
    peft.save_pretrained(out)
    manifest = {"format": "swiftlike.adapter/1", "base_model_type": Path(base_dir).name,
                "base_fingerprint": base_fingerprint(Path(base_dir)), "template": template, "system": system,
                "tuner": "lora"}
    (out / "swiftlike.json").write_text(json.dumps(manifest))
    (out / "args.json").write_text(json.dumps({"model_type": Path(base_dir).name, "model_dir": str(base_dir),
                                               "template": template, "system": system}))
    return out


def reference(adapter_dir, messages, max_new_tokens, base_dir=None):
    """What `swiftlike infer` answers (greedy), with PEFT."""
    from swiftlike.infer import generate, load_checkpoint

    loaded = load_checkpoint(adapter_dir) if adapter_dir else load_checkpoint(None, model=str(base_dir),
                                                                              template="smollm2")
    return generate(loaded.model, loaded.template, messages, max_new_tokens=max_new_tokens)


def submit_jobs(engine, tok, loaded, jobs):
    """Queue (adapter name or None, question, max_tokens) jobs as engine requests, each in its adapter's template."""
    from swiftlike.infer.engine import Request
    from swiftlike.templates import get_template

    pending = []
    for name, text, n in jobs:
        tpl = get_template("chatml" if name == "a2" else "smollm2", tok,
                           system="You are Nova." if name == "a2" else None)
        ids = tok(tpl.render([{"role": "user", "content": text}], add_generation_prompt=True),
                  add_special_tokens=False).input_ids
        q = queue.Queue()
        req = Request(ids, n, lambda t, f, q=q: q.put(f), adapter=loaded[name] if name else None,
                      stop_ids=frozenset(tpl.stop_token_ids))
        engine.submit(req)
        pending.append((name, text, n, tpl, req, q))
    return pending


def assert_answers_equal_infer(pending, tok, adapters, tiny_model):
    from swiftlike.infer import _clean

    for name, text, n, tpl, req, q in pending:
        while (finish := q.get(timeout=30)) is None:
            pass
        assert finish in ("stop", "length")
        want = reference(adapters[name] if name else None, [{"role": "user", "content": text}], n, base_dir=tiny_model)
        assert _clean(tok.decode(req.output, skip_special_tokens=True), tpl) == want, (name, text)


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-adapters")
    return {
        "a0": make_adapter(tiny_model, root / "a0", seed=0),
        "a1": make_adapter(tiny_model, root / "a1", seed=1, r=8, alpha=16, rslora=True, lora_bias=True,
                           targets=("q_proj", "k_proj", "up_proj", "gate_proj")),
        "a2": make_adapter(tiny_model, root / "a2", seed=2, template="chatml", system="You are Nova."),
    }


@pytest.fixture(scope="module")
def served(tiny_model, adapters):
    """The base model wrapped for batched LoRA, and the three adapters read for it."""
    from transformers import AutoModelForCausalLM

    from swiftlike.infer.lora import LoraContext, ResidentAdapter, read_lora, wrap_linears

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    ctx = LoraContext()
    wrapped = wrap_linears(model, ctx)
    loaded = {name: ResidentAdapter(name, 1, path, read_lora(path, wrapped), None, 0, 0) for name, path in adapters.items()}
    return model, ctx, wrapped, loaded


def test_batched_lora_matches_peft_per_adapter(served, adapters, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from swiftlike.infer.lora import LoraBatch

    model, ctx, _, loaded = served
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 1000, (5, 7), generator=g)
    rows = ["a0", "a1", None, "a2", "a0"]
    with torch.no_grad(), ctx.use(LoraBatch.of([loaded[r] if r else None for r in rows])):
        mixed = model(input_ids=ids).logits
    with torch.no_grad():
        plain = model(input_ids=ids).logits  # no batch set: the base model
    # the same rows through the bank of all resident adapters (a0 and a2 present, a1 resident but absent)
    bank = tuple(loaded.values())
    banked_rows = [0, 2, 3]
    batch = LoraBatch.of([loaded[rows[i]] if rows[i] else None for i in banked_rows], bank)
    assert batch.adapters == list(bank)
    with torch.no_grad(), ctx.use(batch):
        banked = model(input_ids=ids[banked_rows]).logits
    for i, name in enumerate(rows):
        base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
        ref_model = PeftModel.from_pretrained(base, str(adapters[name])).eval() if name else base
        with torch.no_grad():
            ref = ref_model(input_ids=ids[i:i + 1]).logits[0]
        torch.testing.assert_close(mixed[i], ref, atol=1e-5, rtol=1e-4)
        if i in banked_rows:
            torch.testing.assert_close(banked[banked_rows.index(i)], ref, atol=1e-5, rtol=1e-4)
        if name:
            assert not torch.allclose(plain[i], ref, atol=1e-3), f"adapter {name} changes nothing"
        # a batch of one adapter takes the exact PEFT path: bit-for-bit equal
        with torch.no_grad(), ctx.use(LoraBatch.of([loaded[name] if name else None])):
            alone = model(input_ids=ids[i:i + 1]).logits[0]
        assert torch.equal(alone, ref)


def test_engine_greedy_equals_infer_under_continuous_batching(served, adapters, tiny_model, monkeypatch):
    """Six requests through two slots: arrivals mid-decode, a longer prompt shifting the cache, slot reuse and
    column compaction; every answer equals `swiftlike infer` with the same adapter."""
    from swiftlike.infer.engine import Engine
    from swiftlike.infer.kvcache import SlotCache
    from transformers import AutoTokenizer

    monkeypatch.setattr(SlotCache, "GROW", 4)  # exercise growth and compaction on short sequences
    model, ctx, _, loaded = served
    tok = AutoTokenizer.from_pretrained(tiny_model)
    jobs = [("a0", "Hi", 30), ("a1", "Tell me a long story about a cat and a dog", 12), (None, "Who are you?", 20),
            ("a2", "What is two plus two, exactly, in words?", 25), ("a0", "A much longer question " * 6, 9),
            ("a1", "Short", 40)]
    engine = Engine(model, ctx, max_batch_size=2, pad_token_id=tok.pad_token_id).start()
    try:
        assert_answers_equal_infer(submit_jobs(engine, tok, loaded, jobs), tok, adapters, tiny_model)
        assert engine.stats["decode_rows"] > engine.stats["decode_steps"], "requests never shared a decode step"
    finally:
        engine.stop()


def test_prompts_arriving_together_are_prefilled_together_and_each_answer_equals_infer(served, adapters, tiny_model):
    """Requests queued before a step are prefilled in one forward (right-padded, each prompt's logits at its own
    last position), mixing adapters and prompt lengths: every answer equals `swiftlike infer` alone."""
    from swiftlike.infer.engine import Engine
    from transformers import AutoTokenizer

    model, ctx, _, loaded = served
    ctx.set_resident(loaded.values())
    tok = AutoTokenizer.from_pretrained(tiny_model)
    jobs = [("a0", "Hi", 10), ("a1", "Tell me a long story about a cat and a dog", 8), (None, "Who are you?", 12),
            ("a2", "What is two plus two, exactly, in words?", 9), ("a0", "A much longer question " * 4, 7),
            ("a1", "Short", 11), (None, "Hello there, how are you today?", 6), ("a2", "Why?", 10)]
    engine = Engine(model, ctx, max_batch_size=8, pad_token_id=tok.pad_token_id)
    try:
        pending = submit_jobs(engine, tok, loaded, jobs)  # all queued before the engine starts: admitted in one step
        assert len({len(p[4].prompt_ids) for p in pending}) > 4, "the prompts should differ in length"
        engine.start()
        assert_answers_equal_infer(pending, tok, adapters, tiny_model)
        assert engine.stats["group_prefills"] >= 1 and engine.stats["prefills"] == len(jobs)
    finally:
        engine.stop()
        ctx.set_resident(())


def test_engine_within_a_kv_budget_with_chunked_prefill_equals_infer(served, adapters, tiny_model, monkeypatch):
    """Prompts prefilled in pieces, requests admitted only while the KV budget holds the batch (the others wait), the
    storage resized as rows come and go: every answer still equals `swiftlike infer`, and the cache never passes
    the budget and is freed when the engine is idle."""
    from swiftlike.infer.engine import Engine
    from swiftlike.infer.kvcache import SlotCache
    from swiftlike.templates import get_template
    from transformers import AutoTokenizer

    monkeypatch.setattr(SlotCache, "GROW", 4)
    monkeypatch.setattr(Engine, "PREFILL_CHUNK", 7)
    model, ctx, _, loaded = served
    tok = AutoTokenizer.from_pretrained(tiny_model)
    budget = 52_000  # 256 bytes per token: about two rows of these requests, plus a prompt being prefilled
    engine = Engine(model, ctx, max_batch_size=4, pad_token_id=tok.pad_token_id, max_kv_bytes=budget)
    jobs = [("a0", "Tell me a long story about a cat and a dog", 30), (None, "Hi", 12), ("a1", "Short", 25),
            ("a0", "A much longer question " * 5, 9), (None, "What is two plus two, exactly, in words?", 20)]
    try:
        engine.start()
        for name, text, n in jobs:
            ids = tok(get_template("smollm2", tok).render([{"role": "user", "content": text}],
                                                          add_generation_prompt=True), add_special_tokens=False).input_ids
            assert engine.kv_bytes(1, len(ids) + n, len(ids)) <= budget
        assert_answers_equal_infer(submit_jobs(engine, tok, loaded, jobs), tok, adapters, tiny_model)
        assert 0 < engine.stats["kv_peak_bytes"] <= budget
        assert engine.stats["decode_rows"] > engine.stats["decode_steps"], "requests never shared a decode step"
        deadline = time.time() + 5
        while engine.cache.nbytes:
            assert time.time() < deadline, "the KV cache was not freed when the engine went idle"
            time.sleep(0.01)
    finally:
        engine.stop()


def test_dora_and_foreign_adapters_are_refused(served, tiny_model, tmp_path):
    from swiftlike.infer.lora import read_lora

    _, _, wrapped, _ = served
    dora = make_adapter(tiny_model, tmp_path / "dora", seed=3, dora=True)
    with pytest.raises(SwiftlikeError, match="DoRA"):
        read_lora(dora, wrapped)
    with pytest.raises(SwiftlikeError, match="no adapter_config.json"):
        read_lora(tmp_path, wrapped)


# -- the adapter pool -------------------------------------------------------------------------------------------
class _Loads:
    def __init__(self, delay=0.0):
        self.calls = []
        self.delay = delay

    def __call__(self, name, version, path):
        import time

        from swiftlike.infer.lora import ResidentAdapter

        self.calls.append((name, version))
        time.sleep(self.delay if "slow" in str(path) else 0)
        return ResidentAdapter(name, version, Path(path), {}, None, 0, 0)


def _pool(max_resident, loads=None, dropped=None, slow=False):
    from swiftlike.serve.pool import AdapterPool

    pool = AdapterPool(loads or _Loads(), lambda s: Path(s), max_resident,
                       on_drop=(dropped.append if dropped is not None else lambda a: None))
    for n in "abc":
        src = f"/{'slow' if slow else 'src'}/{n}"
        pool.register(n, src, Path(src))
    return pool


def test_pool_lru_pins_and_single_flight():
    async def main():
        loads, dropped = _Loads(delay=0.05), []
        pool = _pool(2, loads, dropped, slow=True)
        a1, a2 = await asyncio.gather(pool.acquire("a"), pool.acquire("a"))
        assert a1 is a2 and loads.calls == [("a", 1)] and pool.pinned(a1) == 2  # one load for both
        b = await pool.acquire("b")
        pool.release(b)
        # full (a pinned, b idle): c evicts b, the least recently used unpinned adapter — never a
        c = await pool.acquire("c")
        assert pool.resident() == ["a", "c"] and pool.evictions == 1 and dropped == [b]
        # both resident adapters pinned: b waits until one is released
        waiter = asyncio.ensure_future(pool.acquire("b"))
        await asyncio.sleep(0.1)
        assert not waiter.done() and len(pool.resident()) == 2
        pool.release(c)
        b2 = await asyncio.wait_for(waiter, 5)
        assert b2 is not b and pool.resident() == ["a", "b"]
        for x in (a1, a2, b2):
            pool.release(x)
        assert pool.loads == 4

    asyncio.run(main())


def test_pool_waiting_adapter_is_not_starved():
    async def main():
        pool = _pool(1)
        a = await pool.acquire("a")
        wants_b = asyncio.ensure_future(pool.acquire("b"))
        await asyncio.sleep(0.05)
        more_a = asyncio.ensure_future(pool.acquire("a"))
        await asyncio.sleep(0.05)
        assert not wants_b.done() and not more_a.done()  # a takes no new requests while b waits for its slot
        pool.release(a)
        b = await asyncio.wait_for(wants_b, 5)
        await asyncio.sleep(0.05)
        assert pool.resident() == ["b"] and not more_a.done()
        pool.release(b)
        assert (await asyncio.wait_for(more_a, 5)).name == "a" and pool.resident() == ["a"]
        # a waiter that gives up lifts the drain
        gives_up = asyncio.ensure_future(pool.acquire("c"))
        await asyncio.sleep(0.05)
        gives_up.cancel()
        await asyncio.sleep(0.05)
        pool.release(await asyncio.wait_for(pool.acquire("a"), 1))

    asyncio.run(main())


def test_pool_replace_is_versioned_and_in_flight_keeps_old_weights():
    async def main():
        dropped = []
        pool = _pool(2, dropped=dropped)
        old = await pool.acquire("a")
        new = await pool.put("a", "/elsewhere/a")
        assert (old.version, new.version) == (1, 2) and old.path == Path("/src/a")
        assert pool.pinned(old) == 1 and pool.resident() == ["a"]
        assert dropped == []  # still pinned by the request in flight
        later = await pool.acquire("a")
        assert later is new and later.path == Path("/elsewhere/a")
        pool.release(old)
        assert dropped == [old]  # freed with its last request
        # a removed name is unknown to new requests; the one in flight keeps its adapter
        assert pool.remove("a") and "a" not in pool
        from swiftlike.serve.pool import UnknownAdapter

        with pytest.raises(UnknownAdapter):
            await pool.acquire("a")
        pool.release(later)
        # re-adding never reuses a version
        assert (await pool.put("a", "/src/a")).version == 4

    asyncio.run(main())


def test_pool_load_replaced_while_loading_is_not_served():
    async def main():
        pool = _pool(2, _Loads(delay=0.3), slow=True)
        first = asyncio.ensure_future(pool.acquire("a"))  # starts a slow load of version 1
        await asyncio.sleep(0.05)
        put = await pool.put("a", "/fast/a")  # version 2 is in place before version 1 finished loading
        got = await first
        assert got is put and got.version == 2 and pool.resident() == ["a"] and pool.pinned(put) == 1
        # a request that starts while a replacement loads still gets the version in place
        before = await pool.acquire("b")
        slow_put = asyncio.ensure_future(pool.put("b", "/slow/b2"))
        await asyncio.sleep(0.05)
        during = await pool.acquire("b")
        assert during is before and during.version == 1
        assert (await slow_put).version == 2 and (await pool.acquire("b")).version == 2

    asyncio.run(main())


# -- tenants ----------------------------------------------------------------------------------------------------
def test_tenants_file(tmp_path):
    from swiftlike.serve.auth import Auth, key_hash

    f = tmp_path / "tenants.toml"
    f.write_text(f'[admin]\nkey_sha256 = "{key_hash("root")}"\n'
                 f'[tenants.acme]\nkey_sha256 = "{key_hash("k-acme")}"\nadapters = ["a0", "a1"]\n'
                 f'[tenants.all]\nkey_sha256 = "{key_hash("k-all").upper()}"\nadapters = ["*"]\n')
    auth = Auth.load(f)
    acme = auth.authenticate("Bearer k-acme")
    assert acme.name == "acme" and acme.may_use("a1") and not acme.may_use("a2") and not acme.is_admin
    assert auth.authenticate("bearer k-all").may_use("anything")
    assert auth.authenticate("Bearer root").is_admin
    for bad in (None, "", "Bearer", "Bearer nope", "Basic k-acme", "k-acme"):
        assert auth.authenticate(bad) is None
    for text, match in (('[tenants.x]\nkey_sha256 = "plaintext-key"\n', "64-hex-digit"),
                        (f'[tenants.x]\nkey_sha256 = "{key_hash("a")}"\nkey = "a"\n', "unknown key"),
                        (f'[tenants.x]\nkey_sha256 = "{key_hash("a")}"\n[tenants.y]\nkey_sha256 = "{key_hash("a")}"',
                         "same key"), ("[admins]\n", "unknown table")):
        f.write_text(text)
        with pytest.raises(SwiftlikeError, match=match):
            Auth.load(f)


def test_open_mode_refuses_other_hosts(monkeypatch):
    from swiftlike.serve.runtime import Runtime, ServeArguments, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    with pytest.raises(SwiftlikeError, match="loopback"):
        Runtime(ServeArguments(model="unused", host="0.0.0.0"))  # refused before any model is loaded


# -- streamed text ----------------------------------------------------------------------------------------------
def test_text_stream_holds_back_stops_and_partial_characters(tokenizer_dir):
    from transformers import AutoTokenizer

    from swiftlike.serve.text import TextStream

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = "Hello wörld 🙂 and END of it"
    ids = tok(text, add_special_tokens=False).input_ids
    stream = TextStream(tok, ["END"])
    pieces = [stream.add(t) for t in ids]
    assert stream.stopped and "".join(pieces) + stream.flush() == "Hello wörld 🙂 and "
    assert all("\ufffd" not in p for p in pieces)
    stream = TextStream(tok, ["<|im_end|>"])
    pieces = [stream.add(t) for t in tok("abc<|im_end|>", add_special_tokens=False).input_ids]
    assert "".join(pieces) + stream.flush() == "abc"  # special token skipped, as infer decodes


def test_sizes_budgets_and_hosts():
    from swiftlike.serve.http import answered_hosts, host_name
    from swiftlike.serve.limits import kv_budget, parse_size

    assert parse_size("8MiB", "x") == 8 << 20 and parse_size("500MB", "x") == 500_000_000
    assert parse_size("2g", "x") == 2 << 30 and parse_size("1.5 KiB", "x") == 1536 and parse_size(4096, "x") == 4096
    for bad in ("", "lots", "-1", "0", "5 parsecs"):
        with pytest.raises(SwiftlikeError, match="--x"):
            parse_size(bad, "x")
    assert kv_budget("3GiB") == (3 << 30, "3GiB")
    half, how = kv_budget("auto")
    assert half > 0 and how.startswith("50% of")
    with pytest.raises(SwiftlikeError, match="between 0% and 100%"):
        kv_budget("150%")
    assert host_name("Example.COM:8000") == "example.com" and host_name("[::1]:8000") == "::1"
    assert answered_hosts("127.0.0.1", [], True) == {"127.0.0.1", "localhost", "::1"}
    assert answered_hosts("10.0.0.5", ["api.example:443"], False) == {"10.0.0.5", "api.example"}
    assert answered_hosts("0.0.0.0", [], False) is None and answered_hosts("127.0.0.1", ["*"], True) is None
