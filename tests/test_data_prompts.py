"""Prompt rows for inference: every training format, with or without the reply, in file order."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from swiftlike.data import DatasetError, load_prompts, read_dataset


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def test_messages_rows(tmp_path):
    f = jsonl(tmp_path / "m.jsonl", [
        {"messages": [user("Hi")]},
        {"messages": [{"role": "system", "content": "Be brief."}, user("2+2?"), bot("4")]},
        {"messages": [user("a"), bot("b"), user("c")], "tools": [{"type": "function", "function": {"name": "f"}}]},
        {"messages": [user("weather?"), {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {}}}]},
            {"role": "tool", "content": "21C"}]},
        {"messages": [user("x"), bot("")]},  # an empty reply is no reference
    ])
    p = load_prompts(str(f))
    assert p[0] == {"messages": [user("Hi")], "response": None, "location": f"{f}:1"}
    assert p[1] == {"messages": [{"role": "system", "content": "Be brief."}, user("2+2?")], "response": "4",
                    "location": f"{f}:2"}
    assert p[2]["messages"] == [user("a"), bot("b"), user("c")] and p[2]["tools"][0]["function"]["name"] == "f"
    assert [m["role"] for m in p[3]["messages"]] == ["user", "assistant", "tool"] and p[3]["response"] is None
    assert p[4] == {"messages": [user("x")], "response": None, "location": f"{f}:5"}


def test_sharegpt_rows(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "Hi"}]},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}], "system": "S"}]))
    p = load_prompts(str(f))
    assert p[0] == {"messages": [user("Hi")], "response": None, "location": f"{f}[#0]"}
    assert p[1] == {"messages": [{"role": "system", "content": "S"}, user("Hi")], "response": "Hello",
                    "location": f"{f}[#1]"}


def test_query_rows(tmp_path):
    f = jsonl(tmp_path / "q.jsonl", [
        {"query": "What is 2+2?"},
        {"query": "And 3+3?", "response": "6", "history": [["What is 2+2?", "4"]], "system": "Math."},
    ])
    p = load_prompts(str(f))
    assert p[0] == {"messages": [user("What is 2+2?")], "response": None, "location": f"{f}:1"}
    assert p[1]["messages"] == [{"role": "system", "content": "Math."}, user("What is 2+2?"), bot("4"),
                                user("And 3+3?")]
    assert p[1]["response"] == "6"
    # Training still needs the reply.
    assert read_dataset(str(f))[1][0].reason.startswith("row in no known format")


def test_alpaca_rows_json_and_csv(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", [{"instruction": "Translate", "input": "cat"},
                                     {"instruction": "Say hi", "output": "hi"}])
    p = load_prompts(str(f))
    assert p[0] == {"messages": [user("Translate\ncat")], "response": None, "location": f"{f}:1"}
    assert p[1]["response"] == "hi"
    csv = tmp_path / "a.csv"
    csv.write_text("instruction,input,output\nTranslate,dog,\nSay hi,,hi\n")
    assert [(r["messages"][0]["content"], r["response"]) for r in load_prompts(str(csv))] == [
        ("Translate\ndog", None), ("Say hi", "hi")]


def test_columns_and_format(tmp_path):
    f = jsonl(tmp_path / "c.jsonl", [{"q": "ping", "a": "pong"}, {"q": "only"}])
    p = load_prompts(str(f), columns={"q": "query", "a": "response"}, format="query_response")
    assert [(r["messages"][-1]["content"], r["response"]) for r in p] == [("ping", "pong"), ("only", None)]


def test_bad_rows_one_error(tmp_path):
    f = jsonl(tmp_path / "bad.jsonl", [
        {"messages": [user("ok")]},
        {"messages": [user("a"), user("b")]},
        {"messages": [{"role": "system", "content": "only system"}]},
        {"messages": [user("a"), bot(" "), user("b")]},
        {"messages": [user("<image>what?")]},
        {"foo": 1},
    ])
    with open(f, "a") as fh:
        fh.write('{"messages": [\n')
    with pytest.raises(DatasetError) as info:
        load_prompts([str(f)])
    got = [str(p) for p in info.value.problems]
    assert got[:4] == [f"{f}:2: messages[1]: roles do not alternate (user -> user; expected assistant)",
                       f"{f}:3: last message is system, not user or tool",
                       f"{f}:4: messages[1]: empty assistant turn",
                       f"{f}:5: row carries images (the multimodal format); swiftlike trains text-only models — "
                       "remove the images or the row"]
    assert got[4].startswith(f"{f}:6: row in no known format") and got[5].startswith(f"{f}:7: invalid JSON")
    msg = str(info.value)
    assert msg.startswith("6 bad row(s) in the dataset; fix or remove them:") and "skip_bad_rows" not in msg


def test_sample_keeps_order_and_rows(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", [{"query": f"q{i}", "response": f"r{i}"} for i in range(20)])
    p = load_prompts(f"{f}#5")
    lines = [int(r["location"].rsplit(":", 1)[1]) for r in p]
    assert len(p) == 5 and lines == sorted(lines)
    # The rows training would sample with the same seed, in file order.
    trained = {r["messages"][0]["content"] for r in read_dataset(f"{f}#5")[0]}
    assert {r["messages"][0]["content"] for r in p} == trained
    assert [r["location"] for r in load_prompts(str(f))] == [f"{f}:{i}" for i in range(1, 21)]
    assert len(load_prompts([str(f), f"{f}#3"])) == 23


def test_split_of_a_directory():
    split_dir = Path(__file__).parent / "data" / "split_dir"
    assert [r["messages"][0]["content"] for r in load_prompts(str(split_dir))] == ["train q"]
    assert [r["location"] for r in load_prompts(str(split_dir), split="test")] == [f"{split_dir / 'test.jsonl'}:1"]


def test_no_torch_import(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", [{"query": "q"}])
    code = ("import sys; from swiftlike.data import load_prompts; assert load_prompts(sys.argv[1]); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
