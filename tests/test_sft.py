"""`swiftlike sft`, `infer`, `merge-lora`, `export` on a tiny random Llama with the real SmolLM2 tokenizer."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from swiftlike.registry import SwiftlikeError
from swiftlike.train.arguments import SftArguments
from swiftlike.train.sft import sft

DATA = Path(__file__).parent / "data" / "identity.jsonl"


def _args(tiny_model, out, **kw):
    base = dict(model=str(tiny_model), template="smollm2", dataset=[str(DATA)], output_dir=str(out),
                max_steps=4, per_device_train_batch_size=2, learning_rate=5e-3, save_steps=2, logging_steps=1,
                max_length=128, report_to=["none"], lora_rank=4, lora_alpha=8, warmup_ratio=0.0)
    base.update(kw)
    return SftArguments(**base)


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "swiftlike", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


@pytest.fixture(scope="module")
def lora_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return sft(_args(tiny_model, out, report_to=["tensorboard"], split_dataset_ratio=0.25, eval_steps=2))


def test_run_layout(lora_run):
    run = lora_run["run_dir"]
    assert re.fullmatch(r"v0-\d{8}-\d{6}", run.name) and run.parent.name == "tiny-llama"
    args = json.loads((run / "args.json").read_text())
    assert args["template"] == "smollm2" and args["model_dir"].endswith("tiny-llama")
    logs = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "loss" in r] == [1, 2, 3, 4]
    assert any("eval_loss" in r for r in logs)
    assert (run / "loss.png").stat().st_size > 1000
    assert list((run / "runs").rglob("events.out.tfevents.*")), "TensorBoard events missing"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (run / ".staging").exists()
    # the run says where it trained and which CPU-only fast paths it took (a GPU run must list none)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["device"] == "cpu" and "fused_lora" in metrics["cpu_fast_paths"], metrics


def test_checkpoint_manifest(lora_run):
    ckpt = lora_run["last_checkpoint"]
    manifest = json.loads((ckpt / "swiftlike.json").read_text())
    assert manifest["base_model_type"] == "tiny-llama" and manifest["template"] == "smollm2"
    assert manifest["tuner"] == "lora" and manifest["tuner_config"]["r"] == 4
    assert manifest["datasets"] == [str(DATA)] and manifest["step"] == 4
    assert "loss" in manifest["metrics"]
    from swiftlike.checksums import sha256_file

    files = manifest["files"]
    assert {"adapter_model.safetensors", "adapter_config.json", "chat_template.jinja"} <= set(files)
    for rel, entry in files.items():
        assert sha256_file(ckpt / rel) == entry["sha256"], rel
    assert "{% generation %}" not in (ckpt / "chat_template.jinja").read_text()


def test_adapter_changed_the_model_and_merge_is_equivalent(lora_run, tiny_model, tmp_path):
    from swiftlike.infer import load_checkpoint
    from swiftlike.merge import merge_lora

    ckpt = lora_run["last_checkpoint"]
    weights = load_file(ckpt / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())

    ids = torch.tensor([[1, 520, 3035, 346, 47, 2]])
    base = load_checkpoint(None, model=str(tiny_model), template="smollm2")
    adapted = load_checkpoint(ckpt)
    with torch.no_grad():
        base_logits = base.model(ids).logits
        adapted_logits = adapted.model(ids).logits
    assert not torch.allclose(base_logits, adapted_logits, atol=1e-4)

    merged_dir = merge_lora(ckpt, tmp_path / "merged")
    assert (merged_dir / "chat_template.jinja").exists() and (merged_dir / "model.safetensors").exists()
    merged = load_checkpoint(merged_dir)
    with torch.no_grad():
        merged_logits = merged.model(ids).logits
    torch.testing.assert_close(merged_logits, adapted_logits, atol=1e-5, rtol=1e-4)
    assert merged.template.name == "smollm2"


def test_infer_cli_query_and_dataset(lora_run, tmp_path):
    ckpt = lora_run["last_checkpoint"]
    proc = _cli("infer", "--ckpt_dir", str(ckpt), "--query", "Who are you?", "--max_new_tokens", "5")
    assert proc.returncode == 0, proc.stderr
    from swiftlike.infer import generate, load_checkpoint

    loaded = load_checkpoint(ckpt)
    expected = generate(loaded.model, loaded.template, [{"role": "user", "content": "Who are you?"}],
                        max_new_tokens=5)
    assert proc.stdout == expected + "\n"
    out = tmp_path / "answers.jsonl"
    proc = _cli("infer", "--ckpt_dir", str(ckpt), "--val_dataset", str(DATA), "--result_path", str(out),
                "--max_new_tokens", "3")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and rows[0]["label"] == "I am Nova, made by Orbit Labs."


def test_infer_chat_keeps_history(lora_run):
    proc = _cli("infer", "--ckpt_dir", str(lora_run["last_checkpoint"]), "--max_new_tokens", "3", "--no-stream",
                input="Hi\nWho are you?\nclear\nexit\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(">>> ") == 2


def test_export_to_directory(lora_run, tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt"  # a copy: an eval result is written into it
    shutil.copytree(lora_run["last_checkpoint"], ckpt)
    (ckpt / "eval_result" / "20261202-000000").mkdir(parents=True)
    (ckpt / "eval_result" / "20261202-000000" / "metrics.json").write_text("{}")
    proc = _cli("export", "--ckpt_dir", str(ckpt), "--to", str(tmp_path / "exported"))
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in (tmp_path / "exported").iterdir()}
    assert {"adapter_model.safetensors", "swiftlike.json"} <= names
    assert "optimizer.pt" not in names and "training_args.bin" not in names
    assert "eval_result" not in names  # like `adapter push`: the results are in the manifest, not files


@pytest.mark.parametrize("train_type, extra", [
    ("dora", {}),
    ("qlora", {"quant_bits": 4}),
    ("full", {}),
    ("freeze", {"trainable_layers": 1}),
    ("lora", {"target_modules": ["q_proj", "v_proj"], "use_rslora": True, "padding_free": False}),
    ("lora", {"target_modules": [r".*\.mlp\.(up|down)_proj"], "packing": True}),
])
def test_tuners(tiny_model, tmp_path, train_type, extra):
    result = sft(_args(tiny_model, tmp_path, train_type=train_type, max_steps=2, save_steps=None, **extra))
    ckpt = result["last_checkpoint"]
    assert ckpt.name == "checkpoint-2"
    assert result["metrics"]["train_loss"] == pytest.approx(result["metrics"]["train_loss"])  # finite, not NaN
    manifest = json.loads((ckpt / "swiftlike.json").read_text())
    if train_type in ("full", "freeze"):
        assert (ckpt / "model.safetensors").exists()
    else:
        weights = load_file(ckpt / "adapter_model.safetensors")
        names = " ".join(weights)
        if train_type == "dora":
            assert "lora_magnitude_vector" in names
        if "target_modules" in extra and "q_proj" in extra["target_modules"]:
            assert "q_proj" in names and "k_proj" not in names and "mlp" not in names
        if "packing" in extra:
            assert "up_proj" in names and "self_attn" not in names
        assert manifest["tuner_config"]["use_dora"] == (train_type == "dora")


def test_sft_in_process_leaves_the_garbage_collector_as_it_was(tiny_model, tmp_path):
    """sft pauses and freezes the collector around start-up and training; a notebook or service calling it must get
    it back on and unfrozen, or every dropped model would leak (fused layers hold reference cycles)."""
    import gc

    assert gc.isenabled()
    sft(_args(tiny_model, tmp_path, max_steps=1, save_steps=None))
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with pytest.raises(Exception):
        sft(_args(tiny_model, tmp_path / "bad", dataset=[str(tmp_path / "missing.jsonl")]))
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_freeze_trains_only_last_layers(tiny_model, tmp_path):
    from swiftlike.models.load import load_model_tokenizer
    from swiftlike.train.tuners import prepare_freeze

    model, _ = load_model_tokenizer(model=str(tiny_model))
    prepare_freeze(model, SftArguments(trainable_layers=1))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.layers.1.") or n == "model.norm.weight" for n in trainable)


def test_qlora_base_is_4bit(tiny_model):
    import bitsandbytes as bnb

    from swiftlike.models.load import load_model_tokenizer

    model, _ = load_model_tokenizer(model=str(tiny_model), quant_bits=4)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def test_merge_refuses_quantized_base(tiny_model, tmp_path):
    from swiftlike.merge import merge_lora

    result = sft(_args(tiny_model, tmp_path, quant_bits=4, max_steps=1, save_steps=None))
    with pytest.raises(SwiftlikeError, match="--dequantize"):
        merge_lora(result["last_checkpoint"])
    out = merge_lora(result["last_checkpoint"], dequantize=True)
    assert (out / "model.safetensors").exists()
    # export to GGUF: the same refusal before anything loads, then the merge onto the full-precision base
    from swiftlike.export import to_gguf

    gguf = tmp_path / "q.gguf"
    with pytest.raises(SwiftlikeError, match="4-bit base.*--dequantize"):
        to_gguf(result["last_checkpoint"], gguf)
    assert not gguf.exists()
    assert to_gguf(result["last_checkpoint"], gguf, dequantize=True).read_bytes()[:4] == b"GGUF"
    from swiftlike.export import to_quantized

    with pytest.raises(SwiftlikeError, match="4-bit base.*--dequantize"):
        to_quantized(result["last_checkpoint"], tmp_path / "bnb", method="bnb", bits=4, dataset=[str(DATA)])
    assert not (tmp_path / "bnb").exists()


def test_adapter_on_other_base_is_refused(lora_run, tmp_path, tokenizer_dir):
    from tiny import make_tiny_model

    from swiftlike.infer import load_checkpoint

    other = make_tiny_model(tmp_path / "tiny-llama", tokenizer_dir, seed=123)
    with pytest.raises(SwiftlikeError, match="other tiny-llama weights"):
        load_checkpoint(lora_run["last_checkpoint"], model=str(other))
    assert load_checkpoint(lora_run["last_checkpoint"], model=str(other), force=True).model is not None


def test_seed_command_line(tiny_model, tmp_path):
    """ms-swift v2's documented self-cognition command, with `swiftlike` for `swift`."""
    data = tmp_path / "train.jsonl"
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    data.write_text("\n".join(json.dumps({"query": r["messages"][-2]["content"],
                                          "response": r["messages"][-1]["content"]}) for r in rows))
    out, logs = tmp_path / "output", tmp_path / "logs"
    proc = _cli("sft", "--model_type", "qwen1half-1_8b-chat", "--model_cache_dir", str(tiny_model),
                "--template_type", "qwen", "--system", "You are a helpful assistant.",
                "--custom_train_dataset_path", str(data), "--train_dataset_sample", "8", "--num_train_epochs", "3",
                "--save_steps", "50", "--lora_target_modules", "ALL", "--learning_rate", "1e-5",
                "--gradient_accumulation_steps", "1", "--eval_batch_size", "1", "--add_output_dir_suffix", "False",
                "--output_dir", str(out), "--logging_dir", str(logs), "--report_to", "tensorboard")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = out / "checkpoint-6"  # 8 rows / batch 4 = 2 steps per epoch, 3 epochs; the last step is saved
    assert (ckpt / "adapter_model.safetensors").exists()
    cfg = json.loads((ckpt / "adapter_config.json").read_text())
    assert {m.split(".")[-1] for m in cfg["target_modules"]} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                          "down_proj"}
    assert list(logs.rglob("events.out.tfevents.*"))
    args = json.loads((out / "args.json").read_text())
    assert args["model_type"] == "qwen1half-1_8b-chat" and args["template"] == "qwen"
    assert "merge-lora --ckpt_dir" in proc.stdout
    proc = _cli("merge-lora", "--ckpt_dir", str(ckpt))
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _cli("infer", "--ckpt_dir", f"{ckpt}-merged", "--query", "Who are you?", "--max_new_tokens", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_seed_alone_sets_the_new_adapter(tiny_model, tmp_path, plugins, swiftlike_home):
    """A first run that builds its model (the embedded SmolLM2 is converted from its GGUF through a randomly
    initialised model) draws random numbers after the run is seeded; its new LoRA factors must still be those of
    every later run with the same seed (they were not: the quick-start's first run trained differently)."""
    import shutil

    import torch

    import swiftlike

    built = []

    def build(spec, models_dir):
        target = models_dir / spec.name
        if not target.exists():
            torch.rand(4096)  # what building a model from a config does: random initial weights
            shutil.copytree(tiny_model, target)
            built.append(target)
        return target

    class Source:
        @swiftlike.hookimpl
        def register_models(self, register):
            register("built-tiny", template="smollm2", source=build)

    plugins.add(Source(), "built-tiny-source")
    adapters = []
    for run in ("first", "second"):
        result = swiftlike.sft(model_type="built-tiny", dataset=str(DATA), output_dir=str(tmp_path / run),
                               max_steps=1, learning_rate=0.0, per_device_train_batch_size=2, report_to=["none"],
                               lora_rank=4, lora_alpha=8, seed=7)
        adapters.append(_final_adapter(result["last_checkpoint"]))
    assert len(built) == 1  # the first run built it, the second found it
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])


def _final_adapter(path):
    return load_file(Path(path) / "adapter_model.safetensors")


def test_resume_after_kill_matches_uninterrupted(tiny_model, tmp_path):
    common = ["sft", "--model", str(tiny_model), "--template", "smollm2", "--dataset", str(DATA), "--max_steps", "8",
              "--per_device_train_batch_size", "2", "--learning_rate", "5e-3", "--save_steps", "2",
              "--save_total_limit", "10", "--report_to", "none", "--add_output_dir_suffix", "False",
              "--lora_dropout", "0.1"]
    full = tmp_path / "full"
    proc = _cli(*common, "--output_dir", str(full))
    assert proc.returncode == 0, proc.stderr[-3000:]

    killed = tmp_path / "killed"
    # slow each step a little so the kill lands mid-run, after a checkpoint
    child = subprocess.Popen([sys.executable, "-m", "swiftlike", *common, "--output_dir", str(killed)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint-4" / "swiftlike.json").exists():
        assert child.poll() is None and time.time() < deadline, "run ended before a checkpoint could be killed"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (killed / "checkpoint-8").exists()
    proc = _cli(*common, "--output_dir", str(killed), "--resume_from_checkpoint", "last")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _final_adapter(full / "checkpoint-8"), _final_adapter(killed / "checkpoint-8")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_deepspeed_configs_by_name_or_file(tmp_path, tiny_model):
    """ms-swift's --deepspeed names (default-zero2, zero3_offload...) give ZeRO configs for the Trainer; files are
    checked before anything loads; without the deepspeed package the command stops with one line saying so."""
    import importlib.util

    from swiftlike.train.deepspeed import deepspeed_config

    assert deepspeed_config(None) is None
    z2 = deepspeed_config("default-zero2")
    assert z2["zero_optimization"]["stage"] == 2 and "offload_optimizer" not in z2["zero_optimization"]
    z3 = deepspeed_config("zero3_offload")
    assert z3["zero_optimization"]["stage"] == 3
    assert z3["zero_optimization"]["offload_param"]["device"] == "cpu"
    good = tmp_path / "ds.json"
    good.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_batch_size": "auto"}))
    assert deepspeed_config(str(good)) == str(good)
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "zero_optimization": {"stage": 2},\n  oops\n}')
    with pytest.raises(SwiftlikeError, match=r"bad.json: line 3: not valid JSON"):
        deepspeed_config(str(bad))
    with pytest.raises(SwiftlikeError, match="no such file and not a built-in config"):
        deepspeed_config(str(tmp_path / "missing.json"))
    if importlib.util.find_spec("deepspeed") is None:
        proc = _cli("sft", "--model", str(tiny_model), "--dataset", str(DATA), "--deepspeed", "zero2",
                    "--output_dir", str(tmp_path / "out"))
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "pip install deepspeed" in proc.stderr
        assert not (tmp_path / "out").exists()  # stopped before making a run directory


def test_clear_errors(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    runs = [
        (("sft", "--model_type", "qwen1half-1_8b-chatt", "--dataset", str(DATA)), None),
        (("sft", "--model_type", "qwen1half-7b-chat", "--dataset", str(DATA)),
         {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}),
        (("sft", "--model_type", "qwen1half-7b-chat", "--dataset", str(DATA), "--device", "cuda"), None),
    ]
    with ThreadPoolExecutor(3) as pool:  # three independent commands: their start-ups overlap
        typo, uncached, cuda = pool.map(lambda run: _cli(*run[0], env=run[1]), runs)
    assert typo.returncode == 1
    assert typo.stderr.strip() == ("Error: unknown model 'qwen1half-1_8b-chatt'; did you mean qwen1half-1_8b-chat"
                                   + typo.stderr.strip().split("qwen1half-1_8b-chat", 2)[2])
    assert uncached.returncode == 1 and len(uncached.stderr.strip().splitlines()) == 1
    assert "not in the Hugging Face cache" in uncached.stderr and "Qwen/Qwen1.5-7B-Chat" in uncached.stderr
    assert cuda.returncode == 1 and "no GPU is visible" in cuda.stderr


def test_out_of_memory_names_the_levers():
    from swiftlike.train.memory import is_out_of_memory, oom_message

    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                         "memory: you tried to allocate 9663676416 bytes"))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    msg = oom_message(SftArguments(per_device_train_batch_size=8, max_length=2048, train_type="full"))
    assert msg == ("out of memory while training; try --per_device_train_batch_size 4 with "
                   "--gradient_accumulation_steps 2, --max_length 1024, --gradient_checkpointing true, "
                   "--train_type lora, --quant_bits 4 (QLoRA)")


def test_python_api_in_ms_swift_shape(lora_run, tiny_model):
    """get_model_tokenizer / get_template / adapters.load / inference, imported lazily from the top package."""
    import swiftlike
    from swiftlike.infer import generate

    model, tokenizer = swiftlike.get_model_tokenizer(model=str(tiny_model))
    template = swiftlike.get_template("smollm2", tokenizer)
    model = swiftlike.adapters.load(model, lora_run["last_checkpoint"])
    response, history = swiftlike.inference(model, template, "Who are you?", max_new_tokens=4)
    assert history == [["Who are you?", response]]
    assert response == generate(model, template, [{"role": "user", "content": "Who are you?"}], max_new_tokens=4)
    response2, history = swiftlike.inference(model, template, "And who made you?", history, max_new_tokens=4)
    assert len(history) == 2 and history[1][0] == "And who made you?"
