"""`swiftlike template render|encode|check` through click's CliRunner on the `template` group alone."""
from __future__ import annotations

import json
import shutil

import click
import pytest
from click.testing import CliRunner

from swiftlike.cli.template_cmds import template
from test_templates import CONV, GOLDEN, SHAPES


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(template, [str(a) for a in args], catch_exceptions=False)
    return invoke


@pytest.fixture
def messages_file(tmp_path):
    def write(messages, name="m.json"):
        path = tmp_path / name
        path.write_text(json.dumps(messages), encoding="utf-8")
        return path
    return write


def test_module_import_is_light():
    import subprocess
    import sys

    code = "import sys, swiftlike.cli.template_cmds; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_render_exact_text(run, messages_file, tmp_path):
    msgs, _ = SHAPES["prompt"]
    result = run("render", "chatml", "--messages", messages_file(msgs))
    assert result.exit_code == 0 and result.output == GOLDEN["chatml"]["prompt"]  # prompt by default, no extra \n
    result = run("render", "chatml", "--messages", messages_file(msgs), "--no-generation-prompt")
    assert result.output == GOLDEN["chatml"]["prompt"][: -len("<|im_start|>assistant\n")]
    out = tmp_path / "out.txt"
    result = run("render", "llama", "--messages", messages_file(SHAPES["single"][0]), "--output", out)
    assert result.exit_code == 0 and result.output == "" and out.read_text() == GOLDEN["llama"]["single"]
    result = run("render", "chatml", "--messages", messages_file(msgs), "--system", "Be terse.")
    assert result.output.startswith("<|im_start|>system\nBe terse.<|im_end|>\n")
    wrapped = messages_file({"messages": msgs}, "wrapped.json")
    assert run("render", "chatml", "--messages", wrapped).output == GOLDEN["chatml"]["prompt"]


@pytest.mark.parametrize("content, expected", [
    ("not json", "invalid JSON"),
    ('{"nope": 1}', "'messages'"),
    ('[{"content": "x"}]', "messages[0]"),
])
def test_render_errors_name_file_and_field(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = CliRunner().invoke(template, ["render", "chatml", "--messages", str(path)])
    assert result.exit_code == 1 and "bad.json" in result.output and expected in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_render_unknown_template_and_missing_file(tmp_path, messages_file):
    result = CliRunner().invoke(template, ["render", "no-such-tpl", "--messages", str(messages_file([{"role": "user", "content": "x"}]))])
    assert result.exit_code == 1 and "no-such-tpl" in result.output
    result = CliRunner().invoke(template, ["render", "chatml", "--messages", str(tmp_path / "missing.json")])
    assert result.exit_code == 1 and "missing.json" in result.output


def test_encode(run, messages_file, smol_dir, smol_tokenizer):
    result = run("encode", "smollm2", "--messages", messages_file(CONV), "--tokenizer", smol_dir, "--json")
    data = json.loads(result.output)
    supervised = [t for t, lab in zip(data["input_ids"], data["labels"]) if lab != -100]
    assert smol_tokenizer.decode(supervised) == "Hi there<|im_end|>I am SmolLM.<|im_end|>"
    result = run("encode", "smollm2", "--messages", messages_file(CONV), "--tokenizer", smol_dir)
    assert result.exit_code == 0 and "input_ids (" in result.output and "I am SmolLM." in click.unstyle(result.output)


def test_check_passes_on_identical_template(run, smol_dir):
    result = CliRunner().invoke(template, ["check", "smollm2", "--tokenizer", str(smol_dir)])
    assert result.exit_code == 0, result.output
    assert "DIFF" not in result.output and "identical" in result.output


def test_check_catches_one_character_difference(smol_dir, tmp_path):
    changed = tmp_path / "tok"
    shutil.copytree(smol_dir, changed)
    jinja = changed / "chat_template.jinja"
    source = jinja.read_text()
    assert source.count("Hugging Face") == 1
    jinja.write_text(source.replace("Hugging Face", "Hugging face"))
    result = CliRunner().invoke(template, ["check", "smollm2", "--tokenizer", str(changed)])
    assert result.exit_code == 1
    assert "DIFF single" in result.output and "first difference at char" in result.output
    assert "ok   system_single" in result.output  # the default system is not used once a system is given
    # a different template family is caught too
    assert CliRunner().invoke(template, ["check", "chatml", "--tokenizer", str(smol_dir)]).exit_code == 1


def test_check_bad_tokenizer(tmp_path):
    result = CliRunner().invoke(template, ["check", "smollm2", "--tokenizer", str(tmp_path / "nothing-here")])
    assert result.exit_code == 1 and "nothing-here" in result.output


def test_messages_from_a_dataset_row_or_stdin(run, tmp_path, smol_dir):
    rows = [{"query": "Who are you?", "response": "Nova."},
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}]
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(rows[0]) + "\n")
    out = run("render", "chatml", "--messages", data).output
    assert out == "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\nNova.<|im_end|>\n"
    sharegpt = tmp_path / "sharegpt.jsonl"
    sharegpt.write_text(json.dumps(rows[1]) + "\n" + json.dumps({"conversations": [{"from": "human",
                                                                                    "value": "Bye"}]}) + "\n")
    out = run("render", "chatml", "--messages", sharegpt, "--row", 2).output  # a prompt: generation prompt added
    assert out == "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    result = CliRunner().invoke(template, ["render", "chatml", "--messages", str(sharegpt), "--row", "3"])
    assert result.exit_code == 1 and "fewer than 3 rows" in result.output
    result = CliRunner().invoke(template, ["render", "chatml", "--messages", "-", "--no_generation_prompt"],
                                input=json.dumps([{"role": "user", "content": "From stdin"}]))
    assert result.exit_code == 0 and result.output == "<|im_start|>user\nFrom stdin<|im_end|>\n"
    encoded = json.loads(run("encode", "smollm2", "--messages", data, "--tokenizer", smol_dir, "--json",
                             "--loss_mode", "all").output)
    assert all(label != -100 for label in encoded["labels"][1:])


def test_tokenizer_by_model_type(run, messages_file, smol_dir, plugins):
    """--tokenizer MODEL_TYPE resolves the model as sft does (here a plugin's model whose weights come from a
    source, like the embedded smollm2)."""
    import swiftlike

    class Source:
        @swiftlike.hookimpl
        def register_models(self, register):
            register("smol-from-source", template="smollm2", source=lambda spec, models_dir: str(smol_dir))

    plugins.add(Source(), "smol-source")
    by_type = run("encode", "smollm2", "--messages", messages_file(CONV), "--tokenizer", "smol-from-source", "--json")
    by_dir = run("encode", "smollm2", "--messages", messages_file(CONV), "--tokenizer", smol_dir, "--json")
    assert json.loads(by_type.output) == json.loads(by_dir.output)
    result = CliRunner().invoke(template, ["encode", "smollm2", "--messages", str(messages_file(CONV)),
                                           "--tokenizer", "no-such-model"])
    assert result.exit_code == 1 and "not a directory nor a known model type" in result.output
