"""`swiftlike pt` and `swiftlike rlhf` (dpo, kto, orpo, simpo, cpo, rm, ppo, grpo) on a tiny random Llama: each stage
trains, writes the sft layout with its own metrics and manifest, and bad input stops before anything loads."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
IDENTITY = Path(__file__).parent / "data" / "identity.jsonl"


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "swiftlike", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, **kw)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rlhf-data")
    rows = [json.loads(line) for line in IDENTITY.read_text().splitlines()]
    pairs = [{**r, "rejected_response": "I am SmolLM, made by Hugging Face."} for r in rows]
    (root / "pairs.jsonl").write_text("\n".join(json.dumps(p) for p in pairs))
    kto = [{**r, "label": True} for r in rows] + [
        {"messages": r["messages"][:-1] + [{"role": "assistant", "content": "I am SmolLM."}], "label": False}
        for r in rows]
    (root / "kto.jsonl").write_text("\n".join(json.dumps(k) for k in kto))
    sums = [{"messages": [{"role": "user", "content": f"What is {a} + {b}?"}], "solution": str(a + b)}
            for a in range(2, 6) for b in range(1, 3)]
    (root / "sums.jsonl").write_text("\n".join(json.dumps(s) for s in sums))
    return root


def _args(tiny_model, out, **kw):
    from swiftlike.train.rlhf.arguments import RlhfArguments

    base = dict(model=str(tiny_model), template="smollm2", output_dir=str(out), max_steps=2,
                per_device_train_batch_size=2, learning_rate=5e-3, logging_steps=1, max_length=256,
                report_to=["none"], lora_rank=4, lora_alpha=8, warmup_ratio=0.0, save_steps=2)
    base.update(kw)
    return RlhfArguments(**base)


def _logs(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "logging.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reward_model(tiny_model, data, tmp_path_factory):
    import swiftlike

    return swiftlike.rlhf(_args(tiny_model, tmp_path_factory.mktemp("rm"), rlhf_type="rm",
                                dataset=str(data / "pairs.jsonl"), max_steps=3))


@pytest.mark.parametrize("rlhf_type, dataset, metric", [
    ("dpo", "pairs", "rewards/margins"), ("simpo", "pairs", "rewards/margins"), ("cpo", "pairs", "nll_loss"),
    ("orpo", "pairs", "log_odds_ratio"), ("kto", "kto", "kl"),
])
def test_preference_stages(tiny_model, data, tmp_path, rlhf_type, dataset, metric):
    import swiftlike
    from swiftlike.infer import load_checkpoint

    result = swiftlike.rlhf(_args(tiny_model, tmp_path, rlhf_type=rlhf_type, dataset=str(data / f"{dataset}.jsonl")))
    ckpt = result["last_checkpoint"]
    manifest = json.loads((ckpt / "swiftlike.json").read_text())
    assert manifest["stage"] == rlhf_type and manifest["rlhf_type"] == rlhf_type and manifest["tuner"] == "lora"
    assert "adapter_model.safetensors" in manifest["files"] and "README.md" in manifest["files"]
    assert any(key.endswith(metric) for row in _logs(result["run_dir"]) for key in row), _logs(result["run_dir"])
    assert math.isfinite(result["metrics"]["train_loss"])
    assert json.loads((result["run_dir"] / "args.json").read_text())["stage"] == rlhf_type
    # a preference adapter is an adapter like any other: infer (and serve, push, merge) load it
    loaded = load_checkpoint(ckpt)
    assert loaded.template.name == "smollm2" and loaded.model_type == "tiny-llama"


def test_dpo_logs_what_shows_reward_hacking(tiny_model, data, tmp_path):
    """rewards/chosen, rewards/rejected, accuracies, margins and the log-probs behind them, every logging step; the
    manifest names the reference."""
    import swiftlike

    result = swiftlike.rlhf(_args(tiny_model, tmp_path, rlhf_type="dpo", dataset=str(data / "pairs.jsonl"),
                                  rpo_alpha=1.0))
    rows = [r for r in _logs(result["run_dir"]) if "loss" in r]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                "logps/rejected"):
        assert all(key in r for r in rows), key
    manifest = json.loads((result["last_checkpoint"] / "swiftlike.json").read_text())
    assert manifest["reference"] == "base (adapter disabled)" and manifest["beta"] == 0.1


@pytest.mark.parametrize("train_type", ["lora", "full"])
def test_padding_free_dpo_matches_trls_padded_batches(tiny_model, data, tmp_path, train_type):
    """The packed pairs (prompt shared by both answers, logits only at answer positions) train exactly as TRL's
    padded batches do: same loss,
    rewards and log-probs at every step (LoRA's reference = adapter disabled; full's = a frozen copy)."""
    import swiftlike

    runs = {}
    for padding_free in (True, False):
        out = tmp_path / str(padding_free)
        result = swiftlike.rlhf(_args(tiny_model, out, rlhf_type="dpo", dataset=str(data / "pairs.jsonl"),
                                      rpo_alpha=0.5, max_steps=3, padding_free=padding_free, train_type=train_type,
                                      learning_rate=1e-3 if train_type == "full" else 5e-3))
        runs[padding_free] = [r for r in _logs(result["run_dir"]) if "loss" in r]
    assert len(runs[True]) == len(runs[False]) == 3
    for packed, padded in zip(runs[True], runs[False]):
        for key in ("loss", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"):
            assert packed[key] == pytest.approx(padded[key], rel=2e-3, abs=2e-3), (key, packed, padded)
    # tokens the model ran on: the packed run shares each pair's prompt between its two answers
    assert 0 < runs[True][-1]["num_tokens"] < runs[False][-1]["num_tokens"]


def test_sft_then_dpo_on_the_same_adapter(tiny_model, data, tmp_path):
    import swiftlike

    sft = swiftlike.sft(model=str(tiny_model), template="smollm2", dataset=str(IDENTITY), output_dir=str(tmp_path / "s"),
                        max_steps=2, per_device_train_batch_size=2, learning_rate=5e-3, report_to=["none"],
                        lora_rank=4, lora_alpha=8)
    start = load_file(sft["last_checkpoint"] / "adapter_model.safetensors")
    dpo = swiftlike.rlhf(_args(tiny_model, tmp_path / "d", rlhf_type="dpo", dataset=str(data / "pairs.jsonl"),
                               adapters=[str(sft["last_checkpoint"])], lora_rank=16,
                               ref_adapters=[str(sft["last_checkpoint"])]))  # ms-swift's spelling of the recipe
    end = load_file(dpo["last_checkpoint"] / "adapter_model.safetensors")
    assert end.keys() == start.keys()  # the same adapter (rank 4 as trained, not the new --lora_rank)
    assert any(not torch.equal(end[k], start[k]) for k in end)
    manifest = json.loads((dpo["last_checkpoint"] / "swiftlike.json").read_text())
    assert manifest["started_from"] == str(sft["last_checkpoint"])
    assert manifest["reference"].startswith("adapter ") and manifest["reference"].endswith("(frozen copy)")


def test_sft_then_reward_model_on_the_same_adapter(tiny_model, data, tmp_path):
    """The InstructGPT flow: the reward model starts from the sft adapter (a causal-LM adapter) under a new score
    head. It failed inside PEFT ('no attribute prepare_inputs_for_generation') before the adapter was re-targeted."""
    import swiftlike
    from swiftlike.train.rlhf.reward_model import load_reward_model

    sft = swiftlike.sft(model=str(tiny_model), template="smollm2", dataset=str(IDENTITY), output_dir=str(tmp_path / "s"),
                        max_steps=2, per_device_train_batch_size=2, learning_rate=5e-3, report_to=["none"],
                        lora_rank=4, lora_alpha=8)
    start = load_file(sft["last_checkpoint"] / "adapter_model.safetensors")
    # learning rate 0: the saved LoRA factors must be the sft adapter's exactly (loaded, not freshly initialised)
    rm = swiftlike.rlhf(_args(tiny_model, tmp_path / "r", rlhf_type="rm", dataset=str(data / "pairs.jsonl"),
                              adapters=[str(sft["last_checkpoint"])], learning_rate=0.0, lora_rank=16))
    end = load_file(rm["last_checkpoint"] / "adapter_model.safetensors")
    assert start.keys() < end.keys() and any("score" in k for k in end.keys() - start.keys())
    assert all(torch.equal(end[k], start[k]) for k in start)
    assert json.loads((rm["last_checkpoint"] / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    model, tok = load_reward_model(rm["last_checkpoint"])
    with torch.no_grad():
        assert model(**tok(["I am Nova."], return_tensors="pt")).logits.shape == (1, 1)


def test_reward_model_scores_and_feeds_ppo(tiny_model, data, tmp_path, reward_model):
    import swiftlike
    from swiftlike.train.rlhf.reward_model import load_reward_model

    ckpt = reward_model["last_checkpoint"]
    assert any("score" in k for k in load_file(ckpt / "adapter_model.safetensors"))  # the value head is saved
    assert any("accuracy" in r for r in _logs(reward_model["run_dir"]))
    model, tok = load_reward_model(ckpt)
    ids = tok(["I am Nova.", "I am SmolLM."], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert model(**ids).logits.shape == (2, 1)
    # with validation prompts (TRL samples answers to them while training; there is no evaluation loss to end on)
    # the reward model's run directory (as LLaMA-Factory's YAMLs name it) stands for its newest checkpoint
    ppo = swiftlike.rlhf(_args(tiny_model, tmp_path, rlhf_type="ppo", dataset=str(data / "sums.jsonl"),
                               reward_model=str(reward_model["run_dir"]), max_completion_length=6,
                               split_dataset_ratio=0.25,
                               num_ppo_epochs=2, cliprange=0.3, vf_coef=0.2, lam=0.9, beta=0.07))
    trained = torch.load(ppo["last_checkpoint"] / "training_args.bin", weights_only=False)
    assert (trained.num_ppo_epochs, trained.cliprange, trained.vf_coef, trained.lam, trained.kl_coef) == (
        2, 0.3, 0.2, 0.9, 0.07)
    assert (ppo["last_checkpoint"] / "adapter_model.safetensors").exists()
    assert any("objective/kl" in r for r in _logs(ppo["run_dir"]))
    manifest = json.loads((ppo["last_checkpoint"] / "swiftlike.json").read_text())
    assert manifest["reward_model"] == str(ckpt) and "loss/policy_avg" in manifest["metrics"]
    assert manifest["reference"] == "base (adapter disabled)"
    assert (ppo["run_dir"] / "loss.png").exists()  # PPO's policy loss
    strict = {"parse_constant": lambda c: pytest.fail(f"{c} in JSON")}  # PPO logs NaN variances on tiny batches
    json.loads((ppo["run_dir"] / "metrics.json").read_text(), **strict)
    for line in (ppo["run_dir"] / "logging.jsonl").read_text().splitlines():
        json.loads(line, **strict)


def test_implicit_reward_model_ranks_and_feeds_ppo(tiny_model, data, tmp_path):
    """`--rm_type implicit`: DPO's pairwise loss on beta x log pi/pi_base, saved as a reward model. `swiftlike eval`
    scores each answer as exactly that sum (checked against plain PEFT: adapter on minus adapter off, over the answer's
    tokens only), and PPO takes it as --reward_model (TRL's reward call routed to it; a fresh value head)."""
    import swiftlike
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from swiftlike.templates import get_template
    from swiftlike.train.rlhf.encode import encode_answer

    rm = swiftlike.rlhf(_args(tiny_model, tmp_path / "rm", rlhf_type="rm", rm_type="implicit", beta=0.3,
                              dataset=str(data / "pairs.jsonl"), max_steps=3))
    ckpt = rm["last_checkpoint"]
    manifest = json.loads((ckpt / "swiftlike.json").read_text())
    assert (manifest["rlhf_type"], manifest["rm_type"], manifest["beta"]) == ("rm", "implicit", 0.3)
    assert manifest["reference"] == "base (adapter disabled)"
    assert json.loads((ckpt / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    assert any("rewards/accuracies" in r for r in _logs(rm["run_dir"]))
    # resumed as the other kind it would load a causal-LM adapter under a score head: one line, nothing written
    proc = _cli("rlhf", "--rlhf_type", "rm", "--model", tiny_model, "--template", "smollm2", "--dataset",
                data / "pairs.jsonl", "--resume_from_checkpoint", ckpt, "--output_dir", tmp_path / "again")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "is a --rm_type implicit reward model; resume it with --rm_type implicit" in proc.stderr

    proc = _cli("eval", "--ckpt_dir", ckpt, "--val_dataset", data / "pairs.jsonl", "--max_batch_size", 4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((next((ckpt / "eval_result").iterdir()) / "metrics.json").read_text())
    predictions = [json.loads(line) for line in
                   (next((ckpt / "eval_result").iterdir()) / "predictions.jsonl").read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                                      str(ckpt)).eval()
    template = get_template("smollm2", tok, loss_mode="last_round")

    def reward(messages, answer):
        prompt, ids = encode_answer(template, messages, answer)
        full = torch.tensor([prompt + ids])

        def summed():
            logps = model(input_ids=full).logits[0, len(prompt) - 1:-1].log_softmax(-1)
            return logps.gather(-1, torch.tensor(ids)[:, None]).sum().item()
        with torch.no_grad():
            on = summed()
            with model.disable_adapter():
                off = summed()
        return 0.3 * (on - off)

    for p in predictions[:4]:
        got = p["scores"][ckpt.name]
        assert got["chosen"] == pytest.approx(reward(p["prompt"], p["chosen"]), abs=1e-4)
        assert got["rejected"] == pytest.approx(reward(p["prompt"], p["rejected"]), abs=1e-4)
    assert abs(predictions[0]["scores"][ckpt.name]["chosen"]) > 1e-3  # trained: not the base's zero
    right = [p["scores"][ckpt.name]["chosen"] > p["scores"][ckpt.name]["rejected"] for p in predictions]
    assert metrics["models"][ckpt.name]["accuracy"] == pytest.approx(sum(right) / len(right))

    from trl.experimental.ppo import ppo_trainer

    original = ppo_trainer.get_reward
    ppo = swiftlike.rlhf(_args(tiny_model, tmp_path / "ppo", rlhf_type="ppo", dataset=str(data / "sums.jsonl"),
                               reward_model=str(ckpt), max_completion_length=6))
    assert ppo_trainer.get_reward is original  # the routing ends with the loop
    scores = [r["objective/scores"] for r in _logs(ppo["run_dir"]) if "objective/scores" in r]
    assert scores and all(math.isfinite(s) for s in scores)
    assert (ppo["last_checkpoint"] / "adapter_model.safetensors").exists()


def _hf_reward_model(directory, tiny_model, *, sign=1.0, extra_token=None):
    """A Hugging Face reward model as Skywork-Reward is shipped: LlamaForSequenceClassification with one output and
    the tokenizer, no swiftlike manifest. `sign` flips its score head (the same model scoring the opposite way)."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    config = AutoConfig.from_pretrained(tiny_model, num_labels=1)
    torch.manual_seed(3)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.mul_(sign)
    model.save_pretrained(directory, safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    if extra_token:
        tok.add_tokens([extra_token])
    tok.save_pretrained(directory)
    return directory


def test_ppo_takes_a_hugging_face_reward_model(tiny_model, data, tmp_path, monkeypatch):
    """ms-swift's PPO example passes a Hugging Face reward model by hub id (Skywork-Reward: a sequence-classification
    model with one output). Given as a hub id (from the offline cache) or a directory, its scores are the rewards PPO
    optimises: the same model with its score head negated logs exactly the negated scores on the same samples."""
    import shutil

    import swiftlike

    cache = tmp_path / "hub"
    snap = cache / "models--Org--Tiny-Reward" / "snapshots" / ("0" * 40)
    _hf_reward_model(snap, tiny_model)
    (cache / "models--Org--Tiny-Reward" / "refs").mkdir()
    (cache / "models--Org--Tiny-Reward" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    negated = _hf_reward_model(tmp_path / "negated", tiny_model, sign=-1.0)

    def first_scores(reward_model, out):
        run = swiftlike.rlhf(_args(tiny_model, tmp_path / out, rlhf_type="ppo", dataset=str(data / "sums.jsonl"),
                                   reward_model=reward_model, hub="hf", max_completion_length=6, max_steps=1,
                                   save_steps=1))
        manifest = json.loads((run["last_checkpoint"] / "swiftlike.json").read_text())
        assert manifest["reward_model"] == reward_model
        return [r["objective/scores"] for r in _logs(run["run_dir"]) if "objective/scores" in r][0]

    scores = first_scores("Org/Tiny-Reward", "hub")
    assert abs(scores) > 1e-4  # a random head on a random body: not zero
    assert first_scores(str(negated), "dir") == pytest.approx(-scores, rel=1e-4, abs=1e-6)

    # a reward model of another tokenizer would score the policy's ids as other words: one line before loading
    other = _hf_reward_model(tmp_path / "other-tok", tiny_model, extra_token="<extra>")
    causal = tmp_path / "causal"
    shutil.copytree(tiny_model, causal)
    for bad, message in ((other, "its tokenizer is not the policy's"), (causal, "not a reward model (a checkpoint "
                                                                               "of --rlhf_type rm, or a Hugging Face")):
        proc = _cli("rlhf", "--rlhf_type", "ppo", "--model", tiny_model, "--template", "smollm2", "--dataset",
                    data / "sums.jsonl", "--reward_model", bad, "--output_dir", tmp_path / "bad")
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not (tmp_path / "bad").exists()


def test_grpo_scores_with_reward_models(tiny_model, data, tmp_path, reward_model):
    """ms-swift's GRPO --reward_model: each reward model scores the completions after their prompt, encoded in its
    template as it was trained (a swiftlike checkpoint's own; a Hugging Face one's from --reward_template), one
    reward each after --reward_funcs in --reward_weights. The same model with its head negated logs the negated
    mean on the same samples."""
    import swiftlike

    from swiftlike.train.rlhf.reward_scorer import RewardScorer

    hf = _hf_reward_model(tmp_path / "Tiny-Reward", tiny_model)
    negated = _hf_reward_model(tmp_path / "neg" / "Tiny-Reward", tiny_model, sign=-1.0)

    def run(models, out, **kw):
        return swiftlike.rlhf(_args(tiny_model, tmp_path / out, rlhf_type="grpo", dataset=str(data / "sums.jsonl"),
                                    reward_model=[str(m) for m in models], num_generations=2, max_completion_length=6,
                                    max_steps=1, save_steps=1, **kw))

    first = [r for r in _logs(run([hf], "a", reward_template=["smollm2"])["run_dir"])
             if "rewards/Tiny-Reward/mean" in r][0]
    again = [r for r in _logs(run([negated], "b", reward_template=["smollm2"])["run_dir"])
             if "rewards/Tiny-Reward/mean" in r][0]
    assert abs(first["rewards/Tiny-Reward/mean"]) > 1e-5
    assert again["rewards/Tiny-Reward/mean"] == pytest.approx(-first["rewards/Tiny-Reward/mean"], rel=1e-4)

    ckpt = reward_model["last_checkpoint"]
    both = run([ckpt], "c", reward_funcs=["accuracy"], reward_weights=[1.0, 0.5])
    name = f"{ckpt.parent.name}-{ckpt.name}"
    assert any(f"rewards/{name}/mean" in r and "rewards/accuracy/mean" in r for r in _logs(both["run_dir"]))
    assert torch.load(both["last_checkpoint"] / "training_args.bin", weights_only=False).reward_weights == [1.0, 0.5]
    manifest = json.loads((both["last_checkpoint"] / "swiftlike.json").read_text())
    assert manifest["reward_model"] == [str(ckpt)] and manifest["reward_funcs"] == ["accuracy"]

    # the scorer reads the head at the answer's last trained token (its end of turn), as --rlhf_type rm trained it
    scorer = RewardScorer(ckpt, base_path=tiny_model, default_template="smollm2")
    messages = [{"role": "user", "content": "Who are you?"}]
    enc = scorer.template.encode([*messages, {"role": "assistant", "content": "I am Nova."}])
    last = max(i for i, label in enumerate(enc["labels"]) if label != -100)
    ids = enc["input_ids"][:last + 1]
    assert scorer.tokenizer.decode(ids[-1:]) == "<|im_end|>"
    with torch.no_grad():
        direct = scorer.model(input_ids=torch.tensor([ids])).logits[0, 0].item()
    assert scorer.score([messages], ["I am Nova."]) == [pytest.approx(direct, abs=1e-5)]

    # a Hugging Face reward model whose chat template cannot be told: one line before anything loads
    proc = _cli("rlhf", "--rlhf_type", "grpo", "--model", tiny_model, "--template", "smollm2", "--dataset",
                data / "sums.jsonl", "--reward_model", hf, "--output_dir", tmp_path / "bad")
    assert proc.returncode == 1 and "cannot tell which chat template it reads conversations in; pass " \
        "--reward_template NAME" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_eval_ranks_pairs_with_a_hugging_face_reward_model(tiny_model, data, tmp_path):
    """`swiftlike eval --ckpt_dir HF_RM` ranks the pairs with a Hugging Face reward model (in --template, or its
    model type's): the negated head ranks each pair the other way; results land in the working directory, not in the
    model's own (a hub cache snapshot, say)."""
    hf = _hf_reward_model(tmp_path / "Tiny-Reward", tiny_model)
    negated = _hf_reward_model(tmp_path / "neg" / "Tiny-Reward", tiny_model, sign=-1.0)
    margins = []
    for model in (hf, negated):
        proc = _cli("eval", "--ckpt_dir", model, "--val_dataset", data / "pairs.jsonl", "--template", "smollm2",
                    cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert not (model / "eval_result").exists()
        result = sorted((tmp_path / "eval_result").iterdir())[-1]
        metrics = json.loads((result / "metrics.json").read_text())
        assert metrics["backend"] == "reward"
        margins.append(metrics["models"]["Tiny-Reward"]["margin"])
    assert margins[0] != 0 and margins[1] == pytest.approx(-margins[0], abs=1e-5)
    proc = _cli("eval", "--ckpt_dir", hf, "--val_dataset", data / "pairs.jsonl", cwd=tmp_path)
    assert proc.returncode == 1 and "pass --template NAME" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_center_rewards_coefficient_adds_its_penalty_to_the_reward_loss(tiny_model, data, tmp_path):
    """ms-swift's and TRL's --center_rewards_coefficient: the loss gains c * (r_chosen + r_rejected)^2. At learning
    rate 0 both runs see the same rewards, so the logged losses differ by exactly that (one pair a step)."""
    import swiftlike

    def first_step(name, **kw):
        run = swiftlike.rlhf(_args(tiny_model, tmp_path / name, rlhf_type="rm", dataset=str(data / "pairs.jsonl"),
                                   learning_rate=0.0, max_steps=1, per_device_train_batch_size=1, **kw))
        return next(r for r in _logs(run["run_dir"]) if "mean_reward" in r)

    plain, centred = first_step("plain"), first_step("centred", center_rewards_coefficient=5.0)
    assert centred["mean_reward"] == pytest.approx(plain["mean_reward"], abs=1e-6)
    penalty = 5.0 * (2 * plain["mean_reward"]) ** 2
    assert penalty > 1e-4 and centred["loss"] - plain["loss"] == pytest.approx(penalty, rel=1e-3, abs=1e-5)


def test_eval_ranks_preference_pairs_with_a_reward_model(tiny_model, data, tmp_path, reward_model):
    """`swiftlike eval --ckpt_dir RM`: each answer scored as the trainer scores it (the sft template's tokens, the
    head at the last token) — the same numbers as scoring each sequence alone — for pairs in any preference format;
    accuracy = the share whose chosen answer scores higher, recorded in the checkpoint."""
    from swiftlike.templates import get_template
    from swiftlike.train.rlhf.encode import encode_answer
    from swiftlike.train.rlhf.reward_model import load_reward_model

    ckpt = reward_model["last_checkpoint"]
    rows = [json.loads(line) for line in (data / "pairs.jsonl").read_text().splitlines()][:4]
    trl = tmp_path / "trl.jsonl"  # the same pairs as TRL writes them, two swapped so that some must rank wrong
    trl.write_text("\n".join(json.dumps({"prompt": r["messages"][:-1], "chosen": [r["messages"][-1]] if i < 2 else
                                          [{"role": "assistant", "content": r["rejected_response"]}],
                                          "rejected": [{"role": "assistant", "content": r["rejected_response"]}]
                                          if i < 2 else [r["messages"][-1]]}) for i, r in enumerate(rows)))
    proc = _cli("eval", "--ckpt_dir", ckpt, "--val_dataset", data / "pairs.jsonl", trl, "--max_batch_size", 3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = next((ckpt / "eval_result").iterdir())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "reward"
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    model, tok = load_reward_model(ckpt)
    template = get_template("smollm2", tok, loss_mode="last_round")

    def alone(messages, answer):
        prompt, ids = encode_answer(template, messages, answer)
        with torch.no_grad():
            return model(input_ids=torch.tensor([prompt + ids])).logits[0, 0].item()

    assert len(predictions) == len((data / "pairs.jsonl").read_text().splitlines()) + len(rows)
    for p in predictions:
        got = p["scores"][ckpt.name]
        assert got["chosen"] == pytest.approx(alone(p["prompt"], p["chosen"]), abs=1e-4)
        assert got["rejected"] == pytest.approx(alone(p["prompt"], p["rejected"]), abs=1e-4)
    right = [p["scores"][ckpt.name]["chosen"] > p["scores"][ckpt.name]["rejected"] for p in predictions]
    result = metrics["models"][ckpt.name]
    assert result["pairs"] == len(predictions) and result["accuracy"] == pytest.approx(sum(right) / len(right))
    assert result[f"accuracy[{trl}]"] == pytest.approx(sum(right[-4:]) / 4)
    assert f"accuracy[{trl}]" in proc.stdout and "accuracy" in proc.stdout
    recorded = json.loads((ckpt / "swiftlike.json").read_text())["evaluations"][-1]
    assert recorded["backend"] == "reward" and recorded["metrics"]["accuracy"] == result["accuracy"]


def test_eval_of_a_reward_model_refuses_what_it_cannot_rank(tiny_model, data, tmp_path, reward_model):
    from swiftlike.eval import EvalArguments
    from swiftlike.eval.plan import make_plan
    from swiftlike.registry import SwiftlikeError

    ckpt = str(reward_model["last_checkpoint"])
    proc = _cli("eval", "--ckpt_dir", ckpt, "--val_dataset", IDENTITY, "--output_dir", tmp_path / "out")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "identity.jsonl" in proc.stderr and "rejected" in proc.stderr and not (tmp_path / "out").exists()
    from swiftlike.data import DatasetError
    from swiftlike.eval.reward import read_pairs

    bad = tmp_path / "bad.jsonl"  # one bad pair among good ones: listed, with no --skip_bad_rows eval lacks
    bad.write_text((data / "pairs.jsonl").read_text() + "\n" + json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}],
         "rejected_response": "a"}))
    with pytest.raises(DatasetError) as info:
        read_pairs([str(bad)])
    assert "fix them (eval ranks every pair given)" in str(info.value) and "--skip_bad_rows" not in str(info.value)
    assert f"{bad}:9: chosen and rejected answers are identical" in str(info.value)
    sft = tmp_path / "sft"
    import swiftlike

    sft_ckpt = swiftlike.sft(model=str(tiny_model), template="smollm2", dataset=str(IDENTITY), output_dir=str(sft),
                             max_steps=1, per_device_train_batch_size=2, report_to=["none"], lora_rank=4,
                             lora_alpha=8)["last_checkpoint"]
    with pytest.raises(SwiftlikeError, match="not a reward model"):
        make_plan(EvalArguments(adapters=[ckpt, str(sft_ckpt)], val_dataset=[str(data / "pairs.jsonl")]))
    with pytest.raises(SwiftlikeError, match="lm_eval"):
        make_plan(EvalArguments(ckpt_dir=ckpt, eval_backend="lm_eval", tasks=["mmlu"]))
    # loading its body as a language model would generate text with the score head dropped: refused in one line
    for command in (["infer", "--ckpt_dir", ckpt, "--query", "hi"],
                    ["merge-lora", "--ckpt_dir", ckpt, "--output_dir", tmp_path / "merged"]):
        proc = _cli(*command)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "a reward model (--rlhf_type rm) scores answers" in proc.stderr and "swiftlike eval" in proc.stderr
    assert not (tmp_path / "merged").exists()
    from swiftlike.infer.lora import lora_config

    with pytest.raises(SwiftlikeError, match="reward model .* cannot be served"):
        lora_config(Path(ckpt))


def test_builtin_rewards():
    """accuracy: the solution as the answer or, for a number, as a whole number in it; format: a regex over the whole
    answer; length: 1 at the target word count."""
    from swiftlike.train.rlhf.rewards import accuracy, format_reward, length

    answers = ["3", "It is 3.", "x = 3, done", "-3", "1e3", "3/4", "3,000", "3.5", "13", "33", "no"]
    assert accuracy(answers, solution="3") == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert accuracy(["It is -3.", "3", "-3.5"], solution="-3") == [1, 0, 0]
    assert accuracy(["Paris, of course", "paris", "Rome"], solution="Paris") == [1, 1, 0]
    assert accuracy(["3"], solution=None) == [0]
    assert format_reward(["<a>1</a>", "1"], pattern=r"<a>\d</a>") == [1, 0]
    # ms-swift's GRPO examples: the R1 format by default, and a marked final answer judged on its own
    r1 = "<think>\n29 + 45\n</think>\n<answer>\\boxed{74}</answer>"
    assert format_reward([r1, "junk words", "<answer>74</answer>"]) == [1, 0, 0]
    assert accuracy([r1, "<answer>74.0</answer>", "\\boxed{\\frac{1}{2}} not 74", "<answer>7</answer> 74"],
                    solution=["We add: $\\boxed{74}$"] * 4) == [1, 1, 0, 0]
    assert accuracy(["\\boxed{\\frac{1}{2}}"], solution=["\\frac{1}{2}"]) == [1]
    assert length(["one two", "one two three four", ""], target=2) == [1, 0, 0]


def test_grpo_with_a_plugin_reward(tiny_model, data, tmp_path, plugins):
    import swiftlike

    class Rewards:
        @swiftlike.hookimpl
        def register_rewards(self, register):
            register("short", func=lambda completions, **kw: [1.0 / (1 + len(c)) for c in completions],
                     summary="shorter is better")

    plugins.add(Rewards(), "reward-pack")
    result = swiftlike.rlhf(_args(tiny_model, tmp_path, rlhf_type="grpo", dataset=str(data / "sums.jsonl"),
                                  reward_funcs=["accuracy", "short"], num_generations=2, max_completion_length=6))
    rows = _logs(result["run_dir"])
    assert any("rewards/short/mean" in r and "rewards/accuracy/mean" in r for r in rows)
    manifest = json.loads((result["last_checkpoint"] / "swiftlike.json").read_text())
    assert manifest["reward_funcs"] == ["accuracy", "short"] and manifest["reference"] == "base (adapter disabled)"


def test_pretraining_lowers_held_out_perplexity(tiny_model, tmp_path):
    import swiftlike
    from swiftlike.infer import load_checkpoint

    lines = [f"The {c} robot {v} the {o} every morning." for c in ("red", "blue", "green", "small")
             for v in ("paints", "cleans", "moves") for o in ("box", "door", "wall")]
    (tmp_path / "corpus.txt").write_text("\n".join(lines[:-4]))
    held = lines[-4:]

    def perplexity(model, tok):
        total, count = 0.0, 0
        for text in held:
            ids = torch.tensor([tok(text).input_ids + [tok.eos_token_id]])
            with torch.no_grad():
                total += model(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
        return math.exp(total / count)

    base = load_checkpoint(None, model=str(tiny_model), template="smollm2")
    before = perplexity(base.model, base.tokenizer)
    result = swiftlike.pt(model=str(tiny_model), template="smollm2", dataset=str(tmp_path / "corpus.txt"),
                          output_dir=str(tmp_path / "out"), max_steps=30, per_device_train_batch_size=4,
                          learning_rate=2e-2, report_to=["none"], max_length=64, train_type="full")
    trained = load_checkpoint(result["last_checkpoint"])
    after = perplexity(trained.model, trained.tokenizer)
    assert after < 0.5 * before, (before, after)
    assert json.loads((result["last_checkpoint"] / "swiftlike.json").read_text())["stage"] == "pt"


def test_pt_packs_documents_apart(tiny_model, tmp_path):
    """Documents are packed into --max_length blocks, each keeping its own positions (the padding-free path)."""
    from swiftlike.train.arguments import PtArguments
    from swiftlike.train.pt import PtRecipe

    (tmp_path / "c.txt").write_text("\n".join(["one two three four five"] * 6 + ["word " * 80]))
    recipe = PtRecipe(PtArguments(model=str(tiny_model), template="smollm2", dataset=str(tmp_path / "c.txt"),
                                  max_length=32, truncation_strategy="split", output_dir=str(tmp_path / "o")))
    recipe.check()
    recipe.resolve()
    recipe.setup_tokenizer()
    recipe.setup_data()
    bins = recipe.train_data
    assert all(sum(len(s["input_ids"]) for s in b) <= 32 for b in bins)
    pieces = [s for b in bins for s in b]
    assert len(pieces) == 6 + 3  # the 81-token document split into 32 + 32 + 17
    batch = recipe.collator()(bins[:1])
    starts = (batch["position_ids"][0] == 0).sum().item()
    assert starts == len(bins[0]) and batch["labels"][0, 0] == -100


@pytest.mark.parametrize("flags, message", [
    (["--rlhf_type", "dpoo"], "--rlhf_type 'dpoo': use dpo, kto, orpo, simpo, cpo, rm, ppo, grpo (did you mean dpo?)"),
    (["--rlhf_type", "grpo"], "--rlhf_type grpo needs --reward_funcs"),
    (["--rlhf_type", "grpo", "--reward_funcs", "acuracy"], "unknown reward 'acuracy'; did you mean accuracy"),
    (["--rlhf_type", "ppo"], "--rlhf_type ppo needs --reward_model"),
    (["--rlhf_type", "ppo", "--reward_model", "{ckpt}"], "not a reward model"),
    (["--rlhf_type", "dpo", "--dataset", "{sft}"], "not a preference row (keys: messages): no rejected answer"),
    (["--rlhf_type", "dpo", "--loss_type", "sigmod"], "--loss_type 'sigmod': --rlhf_type dpo takes sigmoid, ipo"),
    (["--rlhf_type", "ppo", "--reward_model", "{ckpt}", "--resume_from_checkpoint", "last"], "cannot resume"),
    (["--rlhf_type", "ppo", "--reward_model", "a/b", "c/d"], "--reward_model: PPO trains against one reward model, "
                                                             "not 2"),
    (["--rlhf_type", "grpo", "--reward_model", "{ckpt}"], "not a reward model"),
    (["--rlhf_type", "grpo", "--reward_model", "./nowhere"], "--reward_model ./nowhere: no such directory"),
])
def test_bad_input_is_one_line_before_anything_loads(tiny_model, data, tmp_path, flags, message):
    ckpt = tmp_path / "not-rm"
    ckpt.mkdir()
    (ckpt / "adapter_config.json").write_text("{}")
    flags = [f.format(ckpt=ckpt, sft=IDENTITY) for f in flags]
    dataset = [] if "--dataset" in flags else ["--dataset", data / "pairs.jsonl"]
    proc = _cli("rlhf", "--model", tiny_model, "--template", "smollm2", *dataset, "--output_dir", tmp_path / "out",
                *flags)
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options, message", [
    (dict(rlhf_type="dpo", loss_type=["sigmoid", "hinj"]), "--loss_type 'hinj': --rlhf_type dpo takes sigmoid, ipo, "
                                                           "hinge"),
    (dict(rlhf_type="dpo", loss_type=["hinge"]), None),
    (dict(rlhf_type="kto", loss_type=["sigmoid"]), "--rlhf_type kto takes kto, apo_zero_unpaired"),
    (dict(rlhf_type="cpo", loss_type=["sigmoid", "hinge"]), "only DPO adds several losses up"),
    (dict(rlhf_type="orpo", loss_type=["sigmoid"]), "--rlhf_type orpo has one loss and takes no --loss_type"),
    (dict(rlhf_type="grpo", loss_type=["grpo"]), None),
    (dict(rlhf_type="grpo", num_generations=3), "--num_generations 3: GRPO compares 2 or more answers per prompt, "
                                                "and a generation batch (per-device batch x gradient accumulation "
                                                "x processes = 4) holds whole groups"),
    (dict(rlhf_type="grpo", num_generations=1), "--num_generations 1"),
    (dict(rlhf_type="grpo", temperature=0.0), "--temperature 0: GRPO and PPO sample their answers"),
    (dict(rlhf_type="grpo", reward_format="("), "--reward_format '(': not a regular expression"),
    (dict(rlhf_type="grpo", reward_funcs=["accuracy"], reward_model=["org/rm"], reward_weights=[1.0]),
     "--reward_weights: 1 weight(s) for 2 --reward_funcs and --reward_model"),
    (dict(rlhf_type="grpo", reward_funcs=["accuracy"], reward_model=["org/rm"], reward_weights=[1.0, 0.3]), None),
    (dict(rlhf_type="grpo", reward_model=["a/b", "c/d", "e/f"], reward_template=["x", "y"]),
     "--reward_template: 2 templates for 3 --reward_model"),
    (dict(rlhf_type="dpo", ref_model="/nonexistent/m"), "--ref_model /nonexistent/m: no such directory"),
    (dict(rlhf_type="dpo", truncation_strategy="bogus"), "--truncation_strategy 'bogus': rlhf takes delete"),
    (dict(rlhf_type="dpo", adapters=["sft/ckpt"], ref_adapters=["sft/ckpt/"]), None),  # ms-swift's sft -> dpo
    (dict(rlhf_type="dpo", adapters=["sft/ckpt"], ref_adapters=["other"]), "--ref_adapters other: the reference is"),
    (dict(rlhf_type="rm", rm_type="implicit", beta=0.2), None),
    (dict(rlhf_type="rm", rm_type="scores"), "--rm_type 'scores': score (a score head) or implicit"),
    (dict(rlhf_type="rm", rm_type="implicit", train_type="full"), "--rm_type implicit: its reward is measured "
                                                                  "against the base with the adapter disabled"),
    (dict(rlhf_type="rm", rm_type="implicit", rpo_alpha=1.0), "--rpo_alpha: --rm_type implicit trains the pairwise"),
    (dict(rlhf_type="rm", rm_type="implicit", adapters=["sft/ckpt"]), "merge that adapter first"),
])
def test_stage_options_are_checked_before_anything_loads(options, message):
    """What TRL refuses only once the model is loaded (or mid-training, in its own words), refused up front."""
    from swiftlike.registry import SwiftlikeError
    from swiftlike.train.rlhf.arguments import RlhfArguments

    args = RlhfArguments(**{"per_device_train_batch_size": 4, **options})
    if message is None:
        args.check_stage_options()
        return
    with pytest.raises(SwiftlikeError) as info:
        args.check_stage_options()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_kto_trains_one_row_a_step(tiny_model, data, tmp_path):
    """ms-swift's and LLaMA-Factory's KTO examples train one row a step (batch 1, gradient accumulation); TRL refuses
    it (its KL answers are rotated within a batch), swiftlike rotates them over the data instead."""
    import swiftlike

    out = swiftlike.rlhf(_args(tiny_model, tmp_path, rlhf_type="kto", dataset=str(data / "kto.jsonl"),
                               per_device_train_batch_size=1, gradient_accumulation_steps=2, max_steps=2))
    rows = _logs(out["run_dir"])
    assert any("kl" in r for r in rows) and out["metrics"]["train_loss"] > 0
    trained = torch.load(out["last_checkpoint"] / "training_args.bin", weights_only=False)
    assert trained.per_device_train_batch_size == 1
    assert json.loads((out["last_checkpoint"] / "trainer_state.json").read_text())["train_batch_size"] == 1


def test_options_of_another_stage_are_named(caplog):
    """ms-swift scripts carry options other stages read (--top_p for PPO, --beta for a reward model): named in one
    note, not silently dropped; a stage's own options and defaults say nothing."""
    from swiftlike.train.rlhf.arguments import RlhfArguments

    with caplog.at_level("WARNING", logger="swiftlike"):
        RlhfArguments(rlhf_type="ppo", top_p=0.9, top_k=5, cliprange=0.3).check_stage_options()
        RlhfArguments(rlhf_type="rm", beta=0.2).check_stage_options()
        RlhfArguments(rlhf_type="grpo", top_p=0.9, num_generations=2).check_stage_options()
    assert [r.getMessage() for r in caplog.records] == [
        "note: --top_k, --top_p do not apply to --rlhf_type ppo; ignored",
        "note: --beta does not apply to --rlhf_type rm; ignored"]


def test_rows_over_max_length_are_dropped_and_counted(tiny_model, data, tmp_path, capsys):
    """--truncation_strategy delete (the default) drops a pair over --max_length and says how many, as sft does;
    one long row no longer stops the run."""
    import swiftlike

    rows = [json.loads(line) for line in (data / "pairs.jsonl").read_text().splitlines()]
    rows.append({**rows[0], "rejected_response": "word " * 300})
    (tmp_path / "long.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = swiftlike.rlhf(_args(tiny_model, tmp_path / "o", rlhf_type="dpo", dataset=str(tmp_path / "long.jsonl"),
                               max_steps=1))
    assert (out["last_checkpoint"] / "adapter_model.safetensors").exists()
    printed = capsys.readouterr().out
    assert f"dropped 1 of {len(rows)} training row(s) over --max_length 256; first: {tmp_path / 'long.jsonl'}:" \
           f"{len(rows)}: prompt and answer are" in printed


def test_simpo_nll_term_and_grpo_loss_type_reach_trl(tiny_model, data, tmp_path):
    """An explicit --cpo_alpha 1.0 gives SimPO its NLL term (it was read as "not given" and zeroed), and GRPO's
    --loss_type reaches TRL (TRL's dapo ran whatever was asked)."""
    from swiftlike.train.rlhf import recipe_for

    simpo = recipe_for(_args(tiny_model, tmp_path, rlhf_type="simpo", cpo_alpha=1.0))
    assert simpo.stage_options()["cpo_alpha"] == 1.0
    assert recipe_for(_args(tiny_model, tmp_path, rlhf_type="simpo")).stage_options()["cpo_alpha"] == 0.0
    assert recipe_for(_args(tiny_model, tmp_path, rlhf_type="cpo")).stage_options()["cpo_alpha"] == 1.0
    grpo = recipe_for(_args(tiny_model, tmp_path, rlhf_type="grpo", loss_type=["grpo"], reward_funcs=["length"]))
    assert grpo.stage_options()["loss_type"] == "grpo"
    # ms-swift's GRPO and DPO knobs reach TRL's configs
    grpo = recipe_for(_args(tiny_model, tmp_path, rlhf_type="grpo", reward_funcs=["length", "format"],
                            reward_weights=["0.5", "2"], epsilon=0.1, epsilon_high=0.3, scale_rewards="batch",
                            num_iterations=2, top_p=0.9, top_k=20, repetition_penalty=1.1, log_completions=True,
                            importance_sampling_level="sequence", mask_truncated_completions=True))
    options = grpo.stage_options()
    assert {k: options[k] for k in ("reward_weights", "epsilon", "epsilon_high", "scale_rewards", "num_iterations",
                                    "top_p", "top_k", "repetition_penalty", "log_completions",
                                    "importance_sampling_level", "mask_truncated_completions")} == dict(
        reward_weights=[0.5, 2.0], epsilon=0.1, epsilon_high=0.3, scale_rewards="batch", num_iterations=2, top_p=0.9,
        top_k=20, repetition_penalty=1.1, log_completions=True, importance_sampling_level="sequence",
        mask_truncated_completions=True)
    mpo = recipe_for(_args(tiny_model, tmp_path, rlhf_type="dpo", loss_type=["sigmoid", "bco_pair", "sft"],
                           loss_weights=["0.8", "0.2", "1.0"], ld_alpha=0.5, discopop_tau=0.1)).stage_options()
    assert (mpo["loss_type"], mpo["loss_weights"]) == (["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0])
    assert (mpo["ld_alpha"], mpo["discopop_tau"]) == (0.5, 0.1)
    from swiftlike.registry import SwiftlikeError

    with pytest.raises(SwiftlikeError, match="--loss_weights: 2 weight"):
        _args(tiny_model, tmp_path, rlhf_type="dpo", loss_weights=["1", "2"]).check_stage_options()


def test_adapters_from_another_base_are_refused(tiny_model, data, tmp_path, tokenizer_dir):
    from tiny import make_tiny_model

    import swiftlike

    other = make_tiny_model(tmp_path / "tiny-llama", tokenizer_dir, seed=7)
    sft = swiftlike.sft(model=str(other), template="smollm2", dataset=str(IDENTITY), output_dir=str(tmp_path / "s"),
                        max_steps=1, per_device_train_batch_size=2, report_to=["none"])
    proc = _cli("rlhf", "--rlhf_type", "dpo", "--model", tiny_model, "--template", "smollm2", "--dataset",
                data / "pairs.jsonl", "--adapters", sft["last_checkpoint"], "--output_dir", tmp_path / "out")
    assert proc.returncode == 1 and "other tiny-llama weights" in proc.stderr, proc.stderr
    assert "--force" not in proc.stderr  # rlhf has no --force
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_reward_model_on_another_base_is_refused(tiny_model, data, tmp_path, tokenizer_dir, reward_model):
    """A reward model's score head reads its own base's features: PPO and eval refuse it on other weights (both
    scored silently before, eval at chance)."""
    from tiny import make_tiny_model

    other = make_tiny_model(tmp_path / "tiny-llama", tokenizer_dir, seed=7)
    rm = reward_model["last_checkpoint"]
    proc = _cli("rlhf", "--rlhf_type", "ppo", "--model", other, "--template", "smollm2", "--dataset",
                data / "sums.jsonl", "--reward_model", rm, "--output_dir", tmp_path / "out")
    assert proc.returncode == 1 and f"--reward_model {rm} was trained on other tiny-llama weights" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists(), proc.stderr
    proc = _cli("eval", "--ckpt_dir", rm, "--model", other, "--val_dataset", data / "pairs.jsonl",
                "--output_dir", tmp_path / "ev")
    assert proc.returncode == 1 and "reward model was trained on other tiny-llama weights" in proc.stderr, proc.stderr
    assert "(or pass --force)" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = _cli("eval", "--ckpt_dir", rm, "--model", other, "--val_dataset", data / "pairs.jsonl",
                "--output_dir", tmp_path / "ev", "--force")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_dpo_resumes_after_kill_to_the_same_adapter(tiny_model, data, tmp_path):
    common = ["rlhf", "--rlhf_type", "dpo", "--model", tiny_model, "--template", "smollm2", "--dataset",
              data / "pairs.jsonl", "--max_steps", "6", "--per_device_train_batch_size", "2", "--learning_rate",
              "5e-3", "--save_steps", "2", "--save_total_limit", "10", "--report_to", "none",
              "--add_output_dir_suffix", "false"]
    proc = _cli(*common, "--output_dir", tmp_path / "full")
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-m", "swiftlike", *map(str, common), "--output_dir", str(killed)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 180
    while not (killed / "checkpoint-2" / "swiftlike.json").exists():
        assert child.poll() is None and time.time() < deadline, "run ended before a checkpoint could be killed"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    proc = _cli(*common, "--output_dir", killed, "--resume_from_checkpoint", "last")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_file(tmp_path / "full" / "checkpoint-6" / "adapter_model.safetensors")
    b = load_file(killed / "checkpoint-6" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    # a merged model beside the checkpoints is not one: resume and rotation leave it alone (transformers' rotation
    # counted `checkpoint-6-merged` as checkpoint 6 and deleted it)
    assert _cli("merge-lora", "--ckpt_dir", killed / "checkpoint-6").returncode == 0
    args_before = (killed / "args.json").read_text()
    proc = _cli(*[c if c != "dpo" else "kto" for c in common], "--output_dir", killed, "--resume_from_checkpoint",
                "last")
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "is a `swiftlike rlhf --rlhf_type dpo` checkpoint; resume it with that command" in proc.stderr
    assert (killed / "args.json").read_text() == args_before
    more = [c if c not in ("6", "10") else {"6": "8", "10": "2"}[c] for c in common]
    proc = _cli(*more, "--output_dir", killed, "--resume_from_checkpoint", "last")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-6-merged",
                                                                  "checkpoint-8"]


@pytest.mark.parametrize("rlhf_type, dataset", [("dpo", "pairs"), ("orpo", "pairs"), ("kto", "kto"), ("rm", "pairs"),
                                                ("grpo", "sums")])
def test_trl_stages_keep_gradient_checkpointing_as_asked(tiny_model, data, tmp_path, rlhf_type, dataset):
    """TRL's configs default to gradient checkpointing on; swiftlike's --gradient_checkpointing (off by default)
    decides, so a stage never silently recomputes every forward — under the option's name this transformers
    knows, so no deprecation warning is printed on every run."""
    import warnings

    from swiftlike.train.rlhf import recipe_for

    for asked in (False, True):
        extra = {"reward_funcs": ["accuracy"], "num_generations": 2, "max_completion_length": 4} \
            if rlhf_type == "grpo" else {}
        recipe = recipe_for(_args(tiny_model, tmp_path / str(asked), rlhf_type=rlhf_type,
                                  dataset=str(data / f"{dataset}.jsonl"), gradient_checkpointing=asked, **extra))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            for phase in ("check", "resolve", "setup_tokenizer", "setup_data", "setup_output", "setup_model",
                          "setup_trainer"):
                getattr(recipe, phase)()
        assert not [str(w.message) for w in seen if str(w.message).startswith("`gradient_checkpointing")]
        assert recipe.trainer.args.gradient_checkpointing is asked
        recipe.discard_output()


@pytest.mark.parametrize("stage, dataset, metric", [("dpo", "dpo_sharegpt,dpo_demo", "rewards/margins"),
                                                    ("kto", "kto_demo", "kl")])
def test_llamafactory_preference_yaml_with_its_dataset_info(tiny_model, tmp_path, stage, dataset, metric):
    """LLaMA-Factory's dpo/kto YAMLs name `ranking: true` / `kto_tag` entries of its dataset_info.json."""
    out = tmp_path / "saves"
    yaml = tmp_path / f"{stage}.yaml"
    yaml.write_text(f"model_name_or_path: {tiny_model}\nstage: {stage}\ndo_train: true\nfinetuning_type: lora\n"
                    f"lora_target: all\npref_beta: 0.1\ndataset: {dataset}\ndataset_dir: "
                    f"{Path(__file__).parent / 'data' / 'lf'}\ntemplate: smollm2\ncutoff_len: 256\nmax_samples: 1000\n"
                    f"output_dir: {out}\nlogging_steps: 1\nper_device_train_batch_size: 2\nmax_steps: 1\n"
                    "learning_rate: 1.0e-4\nreport_to: none\n")
    proc = _cli("rlhf", yaml)
    assert proc.returncode == 0, proc.stderr[-3000:]
    args = json.loads((out / "args.json").read_text())
    assert args["rlhf_type"] == stage and args["max_samples"] == 1000
    # LLaMA-Factory's defaults where swiftlike's differ
    assert (args["lora_alpha"], args["lora_dropout"], args["weight_decay"]) == (16, 0.0, 0.0)
    assert any(metric in row for row in _logs(out))


def test_llamafactory_ppo_yaml_keys():
    """LLaMA-Factory's PPO YAML: max_new_tokens is the completion length; top_k/top_p are named as ignored (TRL's PPO
    samples with the temperature alone), not refused."""
    from swiftlike.train.llamafactory import translate

    out, ignored = translate({"stage": "ppo", "model_name_or_path": "m", "reward_model": "saves/rm",
                              "finetuning_type": "lora", "max_new_tokens": 512, "top_k": 0, "top_p": 0.9},
                             source="ppo.yaml", stages=("dpo",))
    assert (out["rlhf_type"], out["max_completion_length"], out["reward_model"]) == ("ppo", 512, "saves/rm")
    assert {"top_k", "top_p"} <= set(ignored) and "top_p" not in out


def test_llamafactory_freeze_keys():
    """freeze_trainable_modules: all (LLaMA-Factory's default) is what swiftlike's freeze does; another value, and
    use_llama_pro (a model LLaMA-Factory's script expanded beforehand), are one line saying what to run instead."""
    from swiftlike.registry import SwiftlikeError
    from swiftlike.train.llamafactory import translate

    base = {"stage": "sft", "model_name_or_path": "m", "finetuning_type": "freeze", "freeze_trainable_layers": 2}
    out, _ = translate({**base, "freeze_trainable_modules": "all", "use_llama_pro": False}, source="f.yaml")
    assert (out["train_type"], out["trainable_layers"]) == ("freeze", 2)
    with pytest.raises(SwiftlikeError, match="freeze_trainable_modules 'mlp': swiftlike's freeze trains whole layers"):
        translate({**base, "freeze_trainable_modules": "mlp"}, source="f.yaml")
    with pytest.raises(SwiftlikeError, match="swiftlike plugin install llama-pro"):
        translate({**base, "use_llama_pro": True}, source="f.yaml")

