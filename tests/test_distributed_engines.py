"""--fsdp and --deepspeed really shard and train: the same LoRA job on one process and on two (torchrun, gloo, CPU)
at the same global batch gives the same adapter and the same logged losses.

Why the two runs see the same rows in the same order: the HF Trainer hands accelerate a RandomSampler, which
accelerate replaces with its SeedableRandomSampler seeded with `data_seed` (swiftlike passes --seed) plus the
epoch, on every process and also on one process. With two processes its BatchSamplerShard gives rank r the
per-device batches r, r+2, ... of that one permutation, so optimizer step t covers rows perm[4t:4t+4] on
1 process x batch 4 and on 2 processes x batch 2 alike. The loss is the token mean over the whole global batch in
both (num_items_in_batch is summed across ranks), dropout is 0 and the seed fixed.

Tolerances, measured on this machine (fp32, 4 steps at lr 5e-3): the adapters differ by at most 9.0e-7 (FSDP and
ZeRO-2), 6.6e-7 (ZeRO-3), 2.7e-7 (DDP); the logged losses by at most 1.9e-6. The one-process run takes the
fused-LoRA/packed-weights CPU path, the sharded runs PEFT's own forward: float rounding, not a different sum.
Asserted with atol 1e-5 / rtol 1e-4 (adapters) and 1e-5 (losses). Other rows in a step change its loss by
~1e-2 (the four step losses differ from each other by 3.5e-3 to 4e-2), and a saved shard has another shape.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from swiftlike.registry import SwiftlikeError

DATA = Path(__file__).parent / "data" / "identity.jsonl"
STEPS = 4
ADAPTER_TOL = dict(rtol=1e-4, atol=1e-5)
LOSS_TOL = 1e-5


def _job(tiny_model) -> dict:
    """The LoRA job both sides train (8 rows; 4 rows per optimizer step -> 2 epochs)."""
    return dict(model=str(tiny_model), template="smollm2", dataset=[str(DATA)], max_steps=STEPS, learning_rate=5e-3,
                lora_rank=4, lora_alpha=8, lora_dropout=0.0, warmup_ratio=0.0, logging_steps=1, seed=0,
                report_to=["none"], add_output_dir_suffix=False, save_total_limit=1, device="cpu")


def _cli_args(job: dict) -> list[str]:
    out = []
    for key, value in job.items():
        out += [f"--{key}", *map(str, value)] if isinstance(value, list) else [f"--{key}", str(value)]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_process(tiny_model, tmp_path_factory):
    """The reference: one process, batch 4, in this process (no launcher)."""
    from swiftlike.train.arguments import SftArguments
    from swiftlike.train.sft import sft

    out = tmp_path_factory.mktemp("one") / "run"
    sft(SftArguments(**_job(tiny_model), per_device_train_batch_size=4, output_dir=str(out)))
    return out


def _two_processes(tiny_model, out: Path, *engine: str, env: dict | None = None) -> Path:
    """The same job on 2 processes x batch 2 under torchrun (gloo on the CPU)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "swiftlike", "sft", *_cli_args(_job(tiny_model)), "--per_device_train_batch_size", "2",
           "--output_dir", str(out), *engine]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **(env or {})})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines() if line.strip()]
    return [r["loss"] for r in rows if "loss" in r]


def _assert_same_training(one: Path, two: Path) -> None:
    import torch
    from safetensors.torch import load_file

    ckpt = f"checkpoint-{STEPS}"
    ref = load_file(one / ckpt / "adapter_model.safetensors")
    got = load_file(two / ckpt / "adapter_model.safetensors")
    assert sorted(got) == sorted(ref)
    for key in ref:
        assert got[key].shape == ref[key].shape, key  # whole tensors, not one rank's shard
        torch.testing.assert_close(got[key], ref[key], **ADAPTER_TOL, msg=lambda m, k=key: f"{k}: {m}")
    # the job trains: lora_B starts at zero and has moved by far more than the tolerance
    assert min(ref[k].abs().max().item() for k in ref if "lora_B" in k) > 1e-3
    ref_losses, got_losses = _losses(one), _losses(two)
    assert len(ref_losses) == STEPS and len(set(ref_losses)) == STEPS  # one per step, each from other rows
    assert got_losses == pytest.approx(ref_losses, abs=LOSS_TOL)
    assert not (two / ".staging").exists() and sorted(p.name for p in two.glob("checkpoint-*")) == [ckpt]


# ms-swift's --fsdp file (its fsdp2 preset's settings): with SHARDED_STATE_DICT the HF Trainer writes no adapter
# at all, only distributed-checkpoint shards; swiftlike still gathers and writes the whole one
SWIFT_FSDP_FILE = {"_description": "ms-swift's format", "fsdp": "full_shard auto_wrap", "fsdp_config": {
    "fsdp_version": 2, "reshard_after_forward": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
    "cpu_ram_efficient_loading": True, "state_dict_type": "SHARDED_STATE_DICT"}}


@pytest.mark.slow  # two torchrun processes start and import torch on a 2-core machine: ~35-45 s
@pytest.mark.parametrize("spelling", ["hf_words", "swift_file"])
def test_fsdp_two_processes_match_one(tiny_model, one_process, tmp_path, spelling):
    if spelling == "hf_words":
        engine, resume_files = ["--fsdp", "full_shard auto_wrap"], ["optimizer.bin", "pytorch_model_fsdp.bin"]
    else:
        config = tmp_path / "fsdp2.json"
        config.write_text(json.dumps(SWIFT_FSDP_FILE))
        engine, resume_files = ["--fsdp", str(config)], ["optimizer_0", "pytorch_model_fsdp_0"]
    two = _two_processes(tiny_model, tmp_path / "fsdp", *engine)
    _assert_same_training(one_process, two)
    ckpt = two / f"checkpoint-{STEPS}"
    # FSDP really sharded (not DDP in its name): the Trainer wrote FSDP's resume files, not a plain optimizer.pt
    assert all((ckpt / name).exists() for name in resume_files), sorted(p.name for p in ckpt.iterdir())
    assert not (ckpt / "optimizer.pt").exists()
    assert sorted(p.name for p in ckpt.glob("rng_state_*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
    manifest = json.loads((ckpt / "swiftlike.json").read_text())
    assert manifest["step"] == STEPS and manifest["tuner"] == "lora"


@pytest.mark.slow  # ~35 s, as above
def test_ddp_two_processes_match_one(tiny_model, one_process, tmp_path):
    two = _two_processes(tiny_model, tmp_path / "ddp")
    _assert_same_training(one_process, two)
    assert (two / f"checkpoint-{STEPS}" / "optimizer.pt").exists()  # plain DDP: one whole optimizer state


@pytest.mark.slow  # ~50 s a stage; the first run also JIT-builds DeepSpeed's shm comm op (minutes, then cached)
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                    reason="deepspeed is not installed (pip install deepspeed; on the CPU it runs with DS_ACCELERATOR="
                           "cpu over gloo)")
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_two_processes_match_one(tiny_model, one_process, tmp_path, stage):
    two = _two_processes(tiny_model, tmp_path / stage, "--deepspeed", stage, env={"DS_ACCELERATOR": "cpu"})
    _assert_same_training(one_process, two)
    ckpt = two / f"checkpoint-{STEPS}"
    assert (ckpt / f"global_step{STEPS}").is_dir()  # the DeepSpeed engine's own checkpoint: it really ran
    assert not (ckpt / "optimizer.pt").exists()


# ---------------------------------------------------------------------------------------------- options
def test_fsdp_options_resolve_to_the_trainers(tmp_path):
    from swiftlike.train.fsdp import resolve_fsdp

    assert resolve_fsdp(None) == (None, None)
    assert resolve_fsdp("full_shard auto_wrap") == ("full_shard auto_wrap", {})
    assert resolve_fsdp(["shard_grad_op", "offload"]) == ("shard_grad_op offload", {})  # a YAML list
    # ms-swift's preset and its file format ("_" keys are its comments), with accelerate's config-file names
    strategy, config = resolve_fsdp("fsdp2")
    assert strategy == "full_shard auto_wrap" and config["version"] == 2
    swift = tmp_path / "fsdp2.json"
    swift.write_text(json.dumps({"_description": "x", "fsdp": "full_shard auto_wrap", "fsdp_config": {
        "fsdp_version": 2, "fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer", "state_dict_type":
        "SHARDED_STATE_DICT"}}))
    assert resolve_fsdp(str(swift)) == ("full_shard auto_wrap", {
        "version": 2, "transformer_layer_cls_to_wrap": "LlamaDecoderLayer", "state_dict_type": "SHARDED_STATE_DICT"})
    accel = tmp_path / "accelerate_fsdp.json"
    accel.write_text(json.dumps({"fsdp_sharding_strategy": "SHARD_GRAD_OP", "fsdp_offload_params": True}))
    assert resolve_fsdp("full_shard", str(accel))[1] == {"reshard_after_forward": False, "cpu_offload": True}
    assert resolve_fsdp("full_shard", '{"cpu_ram_efficient_loading": true}')[1] == {"cpu_ram_efficient_loading": True}


@pytest.mark.parametrize("fsdp, config, deepspeed, message", [
    ("full_shard", None, "zero2", r"--fsdp full_shard and --deepspeed zero2: choose one engine"),
    ("full_shard auto_warp", None, None, r"unknown FSDP option\(s\) auto_warp"),
    ("hybrid_shard", None, None, r"hybrid_shard exists only in FSDP1"),
    (None, '{"version": 2}', None, r"--fsdp_config is set without --fsdp"),
    ("full_shard", '{"transformer_layer_cls_to_warp": "X"}', None, r"unknown fsdp_config key\(s\) "
                                                                    r"transformer_layer_cls_to_warp"),
    ("full_shard", '{"auto_wrap_policy": "LAYER"}', None, r"auto_wrap_policy 'LAYER'"),
    ("full_shard", '{"version": 2,}', None, r"--fsdp_config \(inline JSON\) column \d+: not valid JSON"),
    ("full_shard", "missing.json", None, r"--fsdp_config missing.json: no such file"),
])
def test_fsdp_bad_options_are_one_line(fsdp, config, deepspeed, message):
    from swiftlike.train.fsdp import resolve_fsdp

    with pytest.raises(SwiftlikeError, match=message):
        resolve_fsdp(fsdp, config, deepspeed=deepspeed)


def test_fsdp_config_file_errors_name_file_and_line(tmp_path, tiny_model):
    """A broken --fsdp_config file stops `swiftlike sft` with one line naming the file and line, before the model
    loads or a run directory is made."""
    from swiftlike.train.fsdp import resolve_fsdp

    bad = tmp_path / "fsdp.json"
    bad.write_text('{\n  "version": 2,\n  "reshard_after_forward": tru\n}\n')
    with pytest.raises(SwiftlikeError, match=rf"--fsdp_config {bad}:3: not valid JSON"):
        resolve_fsdp("full_shard auto_wrap", str(bad))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "sft", "--model", str(tiny_model), "--dataset",
                           str(DATA), "--fsdp", "full_shard auto_wrap", "--fsdp_config", str(bad), "--output_dir",
                           str(out)], capture_output=True, text=True)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{bad}:3: not valid JSON" in proc.stderr
    assert not out.exists()


def test_fsdp_needs_a_launcher(tiny_model, tmp_path, monkeypatch):
    """Without torchrun there is nothing to shard over: refused before the model loads (the HF Trainer would stop
    only after it)."""
    from swiftlike.train.arguments import SftArguments
    from swiftlike.train.sft import sft

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(SwiftlikeError, match=r"--fsdp full_shard: FSDP shards the model over processes; launch"):
        sft(SftArguments(**_job(tiny_model), fsdp="full_shard", output_dir=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_llamafactory_and_swift_configs_pass_fsdp(tmp_path):
    """LLaMA-Factory's YAML and ms-swift's argument files carry fsdp / fsdp_config through to the options."""
    from swiftlike.train.arguments import SftArguments
    from swiftlike.train.config_files import config_values
    from swiftlike.train.fsdp import resolve_fsdp

    lf = {"model_name_or_path": "m", "stage": "sft", "finetuning_type": "lora", "fsdp": "full_shard auto_wrap",
          "fsdp_config": {"fsdp_transformer_layer_cls_to_wrap": ["Qwen2DecoderLayer"]}}
    values, _ = config_values(SftArguments, lf, source="lf.yaml", stages="sft")
    assert values["fsdp"] == "full_shard auto_wrap"
    assert resolve_fsdp(values["fsdp"], values["fsdp_config"])[1] == {
        "transformer_layer_cls_to_wrap": ["Qwen2DecoderLayer"]}
    swift, _ = config_values(SftArguments, {"model": "m", "train_type": "lora", "fsdp": "fsdp2"}, source="a.json",
                             stages="sft")
    assert swift["fsdp"] == "fsdp2"
