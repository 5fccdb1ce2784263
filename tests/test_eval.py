"""`swiftlike eval`: text scores, one checkpoint end to end through the CLI (files, table, metrics recorded in the
manifest and card, carried by `adapter push` and printed by `adapter show`), several adapters in one batched pass
equal to each alone, and bad input refused before the model loads."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swiftlike.registry import SwiftlikeError

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "identity.jsonl"
ROWS = [
    {"messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Nova."}]},
    {"messages": [{"role": "user", "content": "你好吗？"}, {"role": "assistant", "content": "我很好，谢谢。"}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who made you?"},
                  {"role": "assistant", "content": "Orbit Labs made me."}]},
]


def _cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "swiftlike", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval-data") / "eval.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ckpt(adapters, tmp_path_factory):
    """A LoRA checkpoint with what `swiftlike sft` writes beside the weights: args.json, the model card and the
    manifest with its file table."""
    import shutil

    from swiftlike.checkpoint import finalize

    path = tmp_path_factory.mktemp("eval-ckpt") / "checkpoint-1"
    shutil.copytree(adapters[0], path)
    info = json.loads((path / "swiftlike.json").read_text())
    info.update(kind="adapter", step=1, datasets=[str(DATA)])
    finalize(path, {k: v for k, v in info.items() if k != "format"})
    return path


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory):
    from test_serve_engine import make_adapter

    root = tmp_path_factory.mktemp("eval-adapters")
    return [make_adapter(tiny_model, root / "a0", seed=0),
            make_adapter(tiny_model, root / "a1", seed=1, r=8, alpha=16, targets=("q_proj", "k_proj", "up_proj")),
            make_adapter(tiny_model, root / "a2", seed=2, template="chatml", system="You are Nova.")]


def test_scores_follow_llamafactory():
    from swiftlike.eval.scores import average, score, words

    assert words("我很好，谢谢。") == ["我", "很", "好", "，", "谢谢", "。"]
    assert words("the cat  sat") == ["the", "cat", "sat"]
    same = score("the cat sat on the mat", "the cat sat on the mat")
    assert same == {"bleu-4": pytest.approx(100.0), "rouge-1": pytest.approx(100.0), "rouge-2": pytest.approx(100.0),
                    "rouge-l": pytest.approx(100.0), "exact_match": 100.0}
    part = score("the cat sat", "the cat sat on the mat")
    # rouge-chinese's unigram F1 over distinct words: precision 3/3, recall 3/5 -> 0.75
    assert part["rouge-1"] == pytest.approx(75.0, abs=1e-3) and 0 < part["bleu-4"] < 100
    assert part["exact_match"] == 0.0
    assert score("", "something")["rouge-l"] == 0.0  # an empty answer scores 0, as in LLaMA-Factory
    zh = score("我很好", "我很好，谢谢。")
    assert 0 < zh["rouge-1"] < 100 and zh["exact_match"] == 0.0
    assert average([same, part])["rouge-1"] == pytest.approx(87.5, abs=1e-3)


def test_eval_records_metrics_that_push_carries_and_show_prints(ckpt, eval_file, tmp_path):
    """The CLI on one checkpoint: a table with the base beside it, metrics.json and predictions.jsonl inside the
    checkpoint, the metrics in its manifest and card; then push, install, show and verify on the local hub."""
    from swiftlike.checksums import sha256_file

    proc = _cli("eval", "--ckpt_dir", ckpt, "--val_dataset", eval_file, "--max_new_tokens", 4)
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0].split()
    assert header == ["metric", "base", ckpt.name]
    for key in ("bleu-4", "rouge-1", "rouge-2", "rouge-l", "exact_match", "loss", "perplexity"):
        assert any(line.split()[0] == key for line in proc.stdout.splitlines()), key
    [out] = list((ckpt / "eval_result").iterdir())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["datasets"] == [{"name": str(eval_file), "sha256": sha256_file(eval_file), "rows": 3}]
    model = metrics["models"][ckpt.name]
    assert model["loss"] > 0 and model["perplexity"] == pytest.approx(2.718281828 ** model["loss"], rel=1e-4)
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["reference"] for p in preds] == ["I am Nova.", "我很好，谢谢。", "Orbit Labs made me."]
    assert preds[1]["prompt"] == [{"role": "user", "content": "你好吗？"}]
    assert set(preds[0]["predictions"]) == {"base", ckpt.name}

    manifest = json.loads((ckpt / "swiftlike.json").read_text())
    [entry] = manifest["evaluations"]
    assert entry["datasets"][0]["sha256"] == sha256_file(eval_file) and entry["rows"] == 3
    assert entry["metrics"]["rouge-l"] == model["rouge-l"] and entry["baseline"]["loss"] == metrics["models"][
        "base"]["loss"]
    assert manifest["files"]["README.md"]["sha256"] == sha256_file(ckpt / "README.md")
    assert "## Evaluation" in (ckpt / "README.md").read_text()
    assert not any(rel.startswith("eval_result/") for rel in manifest["files"])

    env = {"SWIFTLIKE_LOCAL_HUB": str(tmp_path / "hub"), "SWIFTLIKE_HOME": str(tmp_path / "home")}
    proc = _cli("adapter", "push", ckpt, "local:acme/nova-eval", env=env)
    assert proc.returncode == 0, proc.stderr
    published = tmp_path / "hub" / "acme" / "nova-eval"
    assert not list(published.rglob("eval_result"))
    assert "## Evaluation" in next(published.rglob("README.md")).read_text()
    assert _cli("adapter", "install", "local:acme/nova-eval", "--name", "nova-eval", env=env).returncode == 0
    show = _cli("adapter", "show", "nova-eval", env=env)
    assert show.returncode == 0, show.stderr
    line = next(line for line in show.stdout.splitlines() if line.startswith("evaluation"))
    assert f"{eval_file} (3 rows, sha256 {sha256_file(eval_file)[:12]})" in line
    assert f"rouge-l {model['rouge-l']:.4g}" in line and "(base " in line
    verify = _cli("adapter", "verify", "nova-eval", env=env)
    assert verify.returncode == 0 and verify.stdout.startswith("ok:"), verify.stderr


def test_several_adapters_in_one_pass_equal_each_alone(adapters, tiny_model, eval_file, tmp_path):
    """Base and three adapters (one with its own template and system prompt) decode in mixed batches; every answer
    and loss equals that adapter evaluated alone, and the first adapter's answers equal `swiftlike infer`'s."""
    from test_serve_engine import reference

    from swiftlike.eval import EvalArguments, evaluate

    common = dict(val_dataset=[str(eval_file)], max_new_tokens=6, output_dir=str(tmp_path))
    together = evaluate(EvalArguments(adapters=[str(a) for a in adapters], **common), progress=False)
    names = ["base", "a0", "a1", "a2"]
    assert list(together.metrics["models"]) == names
    assert together.table.splitlines()[0].split() == ["metric", *names]
    preds = [json.loads(line) for line in (together.directory / "predictions.jsonl").read_text().splitlines()]
    assert len({p["predictions"]["a0"] for p in preds} | {p["predictions"]["a2"] for p in preds}) > 1
    for adapter in adapters:
        alone = evaluate(EvalArguments(adapters=[str(adapter)], eval_base=False, **common), progress=False)
        alone_preds = [json.loads(line) for line in (alone.directory / "predictions.jsonl").read_text().splitlines()]
        assert [p["predictions"][adapter.name] for p in alone_preds] == \
            [p["predictions"][adapter.name] for p in preds]
        assert alone.metrics["models"][adapter.name]["loss"] == pytest.approx(
            together.metrics["models"][adapter.name]["loss"], rel=1e-5)
    assert [p["predictions"]["a0"] for p in preds[:1]] == \
        [reference(adapters[0], ROWS[0]["messages"][:-1], max_new_tokens=6)]
    # the base's loss is transformers' own loss on the reply tokens (token-weighted over the rows)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from swiftlike.templates import get_template

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    template = get_template("smollm2", AutoTokenizer.from_pretrained(tiny_model), loss_mode="last_round")  # a0's
    total = count = 0
    for row in ROWS:
        enc = template.encode(row["messages"])
        n = sum(label != -100 for label in enc["labels"][1:])
        with torch.no_grad():
            total += model(input_ids=torch.tensor([enc["input_ids"]]), labels=torch.tensor([enc["labels"]])).loss * n
        count += n
    assert together.metrics["models"]["base"]["loss"] == pytest.approx(float(total / count), rel=1e-4)


def test_bad_input_is_one_line_before_the_model_loads(adapters, tiny_model, eval_file, tmp_path):
    from swiftlike.eval import EvalArguments
    from swiftlike.eval.plan import make_plan

    # through the CLI: one line, nothing written; the base cannot load, so reaching the model would say otherwise
    proc = _cli("eval", "--adapters", adapters[0], "--val_dataset", tmp_path / "missing.jsonl", "--model",
                tmp_path / "no-model", "--output_dir", tmp_path / "out")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "missing.jsonl does not exist" in proc.stderr and not (tmp_path / "out").exists()
    # make_plan is everything eval checks before it loads a model
    half = tmp_path / "half.jsonl"
    half.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"messages": ROWS[1]["messages"][:1]}) + "\n")
    with pytest.raises(SwiftlikeError, match=r"half.jsonl:2: the row has no reference answer"):
        make_plan(EvalArguments(adapters=[str(adapters[0])], val_dataset=[str(half)]))
    with pytest.raises(SwiftlikeError, match=r"nope-adapter: no such directory, installed adapter"):
        make_plan(EvalArguments(adapters=["nope-adapter"], val_dataset=[str(eval_file)]))
    from test_serve_engine import make_adapter

    dora = make_adapter(tiny_model, tmp_path / "dora", seed=3, dora=True)
    with pytest.raises(SwiftlikeError, match="DoRA adapter cannot be batched"):
        make_plan(EvalArguments(adapters=[str(dora)], val_dataset=[str(eval_file)]))


def test_options_are_checked():
    from swiftlike.eval import EvalArguments

    with pytest.raises(SwiftlikeError, match="--val_dataset"):
        EvalArguments(model_type="smollm2-135m-instruct").check()
    with pytest.raises(SwiftlikeError, match="--tasks"):
        EvalArguments(model_type="smollm2-135m-instruct", eval_backend="lm_eval").check()
    with pytest.raises(SwiftlikeError, match="native or lm_eval"):
        EvalArguments(model_type="x", val_dataset=["a"], eval_backend="evalscope").check()
    assert EvalArguments(tasks=["mmlu,ceval-valid", "cmmlu"]).task_list() == ["mmlu", "ceval-valid", "cmmlu"]


@pytest.mark.slow  # lm-eval's import and its model class: tens of seconds on a small CPU
def test_lm_eval_harness_on_a_local_task(adapters, eval_file, tmp_path):
    """lm-evaluation-harness runs a task defined here (a YAML over a local jsonl, via --include_path) on the base
    and on the base with the adapter; its scores land in metrics.json beside each other."""
    pytest.importorskip("lm_eval")
    from swiftlike.eval import EvalArguments, evaluate

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "What colour is the sky?", "choices": [" blue", " green"], "answer": 0},
        {"question": "How many legs has a cat?", "choices": [" three", " four"], "answer": 1},
        {"question": "Is ice cold?", "choices": [" yes", " no"], "answer": 0}]))
    (tasks / "tiny_qa.yaml").write_text(f"""task: swiftlike_tiny_qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {tasks / "qa.jsonl"}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
""")
    with pytest.raises(SwiftlikeError, match="--tasks swiftlike_tiny_q: not an lm-eval task"):
        evaluate(EvalArguments(adapters=[str(adapters[0])], eval_backend="lm_eval", tasks=["swiftlike_tiny_q"],
                               include_path=str(tasks), output_dir=str(tmp_path / "out")), progress=False)
    assert not (tmp_path / "out").exists()
    outcome = evaluate(EvalArguments(adapters=[str(adapters[0])], eval_backend="lm_eval", tasks=["swiftlike_tiny_qa"],
                                     include_path=str(tasks), output_dir=str(tmp_path / "out"), record=False),
                       progress=False)
    metrics = json.loads((outcome.directory / "metrics.json").read_text())
    assert metrics["backend"] == "lm_eval" and metrics["tasks"] == ["swiftlike_tiny_qa"]
    assert set(metrics["models"]) == {"base", "a0"}
    for scores in metrics["models"].values():  # accuracy over 3 questions: k/3
        assert set(scores) == {"swiftlike_tiny_qa/acc"}
        k = scores["swiftlike_tiny_qa/acc"] * 3
        assert k == pytest.approx(round(k), abs=1e-4)
    assert not (outcome.directory / "predictions.jsonl").exists()
