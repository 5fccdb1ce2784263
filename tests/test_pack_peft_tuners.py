"""The swiftlike-peft-tuners pack (packs/swiftlike-peft-tuners): each PEFT method trains, lowers the loss, saves,
loads, answers, merges where PEFT can merge it (prompt methods are refused in one line), and serve refuses it."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swiftlike.registry import SwiftlikeError

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "identity.jsonl"
MODULE_METHODS = ["adalora", "ia3", "vera", "loha", "lokr", "boft", "oft"]
PROMPT_METHODS = ["prompt_tuning", "prefix_tuning", "p_tuning"]
# learning rates that move each method on the tiny model in a few steps (IA3/VeRA/OFT train few parameters)
LR = {"ia3": 2e-1, "vera": 1e-1, "prompt_tuning": 1e-1, "p_tuning": 1e-2}


@pytest.fixture
def pack(load_pack):
    return load_pack("swiftlike-peft-tuners")


def _sft(tiny_model, out, train_type, **kw):
    from swiftlike.train.arguments import SftArguments
    from swiftlike.train.sft import sft

    args = dict(model=str(tiny_model), template="smollm2", dataset=[str(DATA)], output_dir=str(out), max_steps=8,
                per_device_train_batch_size=4, learning_rate=LR.get(train_type, 5e-2), logging_steps=1,
                max_length=128, report_to=["none"], lora_rank=4, lora_alpha=8, lora_dropout=0.0, warmup_ratio=0.0,
                train_type=train_type)
    return sft(SftArguments(**{**args, **kw}))


def _loss(model, template, rows) -> float:
    """Mean loss on the answer tokens (what sft trains), from the logits: AdaLoRA's forward adds its training
    regulariser to a loss computed from labels, and prompt tuning prepends virtual positions."""
    tok = template.tokenizer
    losses = []
    with torch.no_grad():
        for row in rows:
            prompt = tok(template.render(row["messages"][:-1], add_generation_prompt=True), add_special_tokens=False)
            ids = tok(template.render(row["messages"]), add_special_tokens=False, return_tensors="pt").input_ids
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -ids.shape[1]:]
            start = len(prompt.input_ids)
            losses.append(torch.nn.functional.cross_entropy(logits[start - 1:-1].float(), ids[0, start:]).item())
    return sum(losses) / len(losses)


FAST = ("adalora", "ia3", "prompt_tuning")  # one of each kind; the rest are alike and run with -m slow


@pytest.mark.parametrize("train_type", [t if t in FAST else pytest.param(t, marks=pytest.mark.slow)
                                        for t in MODULE_METHODS + PROMPT_METHODS])
def test_trains_saves_loads_infers_merges(pack, tiny_model, tmp_path, train_type):
    from swiftlike.infer import generate, load_checkpoint
    from swiftlike.merge import merge_lora

    run = _sft(tiny_model, tmp_path / "runs", train_type)
    ckpt = run["last_checkpoint"]
    manifest = json.loads((ckpt / "swiftlike.json").read_text())
    assert manifest["tuner"] == train_type
    peft_type = json.loads((ckpt / "adapter_config.json").read_text())["peft_type"]
    assert peft_type == manifest["tuner_config"]["peft_type"] != "LORA"

    loaded = load_checkpoint(ckpt)  # save -> load: the adapter back on its base, from the checkpoint alone
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    trained = _loss(loaded.model, loaded.template, rows)
    with loaded.model.disable_adapter():
        base = _loss(loaded.model, loaded.template, rows)
    assert trained < base - 0.02, (train_type, base, trained)
    answer = generate(loaded.model, loaded.template, rows[0]["messages"][:1], max_new_tokens=4)
    assert isinstance(answer, str)

    # serve (and eval's batched engine) cannot swap it in per request: one line, at load, saying what to do instead
    from swiftlike.infer.lora import lora_config

    instead = "swiftlike infer" if train_type in PROMPT_METHODS else "swiftlike merge-lora"
    with pytest.raises(SwiftlikeError, match=f"an? {peft_type} adapter, which the batched engine .*`{instead}"):
        lora_config(ckpt)
    if train_type == "loha":  # the command itself, once (in the slow set: a subprocess that loads torch)
        proc = subprocess.run([sys.executable, "-m", "swiftlike", "serve", "--model", str(tiny_model),
                               "--template", "smollm2", "--adapters", f"x={ckpt}"], capture_output=True, text=True,
                               timeout=120)
        assert proc.returncode == 1
        assert f"a {peft_type} adapter, which the batched engine (serve, eval) cannot swap in" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

    if train_type in PROMPT_METHODS:
        with pytest.raises(SwiftlikeError, match=r"cannot be merged"):
            merge_lora(ckpt, tmp_path / "merged")
        assert not (tmp_path / "merged").exists()
        return
    merged_dir = merge_lora(ckpt, tmp_path / "merged")
    merged = load_checkpoint(merged_dir)
    assert not hasattr(merged.model, "peft_config")
    assert _loss(merged.model, merged.template, rows) == pytest.approx(trained, abs=2e-3)


@pytest.mark.parametrize("train_type, extra, message", [
    ("vera", {"tuner_args": '{"rank": 4}'}, r"--tuner_args: 'rank' is not an option of vera \(peft.VeraConfig\)"),
    ("vera", {"tuner_args": "{r: 4}"}, r"--tuner_args '\{r: 4\}': not JSON"),
    ("prefix_tuning", {"packing": True}, r"cannot train packed samples"),
    ("p_tuning", {"target_modules": ["q_proj"]}, r"trains virtual tokens, not modules: drop --target_modules q_proj"),
    ("lora", {"tuner_args": '{"r": 4}'}, r"--tuner_args is for plugin tuners' own options; --train_type lora takes"),
])
def test_bad_options_refused_before_the_model_loads(pack, tmp_path, train_type, extra, message):
    with pytest.raises(SwiftlikeError, match=message):
        _sft(tmp_path / "no-such-model", tmp_path / "runs", train_type, **extra)
    assert not (tmp_path / "runs").exists()
