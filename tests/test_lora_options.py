"""LoRA's options: PEFT's initialisations (PiSSA/OLoRA/CorDA adapters converted for the original base, EVA and
CorDA from the training data), LoRA+, trainable biases, modules_to_save, layers_to_transform, NEFTune; the
ms-swift / LLaMA-Factory spellings; bad input refused in one line before the weights load."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from swiftlike.registry import SwiftlikeError
from swiftlike.train.arguments import SftArguments
from swiftlike.train.sft import SftRecipe, sft

DATA = Path(__file__).parent / "data" / "identity.jsonl"
IDS = torch.tensor([[1, 520, 3035, 346, 47, 2, 1046, 4035]])


def _args(model, out, **kw):
    base = dict(model=str(model), template="smollm2", dataset=[str(DATA)], output_dir=str(out),
                max_steps=4, per_device_train_batch_size=4, learning_rate=5e-3, logging_steps=1,
                max_length=128, report_to=["none"], lora_rank=4, lora_alpha=8, lora_dropout=0.0, warmup_ratio=0.0,
                save_total_limit=1)
    base.update(kw)
    return SftArguments(**base)


def _train(model, out, **kw):
    """The run's recipe, which still holds the trained model."""
    recipe = SftRecipe(_args(model, out, **kw))
    recipe.result_info = recipe.run()
    return recipe


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "logging.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _logits(model):
    model.eval()
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture(scope="module")
def bias_model(tmp_path_factory, tokenizer_dir):
    from tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-bias", tokenizer_dir, layers=3,
                           attention_bias=True)


@pytest.mark.parametrize("init, extra", [
    ("gaussian", {}), ("pissa_niter_2", {}), ("olora", {}), ("corda", {}),
    # EVA runs incremental SVDs over the batches until they settle: one batch of all 8 rows settles at once
    ("eva", {"per_device_train_batch_size": 8}),
])
def test_init_trains_and_the_saved_adapter_applies_to_the_original_base(init, extra, tiny_model, tmp_path):
    from swiftlike.infer import load_checkpoint

    recipe = _train(tiny_model, tmp_path, init_lora_weights=init, **extra)
    run, ckpt = recipe.result_info["run_dir"], recipe.result_info["last_checkpoint"]
    losses = _losses(run)
    assert losses[-1] < losses[0], losses
    manifest = json.loads((ckpt / "swiftlike.json").read_text())
    assert manifest["tuner_config"]["init_lora_weights"] == init
    saved = json.loads((ckpt / "adapter_config.json").read_text())
    if init in ("pissa_niter_2", "olora", "corda"):
        # B A - B0 A0 as a plain LoRA of twice the rank, on the unmodified base
        assert saved["init_lora_weights"] is True and saved["r"] == 8
        assert manifest["tuner_config"]["saved_as"]["r"] == 8
    if init == "eva":
        assert saved["eva_config"]["rho"] == 2.0
    trained = _logits(recipe.model)
    loaded = load_checkpoint(ckpt)  # the original base from the manifest, plus the saved adapter
    torch.testing.assert_close(_logits(loaded.model), trained, atol=2e-4, rtol=1e-4)
    if init == "pissa_niter_2":
        from swiftlike.infer.lora import lora_config
        from swiftlike.merge import merge_lora

        lora_config(ckpt)  # serve's batched engine takes it: a plain LoRA
        merged = load_checkpoint(merge_lora(ckpt, tmp_path / "merged"))
        torch.testing.assert_close(_logits(merged.model), trained, atol=2e-4, rtol=1e-4)


def test_loraplus_gives_lora_b_the_higher_learning_rate(tiny_model, tmp_path):
    recipe = _train(tiny_model, tmp_path, loraplus_lr_ratio=16.0, max_steps=2)
    model, optimizer = recipe.model, recipe.trainer.optimizer
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    lr_of = {names[id(p)]: g["initial_lr"] for g in optimizer.param_groups for p in g["params"]}
    assert set(lr_of) == set(names.values())
    a = sorted({lr for n, lr in lr_of.items() if "lora_A" in n})
    b = sorted({lr for n, lr in lr_of.items() if "lora_B" in n})
    assert a == [5e-3] and b == [pytest.approx(16 * 5e-3)]
    manifest = json.loads((recipe.result_info["last_checkpoint"] / "swiftlike.json").read_text())
    assert manifest["tuner_config"]["loraplus_lr_ratio"] == 16.0


def test_bias_modules_to_save_and_layers_show_in_training_and_the_adapter(bias_model, tmp_path):
    from swiftlike.infer import load_checkpoint

    recipe = _train(bias_model, tmp_path, lora_bias="all", modules_to_save=["norm"], layers_to_transform=["1"],
                    target_modules=["q_proj", "v_proj"])
    trainable = [n for n, p in recipe.model.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if "lora_" in n]
    assert lora and all(".layers.1." in n for n in lora)
    assert any(n.endswith("q_proj.base_layer.bias") for n in trainable)
    assert any(n.endswith("model.norm.modules_to_save.default.weight") for n in trainable)
    ckpt = recipe.result_info["last_checkpoint"]
    keys = set(load_file(ckpt / "adapter_model.safetensors"))
    assert any(k.endswith("layers.1.self_attn.q_proj.lora_A.weight") for k in keys)
    assert not any(".layers.0." in k and "lora_" in k for k in keys)
    assert any(k.endswith("self_attn.k_proj.bias") for k in keys)  # bias=all: every bias is saved
    assert any(k.endswith("model.norm.weight") for k in keys)
    cfg = json.loads((ckpt / "swiftlike.json").read_text())["tuner_config"]
    assert cfg["bias"] == "all" and cfg["layers_to_transform"] == [1] and cfg["modules_to_save"] == ["norm"]
    torch.testing.assert_close(_logits(load_checkpoint(ckpt).model), _logits(recipe.model), atol=2e-4, rtol=1e-4)
    from swiftlike.infer.lora import lora_config

    with pytest.raises(SwiftlikeError, match="per-row batching cannot run; merge it"):
        lora_config(ckpt)  # serve cannot batch it per row; merge-lora can


class _EmbeddingProbe(SftRecipe):
    """Records, per embedding forward, whether the module was training and whether its output was the plain lookup."""

    def setup_trainer(self):
        from transformers import TrainerCallback

        super().setup_trainer()
        self.seen = []
        recipe = self

        def hook(module, inputs, output):
            clean = torch.nn.functional.embedding(inputs[0], module.weight)
            recipe.seen.append((module.training, not torch.equal(output, clean)))

        class Probe(TrainerCallback):
            def on_train_begin(self, *a, **kw):  # after the Trainer attached NEFTune's hook: this one runs last
                recipe.model.get_input_embeddings().register_forward_hook(hook)

        self.trainer.add_callback(Probe())


@pytest.mark.parametrize("alpha", [None, 5.0])
def test_neftune_noises_embeddings_in_training_only(alpha, tiny_model, tmp_path):
    recipe = _EmbeddingProbe(_args(tiny_model, tmp_path, neftune_noise_alpha=alpha, max_steps=2,
                                   split_dataset_ratio=0.25, eval_steps=1, save_steps=2))
    recipe.run()
    training = [noisy for was_training, noisy in recipe.seen if was_training]
    evaluating = [noisy for was_training, noisy in recipe.seen if not was_training]
    assert training and evaluating
    assert not any(evaluating)
    assert all(training) if alpha else not any(training)


@pytest.mark.parametrize("options, message", [
    (dict(init_lora_weights="pisa"), "--init_lora_weights 'pisa': use one of"),
    (dict(init_lora_weights="loftq"), "needs --loftq_bits 4 or 8"),
    (dict(init_lora_weights="loftq", loftq_bits=4, train_type="full"), "trains no LoRA"),
    (dict(init_lora_weights="loftq", loftq_bits=4), "LoftQ quantises on a CUDA"),
    (dict(init_lora_weights="pissa", use_dora=True), "plain LoRA on a full-precision base"),
    (dict(loraplus_lr_ratio=0.0), "--loraplus_lr_ratio 0.0: lora_B's learning rate"),
    (dict(lora_bias="some"), "--lora_bias 'some'"),
    (dict(layers_to_transform=["2"]), "--layers_to_transform 2: the model has 2 layers (0..1)"),
    (dict(layers_to_transform=["x"]), "give layer indices"),
    (dict(modules_to_save=["embed_tokenz"]), "--modules_to_save embed_tokenz: no such module"),
    (dict(lora_bias="all"), "has no bias parameters"),
    (dict(layers_to_transform=["0"], target_modules=["q_.*"]), "regex --target_modules"),
])
def test_bad_lora_options_fail_in_one_line_before_the_weights_load(options, message, tiny_model, tmp_path):
    with pytest.raises(SwiftlikeError) as err:
        sft(_args(tiny_model, tmp_path / "out", **options))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()  # refused before the run directory (and the weights)


def test_peer_spellings():
    from swiftlike.train.config_files import merge_arguments
    from swiftlike.train.llamafactory import translate

    args, _ = merge_arguments(SftArguments, overrides=["init_weights=olora", "lorap_lr_ratio=4",
                                                       "lora_modules_to_save=embed_tokens", "lora_layers_to_transform=1",
                                                       "lora_bias_trainable=all", "dataset=x.jsonl"])
    assert (args.init_lora_weights, args.loraplus_lr_ratio, args.modules_to_save) == ("olora", 4.0, ["embed_tokens"])
    assert (args.layers_to_transform, args.lora_bias) == (["1"], "all")
    args, _ = merge_arguments(SftArguments, overrides=["lora_lr_ratio=8", "dataset=x.jsonl"])  # ms-swift v2
    assert args.loraplus_lr_ratio == 8.0
    out, _ = translate({"finetuning_type": "lora", "pissa_init": True, "pissa_iter": 8, "pissa_convert": True,
                        "loraplus_lr_ratio": 16, "additional_target": "embed_tokens,norm"}, source="cfg.yaml")
    assert out["init_lora_weights"] == "pissa_niter_8" and out["loraplus_lr_ratio"] == 16
    assert out["modules_to_save"] == "embed_tokens,norm"
    out, _ = translate({"finetuning_type": "lora", "pissa_init": True, "pissa_iter": -1}, source="cfg.yaml")
    assert out["init_lora_weights"] == "pissa"


def test_cli_refuses_an_unknown_init_in_one_line(tiny_model, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "sft", "--model", str(tiny_model), "--dataset",
                           str(DATA), "--output_dir", str(tmp_path), "--init_weights", "pissa_niter_x"],
                          capture_output=True, text=True, env={**os.environ})
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--init_lora_weights 'pissa_niter_x'" in lines[0], proc.stderr
