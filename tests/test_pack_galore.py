"""The swiftlike-galore pack (packs/swiftlike-galore): galore-torch's optimizers, built by the pack with the Trainer's
AdamW settings, train every parameter, lower the loss and save the whole model; without galore-torch it is refused
before the model loads."""
import json
import math

import pytest

from swiftlike.registry import SwiftlikeError
from test_pack_peft_tuners import DATA, _loss



@pytest.fixture
def pack(load_pack):
    return load_pack("swiftlike-galore")


def _args(model, out, **kw):
    from swiftlike.train.arguments import SftArguments

    return SftArguments(**{**dict(model=str(model), template="smollm2", dataset=[str(DATA)], output_dir=str(out),
                                  max_steps=8, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1,
                                  max_length=128, report_to=["none"], warmup_ratio=0.0, train_type="galore",
                                  weight_decay=0.1, tuner_args='{"rank": 4, "update_proj_gap": 4, "scale": 0.25}'),
                                  **kw})


def test_trains_every_parameter_with_the_galore_optimizer(pack, tiny_model, tmp_path):
    pytest.importorskip("galore_torch", reason="galore-torch is in the test extra (pip install -e .[test])")
    from swiftlike.infer import load_checkpoint
    from swiftlike.train.sft import SftRecipe

    recipe = SftRecipe(_args(tiny_model, tmp_path / "runs"))
    ckpt = recipe.run()["last_checkpoint"]
    optimizer = getattr(recipe.trainer.optimizer, "optimizer", recipe.trainer.optimizer)  # accelerate's wrapper
    assert type(optimizer).__module__.startswith("galore_torch")
    projected = [g for g in optimizer.param_groups if "rank" in g]
    assert len(projected) == 1 and len(projected[0]["params"]) == 14  # 7 linears x 2 layers
    assert {k: projected[0][k] for k in ("rank", "update_proj_gap", "scale", "proj_type")} == {
        "rank": 4, "update_proj_gap": 4, "scale": 0.25, "proj_type": "std"}
    # the Trainer's AdamW settings, not galore-torch's own defaults (eps 1e-6, which transformers' galore_* leaves)
    assert {(g["eps"], g["betas"]) for g in optimizer.param_groups} == {(1e-8, (0.9, 0.999))}
    # weight decay (0.1) on the projected matrices and the other weights, none on the norms
    decay = {g["weight_decay"]: g["params"] for g in optimizer.param_groups if "rank" not in g}
    norms = {id(p) for n, p in recipe.trainer.model.named_parameters() if "norm" in n}
    assert projected[0]["weight_decay"] == 0.1 and {id(p) for p in decay[0.0]} == norms
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(recipe.trainer.model.parameters()))
    assert recipe.trainable == recipe.total
    saved = json.loads((ckpt / "args.json").read_text())
    assert saved["train_type"] == "galore"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    assert (ckpt / "model.safetensors").exists() and not (ckpt / "adapter_config.json").exists()

    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    trained = load_checkpoint(ckpt)
    base = load_checkpoint(None, model=str(tiny_model), template="smollm2")
    assert _loss(trained.model, trained.template, rows) < _loss(base.model, base.template, rows) - 0.02


def test_trainer_options(pack, tiny_model):
    from swiftlike_galore.options import ALL_LINEAR, trainer_options

    opts = trainer_options(_args(tiny_model, "unused"))
    assert opts == {"optim": "galore_adamw", "optim_target_modules": ALL_LINEAR,
                    "optim_args": "rank=4,update_proj_gap=4,scale=0.25"}
    opts = trainer_options(_args(tiny_model, "unused", target_modules=["q_proj", "v_proj"],
                                 tuner_args='{"optim": "galore_adafactor"}'))
    assert opts == {"optim": "galore_adafactor", "optim_target_modules": ["q_proj", "v_proj"], "optim_args": "rank=128"}


def test_layerwise_steps_each_parameter_in_its_gradient_hook(pack, tiny_model, tmp_path):
    pytest.importorskip("galore_torch", reason="galore-torch is in the test extra (pip install -e .[test])")
    from galore_torch import GaLoreAdamW
    from transformers.trainer_pt_utils import LayerWiseDummyOptimizer

    from swiftlike.train.sft import SftRecipe

    args = _args(tiny_model, tmp_path / "runs", max_steps=4,
                 tuner_args='{"optim": "galore_adamw_layerwise", "rank": 4, "update_proj_gap": 4}')
    recipe = SftRecipe(args)
    recipe.run()
    optimizer = getattr(recipe.trainer.optimizer, "optimizer", recipe.trainer.optimizer)
    assert isinstance(optimizer, LayerWiseDummyOptimizer)
    per_param = list(optimizer.optimizer_dict.values())
    assert len(per_param) == len(list(recipe.trainer.model.parameters()))
    assert all(isinstance(o, GaLoreAdamW) and o.param_groups[0]["eps"] == 1e-8 for o in per_param)
    assert sum("rank" in o.param_groups[0] for o in per_param) == 14
    # each per-parameter optimizer stepped (its state exists) at the scheduled learning rate: the last step's
    # (cosine, 4 steps, no warmup) — transformers' own galore_*_layerwise keeps the first, unscheduled
    assert all(o.state for o in per_param)
    last = args.learning_rate * 0.5 * (1 + math.cos(math.pi * 3 / 4))
    assert all(o.param_groups[0]["lr"] == pytest.approx(last) for o in per_param)


def test_layerwise_refuses_gradient_accumulation(pack, tmp_path):
    from swiftlike.train.sft import sft

    with pytest.raises(SwiftlikeError, match="needs --gradient_accumulation_steps 1"):
        sft(_args(tmp_path / "no-such-model", tmp_path / "runs", gradient_accumulation_steps=2,
                  tuner_args='{"optim": "galore_adamw_layerwise"}'))


@pytest.mark.parametrize("tuner_args, message", [
    ('{"rnak": 4}', r"'rnak' is not an option of galore"),
    ('{"optim": "adamw"}', r"optim 'adamw': one of galore_adamw"),
])
def test_bad_options_refused_before_the_model_loads(pack, tmp_path, tuner_args, message):
    from swiftlike.train.sft import sft

    with pytest.raises(SwiftlikeError, match=message):
        sft(_args(tmp_path / "no-such-model", tmp_path / "runs", tuner_args=tuner_args))
