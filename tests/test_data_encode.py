"""encode_dataset: the real template engine, truncation drops, process-pool parity and the on-disk cache."""
import json
from pathlib import Path

import pytest

from swiftlike.data import encode_dataset, load_dataset
from swiftlike.data.encode import cache_key

DATA = Path(__file__).parent / "data"


def tiny_tokenizer():
    """A byte-level BPE tokenizer with no merges (one token per byte) plus ChatML specials, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])


def chatml(tokenizer=None, **kw):
    import swiftlike.templates as templates
    from swiftlike.registry import TemplateSpec
    from swiftlike.templates import get_template

    spec = TemplateSpec(name="chatml", file="chatml.jinja", base_dir=Path(templates.__file__).parent)
    return get_template(spec, tokenizer or tiny_tokenizer(), **kw)


class CountingTemplate:
    """Wraps a template and counts encode calls (class-level, so the count is not part of the cache key)."""
    calls = 0

    def __init__(self, inner):
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.max_length = inner.max_length

    def encode(self, messages):
        CountingTemplate.calls += 1
        return self.inner.encode(messages)


@pytest.fixture(scope="module")
def rows():
    return load_dataset([str(DATA / "alpaca.json"), str(DATA / "messages.jsonl"), str(DATA / "sharegpt.json"),
                         str(DATA / "firefly.jsonl"), str(DATA / "query_response.jsonl")], shuffle=False).train


def test_encode_with_real_template_drops_long_rows(rows):
    encoded, dropped = encode_dataset(rows, chatml(), cache_dir=False)
    assert len(encoded) == len(rows) and dropped == 0
    first = encoded[0]
    assert set(first) >= {"input_ids", "labels"} and len(first["labels"]) == len(first["input_ids"])
    assert any(label != -100 for label in first["labels"])
    short = chatml(max_length=60)  # truncation="delete": rows over 60 tokens are dropped and counted
    encoded, dropped = encode_dataset(rows, short, cache_dir=False)
    assert dropped > 0 and len(encoded) + dropped == len(rows)
    assert all(len(e["input_ids"]) <= 60 for e in encoded)


def test_parallel_encode_equals_serial(rows):
    many = rows * 8
    tpl = chatml(max_length=80)
    serial = encode_dataset(many, tpl, num_proc=1, cache_dir=False)
    parallel = encode_dataset(many, tpl, num_proc=2, cache_dir=False)
    assert parallel == serial and serial[1] > 0


def test_parallel_with_template_factory(rows):
    serial = encode_dataset(rows, chatml(), cache_dir=False)
    assert encode_dataset(rows, chatml(), num_proc=2, cache_dir=False, template_factory=chatml) == serial


def test_encode_cache_hit_and_invalidation(rows, tmp_path):
    CountingTemplate.calls = 0
    tpl = CountingTemplate(chatml(max_length=60))
    first = encode_dataset(rows, tpl, cache_dir=tmp_path)
    assert CountingTemplate.calls == len(rows)
    second = encode_dataset(rows, tpl, cache_dir=tmp_path)
    assert CountingTemplate.calls == len(rows)  # served from the cache: no encode call
    assert second == first
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # written atomically: no temp file left
    import numpy as np
    with np.load(files[0], allow_pickle=False) as data:  # plain arrays, no pickled objects
        assert json.loads(data["__meta__"].tobytes())["dropped"] == first[1]
    # Different rows, template settings or tokenizer: a different key.
    assert cache_key(rows[:-1], tpl) != cache_key(rows, tpl)
    assert cache_key(rows, CountingTemplate(chatml(max_length=61))) != cache_key(rows, tpl)
    assert cache_key(rows, CountingTemplate(chatml(max_length=60, system="x"))) != cache_key(rows, tpl)
    other_tok = tiny_tokenizer()
    other_tok.add_special_tokens({"additional_special_tokens": ["<|extra|>"]})
    assert cache_key(rows, CountingTemplate(chatml(other_tok, max_length=60))) != cache_key(rows, tpl)
    assert cache_key(rows, CountingTemplate(chatml(max_length=60))) == cache_key(rows, tpl)  # stable


def test_default_cache_dir_under_swiftlike_home(rows, swiftlike_home):
    encode_dataset(rows[:2], chatml())
    assert len(list((swiftlike_home / "cache" / "encoded").glob("*.npz"))) == 1


def test_damaged_cache_entry_is_reencoded(rows, tmp_path):
    tpl = chatml()
    expected = encode_dataset(rows, tpl, cache_dir=tmp_path)
    (entry,) = tmp_path.iterdir()
    entry.write_bytes(b"garbage")
    assert encode_dataset(rows, tpl, cache_dir=tmp_path) == expected
