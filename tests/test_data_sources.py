"""Dataset arguments: paths, registry names, hub ids (offline cache), subsets, #N sampling, mixing, splits."""
import json
from collections import Counter
from pathlib import Path

import pytest

import swiftlike
from swiftlike.data import DatasetError, load_dataset, parse_dataset, read_dataset, split_rows

DATA = Path(__file__).parent / "data"


def qr_file(path, n, prefix="q"):
    path.write_text("".join(json.dumps({"query": f"{prefix}{i}", "response": f"r{i}"}) + "\n" for i in range(n)))
    return path


def queries(rows):
    return [r["messages"][0]["content"] for r in rows]


@pytest.mark.parametrize("text,kind,target,hub,subset,n", [
    ("alpaca-zh", "name", "alpaca-zh", None, None, None),
    ("alpaca-zh#500", "name", "alpaca-zh", None, None, 500),
    ("self-cognition:en#20", "name", "self-cognition", None, "en", 20),
    ("AI-ModelScope/alpaca-gpt4-data-zh#10", "name", "AI-ModelScope/alpaca-gpt4-data-zh", None, None, 10),
    ("hf::acme/tiny-sft:zh#3", "hub", "acme/tiny-sft", "hf", "zh", 3),
    ("ms::AI-ModelScope/alpaca-gpt4-data-en", "hub", "AI-ModelScope/alpaca-gpt4-data-en", "ms", None, None),
    (r"C:\data\train.jsonl", "path", r"C:\data\train.jsonl", None, None, None),
    ("D:/data/train.csv#10", "path", "D:/data/train.csv", None, None, 10),
    (r"C:\data\sft:zh#4", "path", r"C:\data\sft", None, "zh", 4),
    ("./missing.jsonl", "path", "./missing.jsonl", None, None, None),
])
def test_parse_dataset(text, kind, target, hub, subset, n):
    ref = parse_dataset(text)
    assert (ref.kind, ref.target, ref.hub, ref.subset, ref.n) == (kind, target, hub, subset, n)


def test_paths_with_colon_and_hash_exist_first(tmp_path, monkeypatch):
    odd = qr_file(tmp_path / "v1:final#2.jsonl", 3)  # ':' and '#N' inside the real name
    assert len(read_dataset(str(odd))[0]) == 3
    assert len(read_dataset(f"{odd}#5")[0]) == 5
    # A Windows-style name (a legal file name on POSIX) is used as is, not split at ':'.
    monkeypatch.chdir(tmp_path)
    qr_file(tmp_path / "C:\\data\\train.jsonl", 2)
    assert len(load_dataset("C:\\data\\train.jsonl").train) == 2
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("D:\\nowhere\\train.jsonl")


def test_directory_subsets_and_splits(tmp_path):
    assert queries(read_dataset(str(DATA / "split_dir"))[0]) == ["train q"]  # test.jsonl is another split
    assert queries(read_dataset(str(DATA / "subsets") + ":en")[0]) == ["hello"]
    assert len(read_dataset(str(DATA / "subsets"))[0]) == 3
    with pytest.raises(DatasetError, match="no subset 'fr'.*subdirectories: en, zh"):
        read_dataset(str(DATA / "subsets") + ":fr")
    colon_dir = tmp_path / "a:b"
    (colon_dir / "zh").mkdir(parents=True)
    qr_file(colon_dir / "zh" / "x.jsonl", 4)
    assert len(read_dataset(f"{colon_dir}:zh#2")[0]) == 2


def test_sample_n_seeded_and_cycled(tmp_path):
    f = qr_file(tmp_path / "d.jsonl", 10)
    a, b = read_dataset(f"{f}#4", seed=1)[0], read_dataset(f"{f}#4", seed=1)[0]
    assert queries(a) == queries(b) and len(set(queries(a))) == 4
    assert queries(read_dataset(f"{f}#4", seed=2)[0]) != queries(a)
    many = queries(read_dataset(f"{f}#25", seed=1)[0])
    counts = Counter(many)
    assert len(many) == 25 and set(counts) == {f"q{i}" for i in range(10)}
    assert sorted(counts.values()) == [2] * 5 + [3] * 5  # two full passes + 5 sampled without replacement


def test_mix_and_shuffle(tmp_path):
    a, b = qr_file(tmp_path / "a.jsonl", 5, "a"), qr_file(tmp_path / "b.jsonl", 7, "b")
    s1 = load_dataset([str(a), str(b)], seed=3)
    s2 = load_dataset([str(a), str(b)], seed=3)
    assert len(s1.train) == 12 and queries(s1.train) == queries(s2.train)
    assert sorted(queries(s1.train)) == sorted([f"a{i}" for i in range(5)] + [f"b{i}" for i in range(7)])
    assert queries(s1.train) != queries(load_dataset([str(a), str(b)], seed=4).train)
    assert queries(load_dataset([str(a), str(b)], shuffle=False).train)[:2] == ["a0", "a1"]


def test_split_ratio_deterministic(tmp_path):
    f = qr_file(tmp_path / "d.jsonl", 100)
    s1 = load_dataset(str(f), split_dataset_ratio=0.1, seed=7)
    s2 = load_dataset(str(f), split_dataset_ratio=0.1, seed=7)
    assert (len(s1.train), len(s1.val)) == (90, 10)
    assert queries(s1.val) == queries(s2.val) and queries(s1.train) == queries(s2.train)
    assert not set(queries(s1.val)) & set(queries(s1.train))
    assert queries(load_dataset(str(f), split_dataset_ratio=0.1, seed=8).val) != queries(s1.val)
    # An explicit val_dataset wins over the ratio.
    v = qr_file(tmp_path / "v.jsonl", 3, "v")
    s3 = load_dataset(str(f), val_dataset=[str(v)], split_dataset_ratio=0.1)
    assert len(s3.train) == 100 and sorted(queries(s3.val)) == ["v0", "v1", "v2"]
    assert len(split_rows(list(range(10)), 0.01)[1]) == 1  # at least one val row


def test_self_cognition_pairs():
    rows = load_dataset("self-cognition", model_name=["小黄", "Xiao Huang"], model_author=["魔搭", "ModelScope"],
                        shuffle=False).train
    assert len(rows) >= 100
    text = [m["content"] for r in rows for m in r["messages"]]
    assert not any("{{" in t for t in text)
    zh = [r for r in rows if any("\u4e00" <= ch <= "\u9fff" for ch in r["messages"][0]["content"])]
    en = [r for r in rows if r not in zh]
    assert zh and en
    assert any("小黄" in r["messages"][1]["content"] and "魔搭" in r["messages"][1]["content"] for r in zh)
    assert all("Xiao Huang" not in r["messages"][1]["content"] for r in zh)
    assert any("Xiao Huang" in r["messages"][1]["content"] for r in en)
    assert all("小黄" not in r["messages"][1]["content"] and "魔搭" not in r["messages"][1]["content"] for r in en)
    assert {r["messages"][0]["content"] for r in rows} >= {"你是谁？", "who are you?", "Who created you?"}


def test_self_cognition_single_value_subset_and_errors():
    rows = load_dataset("self-cognition:en#10", model_name="Bob", model_author="Acme").train
    assert len(rows) == 10 and all("{{" not in r["messages"][1]["content"] for r in rows)
    # ms-swift users pass the hub id of the registered dataset
    assert len(load_dataset("swift/self-cognition#3", model_name="Bob", model_author="Acme").train) == 3
    with pytest.raises(DatasetError, match="model_name"):
        load_dataset("self-cognition")


def test_registry_names(plugins, tmp_path):
    qr_file(tmp_path / "sft.jsonl", 4)
    (tmp_path / "qa.jsonl").write_text(json.dumps({"q": "x", "a": "y"}) + "\n")

    class Datasets:
        @swiftlike.hookimpl
        def register_datasets(self, register):
            register("acme-sft", path="sft.jsonl", base_dir=tmp_path, tags=["acme"])
            register("acme-qa", path="qa.jsonl", base_dir=tmp_path, columns={"q": "query", "a": "response"})

    plugins.add(Datasets(), "acme")
    assert len(load_dataset("acme-sft").train) == 4
    assert queries(load_dataset("acme-qa").train) == ["x"]  # the registered column mapping applies
    with pytest.raises(DatasetError, match="did you mean acme-sft"):
        load_dataset("acme-sfx")


def test_registered_sharegpt_roles(plugins, tmp_path):
    (tmp_path / "chat.jsonl").write_text(json.dumps({"turns": [{"who": "client", "say": "hi"},
                                                               {"who": "bot", "say": "hello"}]}) + "\n")

    class Datasets:
        @swiftlike.hookimpl
        def register_datasets(self, register):
            register("acme-chat", path="chat.jsonl", base_dir=tmp_path, format="sharegpt",
                     columns={"turns": "conversations"},
                     roles={"role_tag": "who", "content_tag": "say", "user_tag": "client", "assistant_tag": "bot"})
            register("acme-typo", path="chat.jsonl", base_dir=tmp_path, format="sharegpt", roles={"role": "who"})

    plugins.add(Datasets(), "acme-chat")
    assert load_dataset("acme-chat").train[0]["messages"] == [{"role": "user", "content": "hi"},
                                                              {"role": "assistant", "content": "hello"}]
    with pytest.raises(DatasetError, match="dataset 'acme-typo' \\(plugin acme-chat\\): unknown sharegpt roles key"):
        load_dataset("acme-typo")


def seed_hf_cache(cache: Path, repo="acme/tiny-sft", files=None) -> Path:
    """A dataset in the real huggingface_hub cache layout: refs/main -> snapshots/<sha>/..."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"datasets--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(sha)
    snap = root / "snapshots" / sha
    for rel, text in (files or {
        "README.md": "# tiny\n",
        "data/train.jsonl": json.dumps({"query": "hub q", "response": "hub r"}) + "\n",
        "data/test.jsonl": json.dumps({"query": "hub test", "response": "r"}) + "\n",
        "zh/train.jsonl": json.dumps({"instruction": "你好", "output": "你好！"}) + "\n",
    }).items():
        (snap / rel).parent.mkdir(parents=True, exist_ok=True)
        (snap / rel).write_text(text)
    return snap


@pytest.fixture
def hf_offline(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("SWIFTLIKE_HUB", raising=False)
    monkeypatch.delenv("USE_HF", raising=False)
    return cache


def test_hub_dataset_offline_cache(hf_offline):
    seed_hf_cache(hf_offline)
    # the train files of data/ and zh/ (data/test.jsonl and README.md are not read)
    assert sorted(queries(load_dataset("hf::acme/tiny-sft").train)) == ["hub q", "你好"]
    assert queries(load_dataset("hf::acme/tiny-sft:zh").train) == ["你好"]
    assert len(load_dataset("acme/tiny-sft#5").train) == 5  # bare ORG/NAME: the default hub (hf)
    other = hf_offline.parent / "elsewhere"
    seed_hf_cache(other, "acme/other")
    assert queries(load_dataset("hf::acme/other:zh", cache_dir=str(other)).train) == ["你好"]


def test_registered_hub_dataset_offline(hf_offline, plugins):
    seed_hf_cache(hf_offline, "acme/registered")

    class Datasets:
        @swiftlike.hookimpl
        def register_datasets(self, register):
            register("acme-hub", hf="acme/registered", ms="acme/registered-ms", subsets=["zh"])

    plugins.add(Datasets(), "acme-hub")
    assert queries(load_dataset("acme-hub:zh").train) == ["你好"]
    with pytest.raises(DatasetError, match="no subset 'fr'"):
        load_dataset("acme-hub:fr")
    # Not cached and offline: a clear error, not a hang.
    with pytest.raises(DatasetError, match="llm-wizard/alpaca-gpt4-data-zh"):
        load_dataset("alpaca-zh")
