"""Rows of the other stages, as people have them: preference pairs (ms-swift, TRL, LLaMA-Factory), KTO, raw text and
RL prompts; bad rows are file:line problems; a pair encodes to exactly the tokens sft trains on."""
import json

import pytest

from swiftlike.data import load_dataset
from swiftlike.data.errors import DatasetError

PROMPT = [{"role": "user", "content": "Who are you?"}]


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return path


def test_preference_formats_give_one_canonical_row(tmp_path):
    files = {
        "ms-swift": [{"messages": PROMPT + [{"role": "assistant", "content": "Nova."}], "rejected_response": "SmolLM."}],
        "trl-strings": [{"prompt": "Who are you?", "chosen": "Nova.", "rejected": "SmolLM."}],
        "trl-conversations": [{"prompt": PROMPT, "chosen": [{"role": "assistant", "content": "Nova."}],
                               "rejected": [{"role": "assistant", "content": "SmolLM."}]}],
        "trl-implicit": [{"chosen": PROMPT + [{"role": "assistant", "content": "Nova."}],
                          "rejected": PROMPT + [{"role": "assistant", "content": "SmolLM."}]}],
        "lf-sharegpt": [{"conversations": [{"from": "human", "value": "Who are you?"}],
                         "chosen": {"from": "gpt", "value": "Nova."}, "rejected": {"from": "gpt", "value": "SmolLM."}}],
        "lf-alpaca": [{"instruction": "Who are you?", "input": "", "chosen": "Nova.", "rejected": "SmolLM."}],
    }
    for name, rows in files.items():
        got = load_dataset(str(_write(tmp_path / f"{name}.jsonl", rows)), kind="preference").train
        assert len(got) == 1, name
        row = {k: v for k, v in got[0].items() if k != "location"}
        assert row == {"messages": PROMPT, "chosen": "Nova.", "rejected": "SmolLM."}, name
        assert got[0]["location"].endswith(f"{name}.jsonl:1")


def test_bad_preference_rows_are_reported_by_line(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [
        {"messages": PROMPT + [{"role": "assistant", "content": "Nova."}]},  # an sft row: no rejected answer
        {"prompt": "Hi", "chosen": "Same.", "rejected": "Same."},
        {"prompt": "Hi", "chosen": "  ", "rejected": "No."},
        {"prompt": "Hi", "chosen": "Yes.", "rejected": "No.", "images": ["a.png"]},
        {"prompt": "Hi", "chosen": "Yes.", "rejected": "No."},
        {"chosen": "Yes.", "rejected": "No."},  # TRL text answers with no prompt
        {"prompt": "Hi", "chosen": [{"role": "user", "content": "Yes."}], "rejected": "No."},  # not an answer
    ])
    with pytest.raises(DatasetError) as err:
        load_dataset(str(path), kind="preference")
    text = str(err.value)
    assert f"{path}:6: `chosen`/`rejected` are text with no prompt: add `prompt` (TRL)" in text
    assert f"{path}:7: 'chosen' ends with a 'user' turn; its last message must be the assistant's answer" in text
    assert f"{path}:1: not a preference row (keys: messages): no rejected answer; use one of ms-swift" in text
    assert f"{path}:2: chosen and rejected answers are identical" in text
    assert f"{path}:3: empty chosen answer" in text
    assert f"{path}:4: row carries images" in text
    assert f"{path}:5" not in text


def test_kto_text_and_rl_rows(tmp_path):
    kto = load_dataset(str(_write(tmp_path / "kto.jsonl", [
        {"messages": PROMPT + [{"role": "assistant", "content": "Nova."}], "label": True},
        {"prompt": "Who are you?", "completion": "SmolLM.", "label": "false"},
        {"conversations": [{"from": "human", "value": "Who are you?"}, {"from": "gpt", "value": "Nova."}],
         "kto_tag": 1},
    ])), kind="kto", shuffle=False).train
    assert [(r["completion"], r["label"]) for r in kto] == [("Nova.", True), ("SmolLM.", False), ("Nova.", True)]
    with pytest.raises(DatasetError, match="no `label`"):
        load_dataset(str(_write(tmp_path / "nolabel.jsonl", [{"prompt": "a", "completion": "b"}])), kind="kto")
    pairs = load_dataset(str(_write(tmp_path / "pairs.jsonl", [
        {"messages": PROMPT + [{"role": "assistant", "content": "Nova."}], "rejected_response": "SmolLM."}])),
        kind="kto", shuffle=False).train
    assert [(r["completion"], r["label"]) for r in pairs] == [("Nova.", True), ("SmolLM.", False)]
    (tmp_path / "corpus.txt").write_text("first document\n\nsecond document\n")
    text = load_dataset(str(tmp_path / "corpus.txt"), kind="text", shuffle=False).train
    assert [r["text"] for r in text] == ["first document", "second document"]
    assert text[1]["location"].endswith("corpus.txt:3")
    with pytest.raises(DatasetError, match="no `text` field"):
        load_dataset(str(_write(tmp_path / "notext.jsonl", [{"content": "x"}])), kind="text")
    assert load_dataset(str(_write(tmp_path / "mapped.jsonl", [{"content": "x"}])), kind="text",
                        columns={"content": "text"}).train[0]["text"] == "x"
    rl = load_dataset(str(_write(tmp_path / "rl.jsonl", [
        {"messages": [{"role": "user", "content": "2+2?"}], "solution": "4"},
        {"query": "3+3?", "response": "6"},
        {"prompt": "4+4?", "solution": "8"},  # TRL's prompt-only rows
        {"prompt": [{"role": "user", "content": "5+5?"}]},
        {"problem": "6+6?", "solution": "12"},  # ms-swift's math sets
        {"question": "7+7?", "solution": "14"},
    ])), kind="rl", shuffle=False).train
    assert [(r["messages"][-1]["content"], r["solution"]) for r in rl] == [
        ("2+2?", "4"), ("3+3?", "6"), ("4+4?", "8"), ("5+5?", None), ("6+6?", "12"), ("7+7?", "14")]


def test_a_pair_encodes_to_the_tokens_sft_trains_on(tokenizer_dir):
    """prompt_ids + chosen_ids is the sft encoding of the same conversation up to its last supervised token, and the
    supervised tokens are exactly chosen_ids."""
    from transformers import AutoTokenizer

    from swiftlike.templates import IGNORE_INDEX, get_template
    from swiftlike.train.rlhf.encode import encode_pair

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    row = {"messages": history + PROMPT, "chosen": "I am Nova, made by Orbit Labs.", "rejected": "I am SmolLM."}
    pair = encode_pair(get_template("smollm2", tok, loss_mode="last_round"), row, 256)
    for answer, ids in ((row["chosen"], pair["chosen_ids"]), (row["rejected"], pair["rejected_ids"])):
        sft = get_template("smollm2", tok, loss_mode="last_round").encode(
            row["messages"] + [{"role": "assistant", "content": answer}])
        supervised = [t for t, label in zip(sft["input_ids"], sft["labels"]) if label != IGNORE_INDEX]
        assert supervised == ids
        assert sft["input_ids"][:len(pair["prompt_ids"]) + len(ids)] == pair["prompt_ids"] + ids
    assert tok.decode(pair["chosen_ids"]) == "I am Nova, made by Orbit Labs.<|im_end|>"
    # the single-turn case equals sft's default loss mode too
    single = {"messages": PROMPT, "chosen": "Nova.", "rejected": "SmolLM."}
    pair = encode_pair(get_template("smollm2", tok, loss_mode="last_round"), single, 256)
    sft = get_template("smollm2", tok).encode(PROMPT + [{"role": "assistant", "content": "Nova."}])
    assert [t for t, label in zip(sft["input_ids"], sft["labels"]) if label != IGNORE_INDEX] == pair["chosen_ids"]


def test_a_prompt_that_leaves_no_room_is_refused(tokenizer_dir):
    from transformers import AutoTokenizer

    from swiftlike.templates import get_template
    from swiftlike.train.rlhf.encode import TooLong, encode_pair

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tpl = get_template("smollm2", tok, loss_mode="last_round")
    row = {"messages": [{"role": "user", "content": "word " * 200}], "chosen": "Yes.", "rejected": "No."}
    with pytest.raises(TooLong, match="over --max_length 64"):
        encode_pair(tpl, row, 64)
    kept = encode_pair(tpl, row, 64, truncation="left")
    assert len(kept["prompt_ids"]) + max(len(kept["chosen_ids"]), len(kept["rejected_ids"])) == 64


def test_kto_from_pairs_samples_and_splits_whole_pairs(tmp_path):
    """A pair read by KTO is two rows (desirable, undesirable) from one source row: `#N` samples N pairs and
    --split_dataset_ratio puts both halves on one side (a prompt in train and val would leak)."""
    pairs = _write(tmp_path / "pairs.jsonl", [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "good"}],
         "rejected_response": "bad"} for i in range(20)])
    split = load_dataset(str(pairs), split_dataset_ratio=0.2, kind="kto")
    prompts = [{r["messages"][-1]["content"] for r in rows} for rows in (split.train, split.val)]
    assert len(split.val) == 8 and len(prompts[1]) == 4 and not prompts[0] & prompts[1]
    # the shuffled order survives the split: KTO's KL term pairs neighbours, which must not be a pair's two halves
    twins = sum(a["messages"] == b["messages"] for a, b in zip(split.train[::2], split.train[1::2]))
    assert twins < len(split.train) // 4
    sampled = load_dataset(f"{pairs}#5", kind="kto").train
    assert len(sampled) == 10 and sorted(r["label"] for r in sampled) == [False] * 5 + [True] * 5
    assert len({r["messages"][-1]["content"] for r in sampled}) == 5


def test_a_directory_of_data_and_text_files_says_which_it_reads(tmp_path, caplog):
    """Text files are read only where a directory holds no data files; beside data files they are named, not
    silently left out."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("plain text\n")
    _write(folder / "b.jsonl", [{"text": "json text"}])
    with caplog.at_level("WARNING", logger="swiftlike"):
        rows = load_dataset(str(folder), kind="text").train
    assert [r["text"] for r in rows] == ["json text"]
    assert "reading its 1 data file(s), not its 1 text file(s) (a.txt)" in caplog.text

