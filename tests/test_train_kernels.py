"""The training fast paths give PEFT's and transformers' own results: fused LoRA layers (outputs and every
gradient) and the per-sequence attention for padding-free rows (logits, gradients, padded batches, generation)."""
import copy

import pytest

from swiftlike.data import IGNORE_INDEX, PaddingFreeCollator

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")


def tiny_llama(attn="sdpa", seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         attn_implementation=attn, use_cache=False)
    return LlamaForCausalLM(config)


def rows(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(0, 256, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 3 + ids[3:]})
    return out


def lora(model, **kw):
    from peft import LoraConfig, get_peft_model

    cfg = dict(r=4, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    cfg.update(kw)
    model = get_peft_model(model, LoraConfig(**cfg))
    for name, p in model.named_parameters():  # B starts at zero; make the LoRA term count in the check
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return model


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------- fused LoRA
@pytest.mark.parametrize("dropout,pack", [(0.0, False), (0.3, False), (0.0, True), (0.3, True)])
def test_fused_lora_matches_peft_outputs_and_gradients(dropout, pack):
    from swiftlike.train.cpu_packing import can_pack_weights
    from swiftlike.train.fused_lora import fuse_lora_layers

    if pack and not can_pack_weights():
        pytest.skip("this torch build has no oneDNN")
    ref = lora(tiny_llama(), lora_dropout=dropout).train()
    fused = copy.deepcopy(ref)
    assert fuse_lora_layers(fused, pack_weights=pack) == 14  # 7 linear layers x 2 decoder layers
    batch = PaddingFreeCollator()(rows([9, 14, 6]))
    torch.manual_seed(7)  # dropout masks: the fused layers draw them from the same RNG stream as nn.Dropout
    logits_ref, grads_ref = loss_and_grads(ref, batch)
    torch.manual_seed(7)
    logits, grads = loss_and_grads(fused, batch)
    torch.testing.assert_close(logits, logits_ref, atol=1e-5, rtol=1e-5)
    assert grads.keys() == grads_ref.keys() and len(grads) == 28
    packed = [m for m in fused.modules() if "_swiftlike_packed" in m.__dict__]
    assert len(packed) == (14 if pack else 0)
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], atol=1e-5, rtol=1e-4, msg=name)
    # The adapter switched off gives the base model, as with PEFT.
    with fused.disable_adapter(), ref.disable_adapter(), torch.no_grad():
        torch.testing.assert_close(fused(**batch).logits, ref(**batch).logits)


def test_fused_lora_trains_full_base_weights_too():
    """modules_to_save-style setups can make a base weight trainable: its gradient must still be right."""
    from swiftlike.train.fused_lora import fuse_lora_layers

    ref = lora(tiny_llama(), target_modules=["q_proj"]).train()
    layer = ref.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    layer.weight.requires_grad_(True)
    fused = copy.deepcopy(ref)
    fuse_lora_layers(fused)
    batch = PaddingFreeCollator()(rows([7, 11]))
    _, grads_ref = loss_and_grads(ref, batch)
    _, grads = loss_and_grads(fused, batch)
    name = [n for n in grads if n.endswith("layers.0.self_attn.q_proj.base_layer.weight")][0]
    torch.testing.assert_close(grads[name], grads_ref[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("extra", [dict(use_dora=True), dict(lora_bias=True)])
def test_fused_lora_leaves_other_variants_to_peft(extra):
    """DoRA and a LoRA bias are not the plain case: PEFT's forward runs and results stay PEFT's."""
    from swiftlike.train import fused_lora

    ref = lora(tiny_llama(), **extra).train()
    fused = copy.deepcopy(ref)
    fused_lora.fuse_lora_layers(fused)
    calls = []
    original = fused_lora.LoraLinearFunction.apply
    fused_lora.LoraLinearFunction.apply = lambda *a: calls.append(1) or original(*a)
    try:
        batch = PaddingFreeCollator()(rows([8, 10]))
        torch.manual_seed(1)
        logits_ref, _ = loss_and_grads(ref, batch)
        torch.manual_seed(1)
        logits, _ = loss_and_grads(fused, batch)
    finally:
        fused_lora.LoraLinearFunction.apply = original
    assert calls == []
    torch.testing.assert_close(logits, logits_ref)


def test_unfuse_restores_peft_forward():
    from swiftlike.train.fused_lora import fuse_lora_layers, unfuse_lora_layers

    model = lora(tiny_llama())
    fuse_lora_layers(model)
    unfuse_lora_layers(model)
    assert not any("forward" in m.__dict__ for m in model.modules())


# ---------------------------------------------------------------- per-sequence attention
def varlen_llama(seed=0):
    from swiftlike.train.varlen_attention import NAME, enable_varlen_attention

    model = tiny_llama(seed=seed)
    assert enable_varlen_attention(model)
    assert model.config._attn_implementation == NAME
    return model


def test_varlen_matches_sdpa_logits_and_gradients_on_padding_free_rows():
    ref = tiny_llama()
    model = varlen_llama()
    data = rows([5, 17, 9, 12])
    batch = PaddingFreeCollator()(data)
    logits_ref, grads_ref = loss_and_grads(ref, batch)
    logits, grads = loss_and_grads(model, batch)
    torch.testing.assert_close(logits, logits_ref, atol=1e-5, rtol=1e-5)
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], atol=1e-5, rtol=1e-4, msg=name)
    # ... and each sequence's logits are those of the sequence run alone
    with torch.no_grad():
        start = 0
        for r in data:
            alone = ref(torch.tensor([r["input_ids"]])).logits[0]
            torch.testing.assert_close(logits[0, start:start + len(r["input_ids"])], alone, atol=1e-5, rtol=1e-5)
            start += len(r["input_ids"])


def test_varlen_keeps_padded_batches_and_generation_correct():
    from transformers import GenerationConfig

    ref = tiny_llama().eval()
    model = varlen_llama().eval()
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 3, 4, 5]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits)
        gen = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert model.generate(ids, attention_mask=mask, generation_config=gen, use_cache=True).tolist() == \
            ref.generate(ids, attention_mask=mask, generation_config=gen, use_cache=True).tolist()


def test_varlen_is_not_enabled_where_it_does_not_apply():
    from transformers import MistralConfig, MistralForCausalLM

    from swiftlike.train.varlen_attention import enable_varlen_attention

    assert not enable_varlen_attention(tiny_llama(attn="eager"))  # the user asked for something else
    sliding = MistralForCausalLM(MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                               sliding_window=8, attn_implementation="sdpa"))
    assert not enable_varlen_attention(sliding)
    assert sliding.config._attn_implementation == "sdpa"


def test_varlen_runs_one_attention_per_sequence(monkeypatch):
    """The point of the path: no [total, total] scores; each call sees one sequence."""
    import torch.nn.functional as F

    model = varlen_llama()
    seen = []
    original = F.scaled_dot_product_attention

    def spy(q, k, v, *a, **kw):
        seen.append((q.shape[2], kw.get("is_causal"), kw.get("attn_mask") is None))
        return original(q, k, v, *a, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        model(**PaddingFreeCollator()(rows([5, 17, 9])))
    assert seen == [(5, True, True), (17, True, True), (9, True, True)] * 2  # two layers


def test_varlen_reads_the_sequences_once_per_forward(monkeypatch):
    """Reading the segments copies position_ids to the host, which on a GPU waits for all queued work: once per
    forward, not once per layer (a new batch is read again)."""
    from swiftlike.train import varlen_attention as va

    model = varlen_llama()
    calls = []
    original = va._segments
    monkeypatch.setattr(va, "_segments", lambda pos: calls.append(pos.shape[-1]) or original(pos))
    with torch.no_grad():
        model(**PaddingFreeCollator()(rows([5, 17, 9])))
        model(**PaddingFreeCollator()(rows([4, 8])))
    assert calls == [31, 12]  # two layers each time


def _per_sequence_reference(q, k, v, cu_q, cu_k, max_q, max_k, top_left=False, **kw):
    """Stands in for torch's CUDA-only flash varlen kernel ([total, heads, dim]): per sequence, causal and, where a
    sequence has more keys than queries, aligned to the end of the keys as FlashAttention 2 does (`top_left`: a
    kernel that aligns to the start instead)."""
    import torch.nn.functional as F

    assert kw.get("window_size", (-1, 0)) == (-1, 0) and kw.get("is_causal", True)
    bq, bk = cu_q.tolist(), cu_k.tolist()
    assert max_q == max(b - a for a, b in zip(bq, bq[1:])) and max_k == max(b - a for a, b in zip(bk, bk[1:]))
    outs = []
    for (a, b), (c, d) in zip(zip(bq, bq[1:]), zip(bk, bk[1:])):
        qq, kk, vv = q[a:b].transpose(0, 1)[None], k[c:d].transpose(0, 1)[None], v[c:d].transpose(0, 1)[None]
        mask = torch.ones(b - a, d - c, dtype=torch.bool).tril(0 if top_left else (d - c) - (b - a))
        outs.append(F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, scale=kw.get("scale"),
                                                   enable_gqa=kw.get("enable_gqa", False))[0].transpose(0, 1))
    return torch.cat(outs)


@pytest.mark.parametrize("spelling", ["window_gqa_scale", "is_causal_no_gqa_no_scale"])
def test_flash_varlen_call_matches_the_per_sequence_path(monkeypatch, spelling):
    """The one-kernel GPU path hands torch's varlen kernel the right layout, cumulative lengths, GQA and scale, in
    either spelling torch versions use (window_size/enable_gqa/scale, or is_causal alone)."""
    from swiftlike.train import varlen_attention as va

    if spelling == "window_gqa_scale":
        fake = (_per_sequence_reference, True, True, True)
    else:
        def no_gqa(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=False):
            assert k.shape[1] == q.shape[1]  # repeated for a version without GQA
            return _per_sequence_reference(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=is_causal)
        fake = (no_gqa, False, False, False)
    monkeypatch.setattr(va._flash_varlen, "fn", fake, raising=False)
    torch.manual_seed(0)
    lengths = [5, 11, 3]
    pos = torch.cat([torch.arange(n) for n in lengths])[None]
    q, k, v = torch.randn(1, 4, 19, 8), torch.randn(1, 2, 19, 8), torch.randn(1, 2, 19, 8)
    scale = 0.3  # not 1/sqrt(dim): a version without `scale` must still apply it

    class Layer:
        training = False

    monkeypatch.setenv("SWIFTLIKE_FLASH_VARLEN", "0")
    ref, _ = va.varlen_attention_forward(Layer(), q, k, v, None, position_ids=pos, scaling=scale)
    monkeypatch.setenv("SWIFTLIKE_FLASH_VARLEN", "1")
    out = va._flash_attention(q, k, v, va._segments_once(pos), scale, True)
    assert out.shape == ref.shape == (1, 19, 4, 8)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # the CPU, float32 and branched rows keep the per-sequence path
    assert not va._use_flash(q, va._segments_once(pos), 0.0)


def _branched_row():
    """Two preference pairs as the preference stages lay them out: [prompt, chosen] then rejected, whose positions
    continue the prompt (a branch)."""
    parts = [range(0, 5), range(5, 8), range(5, 9), range(0, 4), range(4, 6), range(4, 7)]
    return torch.tensor([[i for r in parts for i in r]])


@pytest.mark.parametrize("top_left", [False, True])
def test_flash_varlen_shares_a_prompt_or_falls_back(monkeypatch, top_left):
    """Rows whose answers share their prompt go through the one flash call too (a branch's keys are its prompt's
    gathered in front of its own); the first such row is checked against the per-sequence path, and a kernel that
    masks them another way leaves them on the per-sequence path, with a warning."""
    from swiftlike.train import varlen_attention as va

    def kernel(*a, **kw):
        return _per_sequence_reference(*a, top_left=top_left, **kw)

    monkeypatch.setattr(va._flash_varlen, "fn", (kernel, True, True, True), raising=False)
    monkeypatch.setattr(va, "_flash_capable", lambda query: True)  # the real one asks for a CUDA tensor
    monkeypatch.setitem(va._branches, "flash", None)
    pos = _branched_row()
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 4, 21, 8), torch.randn(1, 2, 21, 8), torch.randn(1, 2, 21, 8)
    segments = va._segments_once(pos)
    assert segments == [(8, 0), (4, 5), (6, 0), (3, 4)]  # [prompt + chosen], then rejected from the prompt
    ref = va._per_sequence(q, k, v, segments, 0.0, 0.3, True)
    if top_left:
        with pytest.warns(UserWarning, match="keep the per-sequence attention"):
            out = va._flash_checked(q, k, v, segments, 0.3, True)
        torch.testing.assert_close(out, ref)
        assert va._branches["flash"] is False
        assert not va._use_flash(q, segments, 0.0)  # branched rows stay per sequence from now on
        assert va._use_flash(q, [(5, 0), (3, 0)], 0.0)  # rows without branches still take the flash call
    else:
        out = va._flash_checked(q, k, v, segments, 0.3, True)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        assert va._branches["flash"] is True
        # after the check, the flash call alone, gradients included
        qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
        va._flash_checked(qg, kg, vg, segments, 0.3, True).square().sum().backward()
        qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
        va._per_sequence(qr, kr, vr, segments, 0.0, 0.3, True).square().sum().backward()
        for a, b in ((qg, qr), (kg, kr), (vg, vr)):
            torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)


def test_packed_weights_follow_a_changed_base_weight():
    """The packed copies are a cache of the frozen weight: if it changes (e.g. a user loads new base weights into
    the model), the next forward repacks instead of using stale values."""
    from swiftlike.train.cpu_packing import can_pack_weights
    from swiftlike.train.fused_lora import fuse_lora_layers

    if not can_pack_weights():
        pytest.skip("this torch build has no oneDNN")
    model = lora(tiny_llama())
    ref = copy.deepcopy(model)
    fuse_lora_layers(model, pack_weights=True)
    batch = PaddingFreeCollator()(rows([6, 9]))
    with torch.no_grad():
        model(**batch)
        for m in (model, ref):
            m.base_model.model.model.layers[0].mlp.down_proj.base_layer.weight.mul_(2.0)
        torch.testing.assert_close(model(**batch).logits, ref(**batch).logits, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- packed output head, released file pages
def test_packed_output_head_matches_the_plain_head():
    """The lm_head through packed weights: same logits and same gradients for everything that trains; a
    head that trains itself keeps the plain path (its weight gets a gradient)."""
    from swiftlike.train.cpu_packing import can_pack_weights, pack_output_head, unpack_output_head

    if not can_pack_weights():
        pytest.skip("this torch build has no oneDNN")
    ref = lora(tiny_llama()).train()
    packed = copy.deepcopy(ref)
    assert pack_output_head(packed)
    batch = PaddingFreeCollator()(rows([9, 14, 6]))
    logits_ref, grads_ref = loss_and_grads(ref, batch)
    logits, grads = loss_and_grads(packed, batch)
    assert "_swiftlike_packed" in packed.get_output_embeddings().__dict__
    torch.testing.assert_close(logits, logits_ref, atol=1e-5, rtol=1e-5)
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], atol=1e-5, rtol=1e-4, msg=name)

    model = tiny_llama()  # full fine-tuning: the head's weight (tied to the embeddings) trains
    plain = copy.deepcopy(model)
    pack_output_head(model)
    _, grads = loss_and_grads(model, batch)
    _, grads_ref = loss_and_grads(plain, batch)
    head = [n for n, p in model.named_parameters() if p is model.get_output_embeddings().weight]
    assert head and grads.keys() == grads_ref.keys()
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], atol=1e-5, rtol=1e-4, msg=name)
    unpack_output_head(model)
    assert "forward" not in model.get_output_embeddings().__dict__


def _rss_file_mib():
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no RssFile in /proc/self/status")


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="Linux page reclaim")
def test_release_file_pages_drops_a_mapped_checkpoint_but_keeps_its_values(tmp_path):
    """After packing, the original weights (mapped from the safetensors file) are handed back to the kernel:
    resident memory falls by their size, and reading them again gives the same values."""
    from swiftlike.train.cpu_packing import release_file_pages

    n = 32 * 1024 * 1024 // 4  # 32 MiB of float32
    path = tmp_path / "weights.bin"
    torch.arange(n, dtype=torch.float32).numpy().tofile(path)
    mapped = torch.from_file(str(path), shared=False, size=n, dtype=torch.float32)
    total = mapped.sum().item()  # fault every page in
    before = _rss_file_mib()
    assert release_file_pages(mapped)
    after = _rss_file_mib()
    if before - after < 24:
        pytest.skip(f"this kernel ignores MADV_PAGEOUT (RssFile {before:.0f} -> {after:.0f} MiB)")
    assert mapped.sum().item() == total  # faulted back in from the file
    anon = torch.ones(1024 * 1024)
    assert not release_file_pages(anon)  # anonymous memory is never pushed out
    assert anon.sum().item() == 1024 * 1024


# ---------------------------------------------------------------- the trainer's cheaper per-step host work
def test_trainer_flops_and_grad_clipping_equal_the_base_trainer(tmp_path):
    """SwiftlikeTrainer counts parameters once and clips only parameters that have gradients: the FLOP
    estimate, the returned norm and the clipped gradients are exactly the base Trainer's."""
    from transformers import Trainer, TrainingArguments

    from swiftlike.train.trainer import SwiftlikeTrainer

    model = lora(tiny_llama())
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, max_grad_norm=0.05, report_to="none")
    trainer = SwiftlikeTrainer(model=model, args=args, train_dataset=rows([5]))
    batch = PaddingFreeCollator()(rows([9, 14, 6]))
    assert trainer.floating_point_ops(batch) == Trainer.floating_point_ops(trainer, batch) > 0
    loss_and_grads(model, batch)
    before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    norm = trainer._clip_grad_norm(model)
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for n, p in model.named_parameters():
        if n in before:
            p.grad.copy_(before[n])
    base_norm = Trainer._clip_grad_norm(trainer, model)
    assert float(norm) == pytest.approx(float(base_norm), rel=1e-6) and float(norm) > 0.05  # it did clip
    for n, p in model.named_parameters():
        if n in ours:
            torch.testing.assert_close(ours[n], p.grad, msg=n)
            assert not torch.equal(ours[n], before[n]) or before[n].abs().sum() == 0


def test_varlen_branches_share_their_prompt():
    """[prompt, chosen, rejected] in one row, the rejected answer's positions continuing the prompt's: every token's
    logits are those of prompt+answer run alone, and so are the gradients of a loss over both answers."""
    ref = tiny_llama()
    model = varlen_llama()
    g = torch.Generator().manual_seed(3)
    prompt, chosen, rejected = (torch.randint(0, 256, (n,), generator=g).tolist() for n in (7, 4, 6))
    row = torch.tensor([prompt + chosen + rejected])
    positions = torch.tensor([list(range(11)) + list(range(7, 13))])
    logits = model(input_ids=row, position_ids=positions).logits[0]
    alone_c = ref(torch.tensor([prompt + chosen])).logits[0]
    alone_r = ref(torch.tensor([prompt + rejected])).logits[0]
    torch.testing.assert_close(logits[:11], alone_c, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[11:], alone_r[7:], atol=1e-5, rtol=1e-5)
    (logits[6:].square().mean()).backward()
    torch.cat([alone_c[6:], alone_r[7:]]).square().mean().backward()
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
