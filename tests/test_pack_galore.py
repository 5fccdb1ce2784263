"""The swiftlike-galore pack (packs/swiftlike-galore): GaLore through transformers' galore_* optimizers trains every
parameter, lowers the loss and saves the whole model; without galore-torch it is refused before the model loads."""
import json

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
                                  tuner_args='{"rank": 4, "update_proj_gap": 4, "scale": 0.25}'), **kw})


def test_trains_every_parameter_with_the_galore_optimizer(pack, tiny_model, tmp_path):
    pytest.importorskip("galore_torch", reason="galore-torch is in the test extra (pip install -e .[test])")
    from swiftlike.infer import load_checkpoint
    from swiftlike.train.sft import SftRecipe

    recipe = SftRecipe(_args(tiny_model, tmp_path / "runs"))
    ckpt = recipe.run()["last_checkpoint"]
    optimizer = getattr(recipe.trainer.optimizer, "optimizer", recipe.trainer.optimizer)  # accelerate's wrapper
    assert type(optimizer).__module__.startswith("galore_torch")
    projected = [g for g in optimizer.param_groups if "rank" in g]
    assert projected and projected[0]["rank"] == 4 and len(projected[0]["params"]) == 14  # 7 linears x 2 layers
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


@pytest.mark.parametrize("tuner_args, message", [
    ('{"rnak": 4}', r"'rnak' is not an option of galore"),
    ('{"optim": "adamw"}', r"optim 'adamw': one of galore_adamw"),
])
def test_bad_options_refused_before_the_model_loads(pack, tmp_path, tuner_args, message):
    from swiftlike.train.sft import sft

    with pytest.raises(SwiftlikeError, match=message):
        sft(_args(tmp_path / "no-such-model", tmp_path / "runs", tuner_args=tuner_args))
