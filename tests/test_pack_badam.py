"""The swiftlike-badam pack (packs/swiftlike-badam): BAdam's block optimizer trains one block of layers at a time,
lowers the loss and saves the whole model; the embeddings (not a block unless asked) stay as they were."""
import json

import pytest
import torch
from safetensors.torch import load_file

from swiftlike.registry import SwiftlikeError
from test_pack_peft_tuners import DATA, _loss



@pytest.fixture
def pack(load_pack):
    return load_pack("swiftlike-badam")


def _args(model, out, **kw):
    from swiftlike.train.arguments import SftArguments

    return SftArguments(**{**dict(model=str(model), template="smollm2", dataset=[str(DATA)], output_dir=str(out),
                                  max_steps=8, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1,
                                  max_length=128, report_to=["none"], warmup_ratio=0.0, train_type="badam",
                                  tuner_args='{"switch_block_every": 4}'), **kw})


def test_trains_block_by_block(pack, tiny_model, tmp_path):
    pytest.importorskip("badam", reason="badam is in the test extra (pip install -e .[test])")
    from swiftlike.infer import load_checkpoint
    from swiftlike.train.sft import SftRecipe

    recipe = SftRecipe(_args(tiny_model, tmp_path / "runs"))
    ckpt = recipe.run()["last_checkpoint"]
    optimizer = getattr(recipe.trainer.optimizer, "optimizer", recipe.trainer.optimizer)  # accelerate's wrapper
    assert type(optimizer).__name__ == "BlockOptimizer" and optimizer.block_num == 2
    weights, base = load_file(ckpt / "model.safetensors"), load_file(tiny_model / "model.safetensors")
    torch.testing.assert_close(weights["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    for i in (0, 1):  # 4 steps on layer 0, then 4 on layer 1 (ascending)
        name = f"model.layers.{i}.mlp.down_proj.weight"
        assert not torch.equal(weights[name], base[name]), name

    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    trained = load_checkpoint(ckpt)
    base_model = load_checkpoint(None, model=str(tiny_model), template="smollm2")
    assert _loss(trained.model, trained.template, rows) < _loss(base_model.model, base_model.template, rows) - 0.02


@pytest.mark.parametrize("tuner_args, message", [
    ('{"switch_every": 4}', r"'switch_every' is not an option of badam"),
    ('{"switch_mode": "sideways"}', r"switch_mode 'sideways': one of ascending"),
])
def test_bad_options_refused_before_the_model_loads(pack, tmp_path, tuner_args, message):
    from swiftlike.train.sft import sft

    with pytest.raises(SwiftlikeError, match=message):
        sft(_args(tmp_path / "no-such-model", tmp_path / "runs", tuner_args=tuner_args))
