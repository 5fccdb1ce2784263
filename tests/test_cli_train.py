"""Config files and the peers' spellings: `swiftlike sft --config`, a run's args.json, a LLaMA-Factory training YAML
with its dataset_info.json, and an ms-swift 4 `swift sft` command line with `swift` -> `swiftlike`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "identity.jsonl"


def _cli(*args, cwd=None, **kw):
    return subprocess.run([sys.executable, "-m", "swiftlike", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)}, **kw)


def _adapter(ckpt):
    return load_file(Path(ckpt) / "adapter_model.safetensors")


def _same_adapter(a, b):
    a, b = _adapter(a), _adapter(b)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


COMMON = ["--template", "smollm2", "--max_steps", "2", "--per_device_train_batch_size", "2",
          "--learning_rate", "5e-3", "--lora_rank", "4", "--lora_alpha", "8", "--max_length", "128",
          "--report_to", "none", "--add_output_dir_suffix", "false", "--lora_dropout", "0"]


def test_yaml_config_with_flags_overriding_and_args_json_reproduces_the_run(tiny_model, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {tiny_model}\ntemplate: smollm2\ndataset: {DATA}\nmax_steps: 2\n"
                   f"per_device_train_batch_size: 2\nlearning_rate: 5e-3\n"  # YAML reads 5e-3 as text: coerced
                   f"lora_rank: 4\nlora_alpha: 8\nmax_length: 128\nreport_to: none\nadd_output_dir_suffix: false\n"
                   f"lora_dropout: 0\noutput_dir: {tmp_path / 'from-file'}\nsft_type: lora\n")
    # positional config file, a LLaMA-Factory style key=value override, and a flag that overrides the file
    proc = _cli("sft", cfg, "lora_rank=2", "--output_dir", tmp_path / "a")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "from-file").exists()
    args = json.loads((tmp_path / "a" / "args.json").read_text())
    assert args["lora_rank"] == 2 and args["learning_rate"] == 5e-3 and args["dataset"] == [str(DATA)]
    assert args["stage"] == "sft"

    # the run's own args.json is a valid config (given with --config, or as the positional file with output_dir
    # changed): re-running it gives the same adapter; the two re-runs are independent, so they run at once
    from concurrent.futures import ThreadPoolExecutor

    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps({**args, "output_dir": str(tmp_path / "c")}))
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda argv: _cli(*argv), [
            ("sft", "--config", tmp_path / "a" / "args.json", "--output_dir", tmp_path / "b"), ("sft", as_json)]))
    for proc, out in zip(procs, ("b", "c")):
        assert proc.returncode == 0, proc.stderr[-3000:]
        _same_adapter(tmp_path / "a" / "checkpoint-2", tmp_path / out / "checkpoint-2")


def test_config_errors_are_one_line_before_anything_loads(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\nlearning_rat: 1e-4\nlora_rankk: 8\nsave_only_model: true\n")
    proc = _cli("sft", bad)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "unknown option(s) learning_rat, lora_rankk" in proc.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: x\nlr: [1\n")
    proc = _cli("sft", broken)
    assert proc.returncode == 1 and "broken.yaml:" in proc.stderr and "invalid YAML" in proc.stderr
    typed = tmp_path / "typed.yaml"
    typed.write_text("model: x\nlora_rank: eight\n")
    proc = _cli("sft", typed)
    assert proc.returncode == 1 and "lora_rank: 'eight' is not a valid int" in proc.stderr
    proc = _cli("sft", tmp_path / "missing.yaml")
    assert proc.returncode == 1 and "no such file" in proc.stderr


def _lf_dataset_dir(root: Path) -> Path:
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    ddir = root / "lf-data"
    ddir.mkdir()
    # an alpaca file with LLaMA-Factory's column mapping, and an OpenAI-style sharegpt file with tags
    (ddir / "ident_alpaca.json").write_text(json.dumps(
        [{"q": r["messages"][-2]["content"], "a": r["messages"][-1]["content"]} for r in rows]))
    (ddir / "ident_chat.jsonl").write_text("\n".join(json.dumps({"msgs": r["messages"]}) for r in rows))
    (ddir / "dataset_info.json").write_text(json.dumps({
        "ident_alpaca": {"file_name": "ident_alpaca.json", "columns": {"prompt": "q", "response": "a"}},
        "ident_chat": {"file_name": "ident_chat.jsonl", "formatting": "sharegpt", "columns": {"messages": "msgs"},
                       "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                "assistant_tag": "assistant", "system_tag": "system"}},
        "ident_dpo": {"file_name": "ident_chat.jsonl", "ranking": True},
    }))
    return ddir


def test_llamafactory_training_yaml_runs(tiny_model, tmp_path):
    ddir = _lf_dataset_dir(tmp_path)
    out = tmp_path / "saves"
    yaml = tmp_path / "lf.yaml"
    yaml.write_text(f"""### model
model_name_or_path: {tiny_model}
trust_remote_code: true
### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 4
lora_alpha: 8
lora_dropout: 0.0
lora_target: all
### dataset
dataset: ident_alpaca,ident_chat
dataset_dir: {ddir}
template: smollm2
cutoff_len: 128
max_samples: 6
overwrite_cache: true
preprocessing_num_workers: 1
### output
output_dir: {out}
logging_steps: 1
save_steps: 4
plot_loss: true
overwrite_output_dir: true
### train
per_device_train_batch_size: 2
gradient_accumulation_steps: 1
learning_rate: 1.0e-3
num_train_epochs: 1.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: false
ddp_timeout: 180000000
report_to: none
""")
    proc = _cli("sft", "--config", yaml)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ignoring option(s)" in proc.stderr and "--overwrite_cache" in proc.stderr and "--plot_loss" in proc.stderr
    # LLaMA-Factory writes into output_dir itself: 6 + 6 rows, batch 2 -> 6 steps; the last step is saved
    assert (out / "checkpoint-6" / "adapter_model.safetensors").exists() and (out / "checkpoint-4").exists()
    args = json.loads((out / "args.json").read_text())
    assert args["dataset"] == ["ident_alpaca", "ident_chat"] and args["max_samples"] == 6
    assert args["max_length"] == 128
    assert args["train_type"] == "lora" and args["target_modules"] == "all-linear" and args["lora_dropout"] == 0
    cfg = json.loads((out / "checkpoint-6" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8


def test_llamafactory_yaml_refusals(tiny_model, tmp_path):
    ddir = _lf_dataset_dir(tmp_path)
    base = f"model_name_or_path: {tiny_model}\nstage: sft\nfinetuning_type: lora\ndataset_dir: {ddir}\ntemplate: smollm2\n"
    yaml = tmp_path / "unknown.yaml"
    yaml.write_text(base + "dataset: ident_alpaca\nuse_galore: true\nfoo_bar: 1\n")
    proc = _cli("sft", yaml)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "does not know: foo_bar, use_galore" in proc.stderr
    yaml.write_text(base.replace("stage: sft", "stage: dpo") + "dataset: ident_alpaca\n")
    proc = _cli("sft", yaml)
    assert proc.returncode == 1 and "stage 'dpo'" in proc.stderr
    yaml.write_text(base + "dataset: ident_dpo\noutput_dir: " + str(tmp_path / "o") + "\n")
    proc = _cli("sft", yaml)
    assert proc.returncode == 1 and "ident_dpo" in proc.stderr and "is preference data" in proc.stderr
    assert not (tmp_path / "o").exists()  # refused before a run directory was made


def test_ms_swift_4_command_line_runs(tiny_model, tmp_path):
    out = tmp_path / "output"
    proc = _cli("sft", "--model", tiny_model, "--model_type", "llama", "--template", "smollm2",
                "--tuner_type", "lora", "--dataset", f"{DATA}#6", "--use_hf", "true", "--torch_dtype", "float32",
                "--num_train_epochs", "1", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2",
                "--learning_rate", "1e-4", "--lora_rank", "4", "--lora_alpha", "8", "--target_modules", "all-linear",
                "--gradient_accumulation_steps", "1", "--eval_strategy", "steps", "--eval_steps", "2",
                "--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "2", "--logging_steps", "1",
                "--max_length", "128", "--output_dir", out, "--warmup_ratio", "0.05", "--dataloader_num_workers", "0",
                "--split_dataset_ratio", "0.34", "--dataset_num_proc", "1", "--save_only_model", "true",
                "--report_to", "none", "--gradient_checkpointing", "false", "--model_author", "swift",
                "--model_name", "swift-robot", "--add_version", "false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ignoring option(s) that swiftlike decides itself: --save_only_model" in proc.stderr
    assert "--model_type llama is not a swiftlike model type" in proc.stderr
    logs = [json.loads(line) for line in (out / "logging.jsonl").read_text().splitlines()]
    assert any("eval_loss" in row for row in logs)
    args = json.loads((out / "args.json").read_text())
    assert args["hub"] == "hf" and args["split_dataset_ratio"] == 0.34 and args["save_strategy"] == "steps"


def test_unknown_flag_suggests_real_options_only(tmp_path):
    proc = _cli("sft", "--save_only_modle", "true")
    assert proc.returncode == 2
    assert "No such option '--save_only_modle'" in proc.stderr
    assert "save_only_model" not in proc.stderr.split("No such option")[1]  # ignored flags are not suggestions
    proc = _cli("sft", "--learning_rat", "1e-4")
    assert "--learning_rate" in proc.stderr


def test_no_prefix_negates_a_boolean_option():
    from swiftlike.cli.train_cmds import sft

    ctx = sft.make_context("sft", ["--no-padding_free", "--dataset", "a.jsonl", "b.jsonl"])
    assert ctx.params["padding_free"] is False and ctx.params["dataset"] == ("a.jsonl", "b.jsonl")


def test_help_shows_the_readme_quick_start():
    readme = (ROOT / "README.md").read_text()
    from swiftlike.cli.quickstart import QUICK_START

    assert QUICK_START in readme
    for args in (["sft", "--help"], ["--help"]):
        proc = _cli(*args)
        assert proc.returncode == 0 and QUICK_START in proc.stdout, proc.stdout


@pytest.mark.parametrize("flags, message", [
    (["--report_to", "wandb"], "pip install wandb"),
    (["--save_strategy", "sometimes"], "--save_strategy 'sometimes': use steps, epoch, no"),
    (["--hub", "hff"], "--hub 'hff': not a registered hub; one of hf, local, ms"),
    (["--num_train_epochs", "0"], "nothing to train: --num_train_epochs 0 and no --max_steps"),
])
def test_bad_options_stop_before_the_model_loads(tiny_model, tmp_path, flags, message):
    if flags[1] == "wandb":
        import importlib.util

        if importlib.util.find_spec("wandb") is not None:
            pytest.skip("wandb is installed here")
    proc = _cli("sft", "--model", tiny_model, "--dataset", DATA, "--output_dir", tmp_path / "out", *flags)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "out").exists()
