"""The checkpoint format's one home (swiftlike.checkpoint) and the training recipe's phases, used for real."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swiftlike.registry import SwiftlikeError

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "identity.jsonl"
MESSAGES = [{"role": "user", "content": "Who are you?"}]
# a template text no registered template renders: proof of where a checkpoint's template came from
MARKED = ("{% for m in messages %}[{{ m.role }}]>> {{ m.content }}{{ eos_token }}\n{% endfor %}"
          "{% if add_generation_prompt %}[assistant]>> {% endif %}")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "swiftlike", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _args(tiny_model, out, **kw):
    from swiftlike.train.arguments import SftArguments

    base = dict(model=str(tiny_model), template="smollm2", dataset=str(DATA), output_dir=str(out), max_steps=2,
                per_device_train_batch_size=2, learning_rate=5e-3, logging_steps=1, max_length=128,
                report_to=["none"], lora_rank=4, lora_alpha=8, warmup_ratio=0.0)
    base.update(kw)
    return SftArguments(**base)


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    from swiftlike.train.sft import sft

    return sft(_args(tiny_model, tmp_path_factory.mktemp("ckpt-runs")))


def _with_manifest(src: Path, dest: Path, **changes) -> Path:
    import shutil

    shutil.copytree(src, dest)
    manifest = json.loads((dest / "swiftlike.json").read_text())
    manifest.update(changes)
    (dest / "swiftlike.json").write_text(json.dumps(manifest))
    return dest


def test_infer_and_serve_pick_the_same_template(run, tiny_model, tmp_path):
    """The manifest's template text is what the adapter trained with: infer and serve both render it, even when the
    registered template of that name says something else."""
    from swiftlike.checkpoint import checkpoint_template
    from swiftlike.infer import load_checkpoint
    from swiftlike.serve import ServeArguments
    from swiftlike.serve.runtime import Runtime

    ckpt = _with_manifest(run["last_checkpoint"], tmp_path / "marked", template_text=MARKED)
    spec, _ = checkpoint_template(ckpt)
    assert spec.name == "smollm2" and spec.chat_template == MARKED
    assert spec.stop_words == ["<|im_end|>"]  # the registered template's stop words come along

    loaded = load_checkpoint(ckpt)
    by_infer = loaded.template.render(MESSAGES, add_generation_prompt=True)
    assert by_infer.endswith("[user]>> Who are you?<|im_end|>\n[assistant]>> ")
    runtime = Runtime(ServeArguments(model=str(tiny_model), template="smollm2"))
    assert runtime.adapter_template(ckpt).render(MESSAGES, add_generation_prompt=True) == by_infer
    # the user's --template still wins
    assert load_checkpoint(ckpt, template="chatml").template.name == "chatml"


def test_template_choice_without_text(run, tmp_path):
    from swiftlike.checkpoint import checkpoint_template

    plain = _with_manifest(run["last_checkpoint"], tmp_path / "plain", template_text=None)
    assert checkpoint_template(plain)[0].name == "smollm2"
    gone = _with_manifest(run["last_checkpoint"], tmp_path / "gone", template="no-such-template", template_text=None)
    (gone / "args.json").write_text(json.dumps({"template": "no-such-template"}))
    with pytest.raises(SwiftlikeError, match="not installed here and the checkpoint has no template text"):
        checkpoint_template(gone)
    kept = _with_manifest(run["last_checkpoint"], tmp_path / "kept", template="no-such-template",
                          template_text=MARKED)
    assert checkpoint_template(kept)[0].chat_template == MARKED
    with pytest.raises(SwiftlikeError, match="cannot tell which chat template"):
        checkpoint_template(None, default="auto")


def test_checkpoint_card_names_the_base_hub_id(tiny_model, tmp_path, plugins):
    """The checkpoint's README.md is the model card `adapter push` writes (not PEFT's stub with a local path)."""
    from swiftlike.checkpoint import read_manifest
    from swiftlike.train.sft import sft

    class Models:
        import swiftlike

        @swiftlike.hookimpl
        def register_models(register):
            register("tiny-hub-llama", hf="acme/Tiny-Llama", template="smollm2")

    plugins.add(Models, "tiny-models")
    result = sft(_args(tiny_model, tmp_path, model=None, model_type="tiny-hub-llama",
                       model_cache_dir=str(tiny_model)))
    ckpt = result["last_checkpoint"]
    card = (ckpt / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft\nbase_model: \"acme/Tiny-Llama\"\n")
    assert "base_model:adapter:acme/Tiny-Llama" in card and str(tiny_model) not in card
    assert "swiftlike infer --ckpt_dir path/to/this/checkpoint" in card
    manifest = read_manifest(ckpt)
    assert manifest["stage"] == "sft" and manifest["base_model"] == "acme/Tiny-Llama"
    assert "README.md" in manifest["files"]


def test_infer_dataset_writes_beside_not_into_the_checkpoint(run, tmp_path):
    """`infer --val_dataset` takes prompt rows (with or without a reference answer), writes
    infer_result/<time>.jsonl in the working directory, and leaves the checkpoint publishable."""
    ckpt = run["last_checkpoint"]
    before = sorted(p.name for p in ckpt.iterdir())
    files = []
    for i, row in enumerate([{"messages": [{"role": "user", "content": "Who are you?"}]},
                             {"query": "Who made you?", "response": "Orbit Labs."},
                             {"conversations": [{"from": "human", "value": "Hi"}]}]):
        files.append(tmp_path / f"prompts{i}.jsonl")
        files[-1].write_text(json.dumps(row) + "\n")
    proc = _cli("infer", "--ckpt_dir", ckpt, "--val_dataset", *files, "--max_new_tokens", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = list((tmp_path / "infer_result").glob("*.jsonl"))
    assert len(results) == 1 and f"wrote 3 responses to infer_result/{results[0].name}" in proc.stdout
    rows = [json.loads(line) for line in results[0].read_text().splitlines()]
    assert [r["label"] for r in rows] == [None, "Orbit Labs.", None]
    assert rows[1]["messages"] == [{"role": "user", "content": "Who made you?"}]
    assert sorted(p.name for p in ckpt.iterdir()) == before
    proc = _cli("adapter", "push", ckpt, "local:acme/after-infer", "--hub_root", tmp_path / "hub")
    assert proc.returncode == 0, proc.stderr


def test_infer_dataset_is_checked_before_the_model_loads(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"oops": 1}\n')
    # the checkpoint does not even exist: the data error comes first
    proc = _cli("infer", "--ckpt_dir", tmp_path / "missing", "--val_dataset", bad)
    assert proc.returncode == 1 and f"{bad}:2" in proc.stderr, proc.stderr


def test_failed_run_leaves_no_run_directory(tiny_model, tmp_path):
    from swiftlike.train.sft import sft

    with pytest.raises(SwiftlikeError, match="target_modules"):  # fails after the run dir exists (model phase)
        sft(_args(tiny_model, tmp_path / "a", target_modules=["no_such_proj"]))
    assert list((tmp_path / "a").rglob("v*-*")) == []
    with pytest.raises(SwiftlikeError):  # bad data: fails before any directory is made
        sft(_args(tiny_model, tmp_path / "b", dataset=str(tmp_path / "missing.jsonl")))
    assert not (tmp_path / "b").exists()


def test_a_stage_overrides_only_what_differs(tiny_model, tmp_path):
    """The next stages (pt, rlhf) subclass the recipe: here a toy pretraining stage replaces just the encoding
    (every token supervised) and keeps every other phase (model, tuner, trainer, checkpoints, manifest)."""
    from swiftlike.train.sft import SftRecipe

    class ToyPretraining(SftRecipe):
        stage = "toy-pt"

        def encode(self, rows, *, train):
            out = []
            for row in rows:
                text = " ".join(m["content"] for m in row["messages"])
                ids = self.tokenizer(text, add_special_tokens=False).input_ids + [self.tokenizer.eos_token_id]
                out.append({"input_ids": ids, "labels": list(ids), "length": len(ids)})
            return out

    recipe = ToyPretraining(_args(tiny_model, tmp_path))
    result = recipe.run()
    assert all(s["labels"] == s["input_ids"] for s in recipe.train_data)
    manifest = json.loads((result["last_checkpoint"] / "swiftlike.json").read_text())
    assert manifest["stage"] == "toy-pt" and manifest["tuner"] == "lora"
    assert json.loads((result["run_dir"] / "args.json").read_text())["stage"] == "toy-pt"
    assert result["metrics"]["train_loss"] > 0


def test_python_api(tiny_model, tmp_path):
    import swiftlike
    from swiftlike.train.arguments import SftArguments

    assert SftArguments(dataset="a.jsonl", val_dataset="b.jsonl").dataset == ["a.jsonl"]
    names = dir(swiftlike)
    for name in ("sft", "infer", "SftArguments", "load_checkpoint", "get_model_tokenizer", "adapters", "merge_lora"):
        assert name in names, name
    result = swiftlike.sft(model=str(tiny_model), template="smollm2", dataset=str(DATA), output_dir=str(tmp_path),
                           max_steps=1, per_device_train_batch_size=2, report_to=["none"], max_length=128)
    loaded = swiftlike.infer.load_checkpoint(result["last_checkpoint"])
    assert loaded.template.name == "smollm2" and loaded.model_type == "tiny-llama"
