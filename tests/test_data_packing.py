"""Bin packing, the collators, and padding-free batches giving the same logits and loss as separate runs.

Finding (transformers 5.23, sdpa and eager): with position_ids restarting per sequence, no attention_mask and
use_cache=False, transformers detects the packed sequences (masking_utils.find_packed_sequence_indices) and the
logits match separate runs. An all-ones attention_mask or use_cache=True turns the detection off, the sequences
attend to each other and the logits differ: the collator therefore sends no mask and use_cache=False.
"""
import random

import pytest

from swiftlike.data import IGNORE_INDEX, PaddingCollator, PaddingFreeCollator, pack

torch = pytest.importorskip("torch")


def row(n, start=1):
    ids = list(range(start, start + n))
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * (n // 2) + ids[n // 2:]}


def test_pack_first_fit_decreasing():
    rows = [row(n) for n in (5, 9, 3, 7, 2, 4)]
    bins = pack(rows, 10)
    assert [[len(r["input_ids"]) for r in b] for b in bins] == [[9], [7, 3], [5, 4], [2]]
    assert all(sum(len(r["input_ids"]) for r in b) <= 10 for b in bins)
    assert sorted(id(r) for b in bins for r in b) == sorted(id(r) for r in rows)  # every row exactly once
    with pytest.raises(ValueError, match="longer than max_length=8"):
        pack(rows, 8)
    assert pack([], 8) == []


def test_pack_many_rows_fast_and_valid():
    rng = random.Random(0)
    rows = [{"input_ids": [0] * rng.randint(1, 512)} for _ in range(20000)]
    bins = pack(rows, 1024)
    total = sum(len(r["input_ids"]) for r in rows)
    assert all(sum(len(r["input_ids"]) for r in b) <= 1024 for b in bins)
    assert sum(len(b) for b in bins) == len(rows)
    assert len(bins) < total / 1024 * 1.05  # FFD packs tightly


def test_padding_free_collator_layout():
    batch = PaddingFreeCollator()([row(3, 10), [row(2, 20), row(4, 30)]])  # a plain row and a packed bin
    assert batch["input_ids"].tolist() == [[10, 11, 12, 20, 21, 30, 31, 32, 33]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert batch["labels"].tolist() == [[-100, 11, 12, -100, 21, -100, -100, 32, 33]]
    assert "attention_mask" not in batch and batch["use_cache"] is False


def test_padding_collator():
    batch = PaddingCollator(pad_token_id=0, pad_to_multiple_of=4)([row(3, 10), row(5, 20)])
    assert batch["input_ids"].tolist() == [[10, 11, 12, 0, 0, 0, 0, 0], [20, 21, 22, 23, 24, 0, 0, 0]]
    assert batch["labels"].tolist()[0] == [-100, 11, 12, -100, -100, -100, -100, -100]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]]
    left = PaddingCollator(pad_token_id=9, padding_side="left")([row(1, 5), row(2, 6)])
    assert left["input_ids"].tolist() == [[9, 5], [6, 7]]


def tiny_llama(attn="sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         attn_implementation=attn)
    return LlamaForCausalLM(config).eval()


def random_rows(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        ids = torch.randint(0, 256, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 2 + ids[2:]})  # a 2-token "prompt"
    return rows


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_free_logits_and_loss_match_separate_runs(attn):
    model = tiny_llama(attn)
    rows = random_rows([5, 9, 7, 12])
    batch = PaddingFreeCollator()(pack(rows, 24))
    with torch.no_grad():
        out = model(**batch)
        separate = [model(torch.tensor([r["input_ids"]]), use_cache=False).logits[0] for r in rows]
    # Sequences appear in the packed row in bin order; find each one by its position_ids restart.
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
    order = [r for b in pack(rows, 24) for r in b]
    for k, r in enumerate(order):
        piece = out.logits[0, starts[k]:starts[k + 1]]
        torch.testing.assert_close(piece, separate[rows.index(r)], atol=1e-5, rtol=1e-5)
    # Loss: the per-token mean over all supervised tokens of the separate runs.
    total, count = 0.0, 0
    for r, logits in zip(rows, separate):
        labels = torch.tensor(r["labels"][1:])
        total += torch.nn.functional.cross_entropy(logits[:-1], labels, ignore_index=IGNORE_INDEX, reduction="sum")
        count += int((labels != IGNORE_INDEX).sum())
    torch.testing.assert_close(out.loss, total / count, atol=1e-5, rtol=1e-5)


def test_mask_or_cache_breaks_packed_detection():
    model = tiny_llama("sdpa")
    rows = random_rows([6, 8])
    batch = PaddingFreeCollator(use_cache_false=False)(rows)
    with torch.no_grad():
        good = model(**batch, use_cache=False).logits
        with_mask = model(**batch, attention_mask=torch.ones_like(batch["input_ids"]), use_cache=False).logits
        with_cache = model(**batch, use_cache=True).logits
    # The first sequence sees nothing else either way; the second one attends across the boundary.
    torch.testing.assert_close(with_mask[0, :6], good[0, :6], atol=1e-5, rtol=1e-5)
    assert (with_mask[0, 6:] - good[0, 6:]).abs().max() > 1e-3
    assert (with_cache[0, 6:] - good[0, 6:]).abs().max() > 1e-3
