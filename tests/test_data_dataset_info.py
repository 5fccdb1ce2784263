"""LLaMA-Factory `dataset_info.json` and ms-swift custom dataset_info: entries become DatasetSpecs that
`load_dataset(..., dataset_info=...)` resolves by name; unusable entries fail with one line naming file and entry."""
import json
from pathlib import Path

import pytest

from swiftlike.data import DatasetError, load_dataset, load_prompts, read_dataset, read_dataset_info
from swiftlike.registry import SwiftlikeError
from test_data_sources import hf_offline, seed_hf_cache  # noqa: F401  (fixture)

LF = Path(__file__).parent / "data" / "lf"
MS = Path(__file__).parent / "data" / "ms"
INFO = LF / "dataset_info.json"
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "system_tag": "system"}


@pytest.fixture(scope="module")
def specs():
    return read_dataset_info(LF)  # LLaMA-Factory's dataset_dir


def train(name, specs, **kw):
    return load_dataset(name, dataset_info=specs, shuffle=False, **kw).train


def test_alpaca_entry_with_renamed_columns(specs):
    spec = specs["renamed_alpaca"]
    assert (spec.format, spec.path, spec.roles) == ("alpaca", str(LF / "alpaca_renamed.json"), {})
    assert spec.columns == {"question": "instruction", "context": "input", "answer": "output", "sys": "system",
                            "past": "history"}
    rows = train("renamed_alpaca", specs)
    assert rows[0]["messages"] == [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "Translate to French\ncat"},
        {"role": "assistant", "content": "chat"}]
    assert rows[1]["messages"] == [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]
    # The json file itself works as well as its directory; without the info the name means nothing.
    assert read_dataset_info(INFO)["renamed_alpaca"] == spec
    with pytest.raises(DatasetError, match="neither a file nor a registered dataset"):
        load_dataset("renamed_alpaca")


def test_sharegpt_entry_default_tags(specs):
    spec = specs["sharegpt_default"]
    assert (spec.format, spec.columns, spec.roles) == ("sharegpt", {}, {})
    [row] = train("sharegpt_default", specs)
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "user", "assistant", "tool",
                                                    "assistant"]
    assert row["messages"][0]["content"] == "You are kind."
    assert row["messages"][4]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert row["tools"][0]["function"]["name"] == "get_weather"


def test_openai_style_sharegpt_entry(specs):
    spec = specs["openai_style"]
    assert (spec.format, spec.columns, spec.roles) == ("sharegpt", {"messages": "conversations"}, OPENAI_TAGS)
    rows = train("openai_style", specs)
    assert rows[0]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                                   {"role": "assistant", "content": "4"}]
    assert [m["content"] for m in rows[1]["messages"]] == ["Hi", "Hello", "Bye", "Bye!"]
    # Any column and any role names: `dialog` with speaker/text, customer/agent.
    assert train("custom_roles", specs)[0]["messages"] == [
        {"role": "user", "content": "Is it open?"}, {"role": "assistant", "content": "Yes, until 9."}]


def test_sharegpt_roles_reported_with_their_key(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"messages": [{"role": "customer", "content": "a"}]}) + "\n")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {
        "file_name": "d.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": OPENAI_TAGS}}))
    _, problems = read_dataset("d", dataset_info=read_dataset_info(tmp_path))
    assert str(problems[0]).startswith(f"{tmp_path / 'd.jsonl'}:1: conversations[0] has role='customer'; expected")


def test_num_samples(specs):
    assert specs["sampled"].extra["num_samples"] == 3
    rows = train("sampled", specs)
    assert len(rows) == 3 and len({r["messages"][0]["content"] for r in rows}) == 3
    assert rows == train("sampled", specs)  # seeded
    assert len(train("sampled#5", specs)) == 5  # the argument's #N wins


def test_max_samples_keeps_each_datasets_first_rows(specs):
    """LLaMA-Factory's max_samples: at most N rows of each dataset, its first ones; never repeats rows."""
    rows = train("renamed_alpaca", specs)
    assert len(rows) >= 2
    assert train("renamed_alpaca", specs, max_samples=1) == rows[:1]
    assert train("renamed_alpaca", specs, max_samples=1000) == rows
    folder = train("folder_data", specs)
    assert train(["renamed_alpaca", "folder_data"], specs, max_samples=1) == rows[:1] + folder[:1]  # each dataset


def test_file_name_is_a_directory(specs):
    assert specs["folder_data"].path == str(LF / "folder")
    rows = train("folder_data", specs)
    assert sorted(r["messages"][0]["content"] for r in rows) == ["a", "c"]


def test_ranking_and_kto_entries_are_rlhf_data(specs):
    """LLaMA-Factory's preference (`ranking: true`) and KTO (`kto_tag`) entries feed `swiftlike rlhf`."""
    alpaca = train("dpo_demo", specs, kind="preference")
    assert [(r["messages"], r["chosen"], r["rejected"]) for r in alpaca] == [
        ([{"role": "user", "content": "What is AI?"}], "Artificial intelligence.", "No idea.")]
    sharegpt = train("dpo_sharegpt", specs, kind="preference")
    assert [(r["messages"], r["chosen"], r["rejected"]) for r in sharegpt] == [
        ([{"role": "user", "content": "Name a colour."}], "Blue.", "Seven."),
        ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Capital of France?"}],
         "Paris.", "Rome.")]
    kto = train("kto_demo", specs, kind="kto")
    assert [(r["messages"], r["completion"], r["label"]) for r in kto] == [
        ([{"role": "user", "content": "Name a colour."}], "Blue.", True),
        ([{"role": "user", "content": "Name a colour."}], "Seven.", False)]
    # KTO also reads a ranking entry, each pair as a desirable and an undesirable row
    assert [(r["completion"], r["label"]) for r in train("dpo_sharegpt", specs, kind="kto")][:2] == [
        ("Blue.", True), ("Seven.", False)]
    for name, kind, words in [("dpo_demo", "sft", "is preference data (chosen/rejected pairs); train on it with "
                                                   "`swiftlike rlhf --rlhf_type dpo"),
                              ("kto_demo", "sft", "is KTO feedback data (kto_tag); train on it with `swiftlike rlhf "
                                                  "--rlhf_type kto`"),
                              ("kto_demo", "preference", "is KTO feedback data (kto_tag), not the preference rows"),
                              ("dpo_demo", "text", "is preference data (chosen/rejected pairs), not the text rows")]:
        with pytest.raises(DatasetError) as info:
            train(name, specs, kind=kind)
        assert f"dataset {name!r} {words}" in str(info.value) and "\n" not in str(info.value)


def test_pretraining_reads_an_alpaca_entrys_prompt_column(specs):
    """LLaMA-Factory's pretraining entries map their text column to `prompt` (c4_demo: `{"prompt": "text"}`)."""
    assert [r["text"] for r in train("c4_demo", specs, kind="text")] == ["The cat sat on the mat.",
                                                                        "Rain fell all day."]


@pytest.mark.parametrize("name,reason", [
    ("mllm_demo", "columns.images: multimodal data; swiftlike trains text-only models"),
    ("missing_file", f"file_name 'nowhere.json': {LF / 'nowhere.json'} does not exist"),
])
def test_unusable_entries_fail_when_used(specs, name, reason):
    with pytest.raises(DatasetError) as info:
        load_dataset(name, dataset_info=specs)
    msg = str(info.value)
    assert isinstance(info.value, SwiftlikeError)
    assert msg.startswith(f"{INFO}: dataset {name!r}: {reason}") and "\n" not in msg


@pytest.mark.parametrize("entry,reason", [
    ({"file_name": "d.jsonl", "columns": {"videos": "v"}}, "columns.videos: multimodal data"),
    ({"file_name": "d.jsonl", "formatting": "pretrain"}, "formatting 'pretrain' is not supported"),
    ({"file_name": "d.jsonl", "lang": "en"}, "unknown key(s) lang"),
    ({"file_name": "d.jsonl", "columns": {"messages": "m"}}, "columns.messages is a sharegpt column but formatting"),
    ({"file_name": "d.jsonl", "tags": {"role": "r"}}, "unknown tags role"),
    ({"script_url": "my_script"}, "script_url: a dataset loading script is not supported"),
    ({"file_name": "d.jsonl", "num_samples": 0}, "num_samples must be a positive integer"),
    ({"formatting": "alpaca"}, "needs file_name, hf_hub_url or ms_hub_url"),
])
def test_other_unusable_entries(tmp_path, entry, reason):
    (tmp_path / "d.jsonl").write_text(json.dumps({"instruction": "i", "output": "o"}) + "\n")
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"bad": entry, "good": {"file_name": "d.jsonl"}}))
    specs = read_dataset_info(info)
    with pytest.raises(DatasetError) as err:
        load_dataset("bad", dataset_info=specs)
    assert str(err.value).startswith(f"{info}: dataset 'bad': {reason}")
    assert len(load_dataset("good", dataset_info=specs).train) == 1  # one bad entry spoils only itself


def test_hub_entry_subset_and_split(hf_offline):  # noqa: F811
    seed_hf_cache(hf_offline)
    info = hf_offline.parent / "dataset_info.json"
    info.write_text(json.dumps({"tiny_zh": {"hf_hub_url": "acme/tiny-sft", "subset": "zh"},
                                "tiny_test": {"hf_hub_url": "acme/tiny-sft", "ms_hub_url": "acme/x",
                                              "folder": "data", "split": "test",
                                              "columns": {"prompt": "query", "response": "response"}}}))
    specs = read_dataset_info(info)
    assert (specs["tiny_zh"].hf, specs["tiny_zh"].subsets) == ("acme/tiny-sft", ["zh"])
    assert [r["messages"][0]["content"] for r in train("tiny_zh", specs)] == ["你好"]
    with pytest.raises(DatasetError, match="no subset 'en'"):
        train("tiny_zh:en", specs)
    assert [r["messages"][0]["content"] for r in train("tiny_test", specs, hub="hf")] == ["hub test"]


def test_names_resolve_before_the_registry(tmp_path):
    (tmp_path / "mine.jsonl").write_text(json.dumps({"instruction": "mine", "output": "o"}) + "\n")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"alpaca-zh": {"file_name": "mine.jsonl"}}))
    rows = train("alpaca-zh", read_dataset_info(tmp_path))  # a registered name, offline: the info's file is read
    assert rows[0]["messages"][0]["content"] == "mine"


def test_prompts_through_dataset_info(specs):
    prompts = load_prompts("openai_style", dataset_info=specs)
    assert prompts[0]["messages"][-1] == {"role": "user", "content": "2+2?"} and prompts[0]["response"] == "4"


def test_ms_swift_form():
    specs = read_dataset_info(MS / "dataset_info.json")
    assert set(specs) == {"qa", "qa-named", "acme/tiny-sft", "multi-split"}
    assert specs["qa"].path == str(MS / "qa.jsonl") and specs["qa"].columns == {"q": "query", "a": "response"}
    assert (specs["acme/tiny-sft"].hf, specs["acme/tiny-sft"].subsets) == ("acme/tiny-sft", ["zh"])
    for name in ("qa", "qa-named"):
        rows = load_dataset(name, dataset_info=specs, shuffle=False).train
        assert rows[0]["messages"] == [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]
    with pytest.raises(DatasetError, match=r"dataset 'multi-split': split \['train', 'validation'\]: give one"):
        load_dataset("multi-split", dataset_info=specs)


def test_ms_swift_form_errors(tmp_path):
    info = tmp_path / "info.json"
    info.write_text(json.dumps([{"dataset_path": "gone.jsonl"}, {"hf_dataset_id": "a/b", "messages": {}}]))
    specs = read_dataset_info(info)
    with pytest.raises(DatasetError, match=rf"{info}: dataset 'gone': dataset_path 'gone.jsonl': .* does not exist"):
        load_dataset("gone", dataset_info=specs)
    with pytest.raises(DatasetError, match=r"dataset 'a/b': unknown key\(s\) messages"):
        load_dataset("a/b", dataset_info=specs)
    info.write_text(json.dumps([{"dataset_name": "x"}]))
    with pytest.raises(DatasetError, match=rf"{info}\[#0\]: .* needs dataset_path, ms_dataset_id or hf_dataset_id"):
        read_dataset_info(info)


def test_info_file_errors(tmp_path):
    with pytest.raises(DatasetError, match=f"dataset_info {tmp_path / 'dataset_info.json'} does not exist"):
        read_dataset_info(tmp_path)
    bad = tmp_path / "dataset_info.json"
    bad.write_text('{\n  "a": {"file_name": "x.json",}\n}\n')
    with pytest.raises(DatasetError, match=rf"{bad}:2: invalid JSON"):
        read_dataset_info(bad)
    bad.write_text('"alpaca"')
    with pytest.raises(DatasetError, match="expected an object of datasets"):
        read_dataset_info(bad)
