"""Row formats, auto-detection, column renames and bad-row reports with exact locations."""
import json
import logging
from pathlib import Path

import pytest

from swiftlike.data import DatasetError, load_dataset, read_dataset
from swiftlike.registry import SwiftlikeError

DATA = Path(__file__).parent / "data"


def rows_of(name, **kw):
    rows, problems = read_dataset(str(DATA / name), **kw)
    assert problems == []
    return rows


def test_messages_format():
    rows = rows_of("messages.jsonl")
    assert rows[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert rows[1]["messages"][0] == {"role": "system", "content": "You are a calculator."}  # top-level system
    assert rows[1]["messages"][2] == {"role": "assistant", "content": "4", "loss": True}
    tool_row = rows[2]
    assert tool_row["tools"][0]["function"]["name"] == "get_weather"  # JSON-string tools parsed
    assert [m["role"] for m in tool_row["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert tool_row["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}


def test_sharegpt_format_json_array():
    rows = rows_of("sharegpt.json")
    assert rows[0]["messages"] == [
        {"role": "system", "content": "You are kind."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye!"}]
    call, obs = rows[1]["messages"][1], rows[1]["messages"][2]
    assert call["role"] == "assistant" and call["tool_calls"][0]["function"]["name"] == "get_weather"
    assert obs == {"role": "tool", "content": "21C"}
    assert rows[1]["tools"][0]["function"]["name"] == "get_weather"


def test_firefly_format():
    rows = rows_of("firefly.jsonl")
    assert [m["content"] for m in rows[0]["messages"]] == ["你好", "你好！", "再见", "再见！"]
    assert [m["role"] for m in rows[1]["messages"]] == ["user", "assistant"]


def test_alpaca_json_and_csv():
    rows = rows_of("alpaca.json")
    assert rows[0]["messages"] == [{"role": "user", "content": "Translate to French\ncat"},
                                   {"role": "assistant", "content": "chat"}]
    assert rows[1]["messages"][0]["content"] == "Say hi"  # empty input adds no newline
    assert [m["content"] for m in rows[2]["messages"]] == ["You are terse.", "q1", "r1", "q2", "r2"]
    csv_rows = rows_of("alpaca.csv")
    assert len(csv_rows) == 3
    assert csv_rows[0]["messages"][0]["content"] == "Translate to French\ndog"
    assert csv_rows[1]["messages"][1]["content"] == "line one\nline two"  # quoted multi-line cell


def test_query_response_history():
    rows = rows_of("query_response.jsonl")
    assert rows[0]["messages"] == [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
    assert [m["role"] for m in rows[1]["messages"]] == ["system", "user", "assistant", "user", "assistant"]


def test_format_override(tmp_path):
    # Rows that have both alpaca and query/response keys: auto-detect picks alpaca, the override wins.
    f = tmp_path / "both.jsonl"
    f.write_text(json.dumps({"instruction": "I", "output": "O", "query": "Q", "response": "R"}) + "\n")
    assert read_dataset(str(f))[0][0]["messages"][0]["content"] == "I"
    assert read_dataset(str(f), format="query_response")[0][0]["messages"][0]["content"] == "Q"
    # An overridden format reports rows that lack its keys.
    _, problems = read_dataset(str(DATA / "query_response.jsonl"), format="alpaca")
    assert str(problems[0]).startswith(f"{DATA / 'query_response.jsonl'}:1: row is not in alpaca format")
    with pytest.raises(ValueError, match="unknown dataset format"):
        read_dataset(str(f), format="nope")


def test_format_detected_per_file(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"query": "q", "response": "r"}) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"instruction": "i", "output": "o"}) + "\n")
    rows, problems = read_dataset(str(tmp_path))
    assert problems == [] and len(rows) == 2


def test_columns_rename():
    rows = rows_of("columns.jsonl", columns={"q": "query", "a": "response"})
    assert rows[0]["messages"] == [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]
    # The same mapping through load_dataset (CLI --columns)
    splits = load_dataset(str(DATA / "columns.jsonl"), columns={"q": "query", "a": "response"}, shuffle=False)
    assert splits.train == rows


def test_bad_jsonl_locations():
    path = DATA / "bad.jsonl"
    with pytest.raises(DatasetError) as info:
        load_dataset(str(path))
    err = info.value
    assert isinstance(err, SwiftlikeError)
    got = [str(p) for p in err.problems]
    assert got[0].startswith(f"{path}:2: invalid JSON")
    assert got[1].startswith(f"{path}:3: row in no known format (keys: foo)")
    assert got[2] == f"{path}:5: messages[1]: roles do not alternate (user -> user; expected assistant)"
    assert got[3] == f"{path}:6: messages[1]: empty assistant turn"
    assert got[4] == f"{path}:7: last message is user, not assistant"
    assert got[5].startswith(f"{path}:9: row is not in messages format")
    assert len(got) == 6
    assert "6 bad row(s)" in str(err) and f"{path}:5:" in str(err)


def test_bad_csv_and_json_locations():
    csv_path, json_path = DATA / "bad.csv", DATA / "bad.json"
    with pytest.raises(DatasetError) as info:
        load_dataset([str(csv_path), str(json_path)])
    got = [str(p) for p in info.value.problems]
    # The multi-line row spans lines 3-5, so the empty answer is on line 6.
    assert got == [f"{csv_path}:6: messages[1]: empty assistant turn",
                   f"{json_path}[#1]: history[0] must be a [query, response] pair",
                   f"{json_path}[#2]: expected a JSON object, got str"]


def test_error_lists_ten_and_counts(tmp_path):
    f = tmp_path / "many.jsonl"
    f.write_text("".join(json.dumps({"query": f"q{i}", "response": ""}) + "\n" for i in range(25)))
    with pytest.raises(DatasetError) as info:
        load_dataset(str(f))
    msg = str(info.value)
    assert msg.startswith("25 bad row(s)")
    assert f"{f}:10:" in msg and f"{f}:11:" not in msg and "and 15 more" in msg


def good_rows(path, n):
    path.write_text("".join(json.dumps({"query": f"q{i}", "response": "r"}) + "\n" for i in range(n)))
    return str(path)


def test_skip_bad_rows(caplog, tmp_path):
    # bad.jsonl: 6 bad rows, 2 good; with 4 more good rows the bad ones are exactly half: skipped.
    with caplog.at_level(logging.WARNING, logger="swiftlike.data"):
        splits = load_dataset([str(DATA / "bad.jsonl"), good_rows(tmp_path / "good.jsonl", 4)], skip_bad_rows=True)
    assert splits.skipped == 6 and len(splits.train) == 6
    lines = [r.message for r in caplog.records if "skipped" in r.message]
    assert len(lines) == 1
    assert lines[0].startswith(f"skipped 6 bad row(s); first: {DATA / 'bad.jsonl'}:2: invalid JSON (Expecting")


def test_skip_bad_rows_stops_past_half(tmp_path):
    bad = str(DATA / "bad.jsonl")
    with pytest.raises(DatasetError) as info:
        load_dataset([bad, good_rows(tmp_path / "three.jsonl", 3)], skip_bad_rows=True)  # 6 of 11
    msg = str(info.value)
    assert msg.startswith("skipped 6 of 11 rows (more than half) — the data or its format is probably wrong; "
                          f"first problems: {bad}:2: invalid JSON")
    assert f"{bad}:3: row in no known format" in msg and f"{bad}:5:" in msg and f"{bad}:6:" not in msg
    assert len(info.value.problems) == 6
    # Val rows count too: 6 bad of 12 is not more than half.
    splits = load_dataset(bad, val_dataset=good_rows(tmp_path / "val.jsonl", 4), skip_bad_rows=True)
    assert (len(splits.train), len(splits.val), splits.skipped) == (2, 4, 6)
    # `#N` sampling does not change the count: the rows read are what the threshold is about.
    with pytest.raises(DatasetError, match="skipped 6 of 8 rows"):
        load_dataset(f"{bad}#100", skip_bad_rows=True)


def test_malformed_json_array(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('[\n  {"query": "q", "response": "r"},\n  {"query": \n]\n')
    with pytest.raises(DatasetError, match=rf"{f}:4: invalid JSON"):
        load_dataset(str(f))


def test_json_lines_named_json(tmp_path):
    f = tmp_path / "lines.json"  # hub repos often name JSON lines `.json`
    f.write_text('{"query": "a", "response": "b"}\n{"query": "c", "response": "d"}\n')
    assert len(read_dataset(str(f))[0]) == 2


def test_openai_text_content_parts(tmp_path):
    f = tmp_path / "parts.jsonl"
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    f.write_text(json.dumps({"messages": [{"role": "user", "content": parts},
                                          {"role": "assistant", "content": "hi"}]}) + "\n"
                 + json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url"}]},
                                            {"role": "assistant", "content": "hi"}]}) + "\n")
    rows, problems = read_dataset(str(f))
    assert rows[0]["messages"][0]["content"] == "Hello there"
    assert [str(p) for p in problems] == [f"{f}:2: messages[0].content: only text content parts are supported"]


def test_tool_turn_must_follow_assistant(tmp_path):
    f = tmp_path / "tool.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "x"},
                                          {"role": "assistant", "content": "b"}]}) + "\n")
    assert [str(p) for p in read_dataset(str(f))[1]] == [
        f"{f}:1: messages[1]: roles do not alternate (user -> tool; expected assistant)"]


MEDIA = "row carries images (the multimodal format); swiftlike trains text-only models — remove the images or the row"


def test_rows_with_images_are_refused(tmp_path):
    def msg(user, **extra):
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": "ok"}], **extra}

    f = tmp_path / "mm.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in [
        msg("describe", images=["a.jpg"]),            # 1
        msg("describe", image="a.jpg"),               # 2
        msg("describe", videos=["v.mp4"]),            # 3
        msg("describe", audios=["a.wav"]),            # 4
        msg("<image>describe"),                       # 5
        msg("what happens in <video>?"),              # 6
        msg("<audio> transcribe"),                    # 7
        msg("Picture 1: <img>a.png</img>\nwhat?"),    # 8  Qwen-VL
        msg('HTML: <img src="a.png"> and <img alt=x/>'),  # 9  plain text
        msg("no media", images=[], videos=None),      # 10 empty fields are fine
    ]))
    rows, problems = read_dataset(str(f))
    assert [str(p) for p in problems] == [f"{f}:{i}: {MEDIA}" for i in range(1, 9)]
    assert [r["messages"][0]["content"][:5] for r in rows] == ["HTML:", "no me"]


def test_images_in_sharegpt_alpaca_and_csv(tmp_path):
    share = tmp_path / "share.json"
    share.write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "<image>hi"}, {"from": "gpt", "value": "cat"}]},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "cat"}], "images": ["x"]},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "ok"}]}]))
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text("".join(json.dumps(r) + "\n" for r in [
        {"instruction": "Describe", "input": "<img>cat.png</img>", "output": "a cat"},
        {"instruction": "Describe", "output": "a cat", "images": "cat.png"},
        {"instruction": "Describe", "output": "<video> shows a cat"},
        {"instruction": "ok", "output": "fine"}]))
    csv = tmp_path / "mm.csv"
    csv.write_text('instruction,output,images\nq1,r1,\nq2,r2,[]\nq3,r3,cat.png\n')
    with pytest.raises(DatasetError) as info:
        load_dataset([str(share), str(alpaca), str(csv)])
    assert [str(p) for p in info.value.problems] == [
        f"{share}[#0]: {MEDIA}", f"{share}[#1]: {MEDIA}",
        f"{alpaca}:1: {MEDIA}", f"{alpaca}:2: {MEDIA}", f"{alpaca}:3: {MEDIA}", f"{csv}:4: {MEDIA}"]
