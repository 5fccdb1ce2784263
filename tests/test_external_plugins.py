"""`--external_plugins FILE.py` (ms-swift's option): reward functions written for ms-swift (`orms[...] = ORM class`,
3.x and 4.x imports, async ones) and swiftlike hook files, loaded before a run; GRPO hands every reward function the
row's own columns and the conversation, as ms-swift and TRL do. Real CLI processes on a tiny model."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

MS_SWIFT_4 = '''
import json
from typing import List

from swift.rewards import ORM, orms


class CountdownORM(ORM):
    """As ms-swift's examples/train/grpo/plugin/plugin.py writes one: the row's target and nums as keyword lists."""

    def __call__(self, completions, target, nums, **kwargs) -> List[float]:
        with open(RECORD, "a") as f:
            f.write(json.dumps({"completions": completions, "target": target, "nums": nums,
                                "messages": kwargs["messages"], "solution": kwargs.get("solution")}) + "\\n")
        return [t / 100 for t in target]


orms["external_countdown"] = CountdownORM
'''

MS_SWIFT_3 = '''
from swift.plugin import AsyncORM, orms


class Half(AsyncORM):
    async def __call__(self, completions, **kwargs):
        return [0.5 for _ in completions]


orms["half"] = Half
'''

NATIVE = '''
import swiftlike


def uses_nums(completions, nums, **kwargs):
    return [float(len(n)) for n in nums]


@swiftlike.hookimpl
def register_rewards(register):
    register("uses_nums", func=uses_nums, summary="how many numbers the row has")
'''


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "swiftlike", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def plugin_files(tmp_path):
    record = tmp_path / "calls.jsonl"
    files = {"countdown.py": f"RECORD = {str(record)!r}\n" + MS_SWIFT_4, "half.py": MS_SWIFT_3,
             "native.py": NATIVE}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return [tmp_path / name for name in files], record


def test_rewards_list_shows_external_rewards(plugin_files):
    files, _ = plugin_files
    proc = _cli("rewards", "list", "--json", *[x for f in files for x in ("--external_plugins", f)])
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert {"external_countdown", "half", "uses_nums", "accuracy"} <= set(rows)
    assert rows["external_countdown"]["plugin"] == f"external:{files[0]}:orms"
    assert "CountdownORM from countdown.py" in rows["external_countdown"]["summary"]
    assert "external_countdown" not in _cli("rewards", "list").stdout  # only when asked for


def test_grpo_with_ms_swift_reward_plugins(tiny_model, plugin_files, tmp_path):
    files, record = plugin_files
    rows = [{"messages": [{"role": "user", "content": f"Using {a} and {b}, make {a + b}."}], "target": a + b,
             "nums": [a, b], "solution": str(a + b)} for a in range(1, 5) for b in range(1, 3)]
    data = tmp_path / "countdown.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    proc = _cli("rlhf", "--rlhf_type", "grpo", "--model", tiny_model, "--template", "smollm2", "--dataset", data,
                "--external_plugins", *files, "--reward_funcs", "external_countdown", "half", "uses_nums",
                "--num_generations", 2, "--max_completion_length", 4, "--max_steps", 2,
                "--per_device_train_batch_size", 2, "--logging_steps", 1, "--lora_rank", 4, "--lora_alpha", 8,
                "--report_to", "none", "--output_dir", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls
    for call in calls:
        assert len(call["completions"]) == len(call["target"]) == len(call["nums"]) == len(call["messages"])
        for completion, target, nums, messages, solution in zip(call["completions"], call["target"], call["nums"],
                                                                call["messages"], call["solution"]):
            # each row's own columns, in the order of the completions: the prompt names them
            assert messages[0] == {"role": "user", "content": f"Using {nums[0]} and {nums[1]}, make {target}."}
            assert messages[-1] == {"role": "assistant", "content": completion} and solution == str(target)
    logs = [json.loads(line) for line in next(out.rglob("logging.jsonl")).read_text().splitlines()]
    step = next(r for r in logs if "rewards/half/mean" in r)
    assert step["rewards/half/mean"] == pytest.approx(0.5)
    assert step["rewards/uses_nums/mean"] == pytest.approx(2.0)
    # what the ORM returned for the first batch (target / 100), as TRL logs it
    assert step["rewards/external_countdown/mean"] == pytest.approx(sum(calls[0]["target"]) / len(calls[0]["target"])
                                                                    / 100, rel=1e-5)


@pytest.mark.parametrize("text, message", [
    (None, "--external_plugins {file}: no such file"),
    ("from swift.llm import register_dataset\n", "imports swift.llm; swiftlike stands in for ms-swift's reward "
                                                 "modules only"),
    ("x = 1\ndef broken(:\n", "--external_plugins {file}:2: invalid syntax"),
    ("x = 1\nraise ValueError('no key')\n", "--external_plugins {file}:2: ValueError: no key"),
    ("x = 1\n", "registers nothing"),
    ("from swift.rewards import orms\norms['bad'] = 3\n", "orms['bad'] is not an ORM class or a function"),
])
def test_bad_plugin_files_are_one_line_before_anything_loads(tiny_model, tmp_path, text, message):
    file = tmp_path / "plugin.py"
    if text is not None:
        file.write_text(text)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}], "solution": "1"}))
    proc = _cli("rlhf", "--rlhf_type", "grpo", "--model", tiny_model, "--template", "smollm2", "--dataset", data,
                "--external_plugins", file, "--reward_funcs", "accuracy", "--output_dir", tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    assert message.format(file=file) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists()


def test_sft_loads_a_hook_file(tiny_model, tmp_path):
    """A file of swiftlike hooks given to sft registers what it names (here a dataset) before the data is looked up,
    as an installed plugin would."""
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"Say {i}."},
                                                        {"role": "assistant", "content": str(i)}]})
                              for i in range(4)))
    hooks = tmp_path / "my_hooks.py"
    hooks.write_text(f"""
import swiftlike


@swiftlike.hookimpl
def register_datasets(register):
    register("say-numbers", path={str(data)!r}, summary="four rows")
""")
    out = tmp_path / "out"
    args = ["sft", "--model", tiny_model, "--template", "smollm2", "--dataset", "say-numbers", "--max_steps", 1,
            "--per_device_train_batch_size", 2, "--report_to", "none", "--output_dir", out,
            "--add_output_dir_suffix", "false"]
    proc = _cli(*args)
    assert proc.returncode == 1 and "say-numbers" in proc.stderr  # unknown without the file
    proc = _cli(*args, "--external_plugins", hooks)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "args.json").read_text())["external_plugins"] == [str(hooks)]
    assert (out / "checkpoint-1" / "adapter_model.safetensors").exists()
