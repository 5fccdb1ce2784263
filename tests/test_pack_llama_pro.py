"""The swiftlike-llama-pro pack (packs/swiftlike-llama-pro): block expansion starts as the base model, trains only the
new blocks, lowers the loss, and its checkpoint is the whole expanded model (infer and export take it as it is)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from swiftlike.registry import SwiftlikeError
from test_pack_peft_tuners import DATA, _loss



@pytest.fixture
def pack(load_pack):
    return load_pack("swiftlike-llama-pro")


def _args(tiny_model, out, **kw):
    from swiftlike.train.arguments import SftArguments

    return SftArguments(**{**dict(model=str(tiny_model), template="smollm2", dataset=[str(DATA)], output_dir=str(out),
                                  max_steps=8, per_device_train_batch_size=4, learning_rate=5e-3, logging_steps=1,
                                  max_length=128, report_to=["none"], warmup_ratio=0.0, train_type="llama_pro"),
                           **kw})


def test_expansion_is_the_identity_and_only_new_blocks_train(pack, tiny_model):
    from swiftlike.models.load import load_model_tokenizer
    from swiftlike_llama_pro.expand import prepare

    model, tok = load_model_tokenizer(model=str(tiny_model), torch_dtype="float32")
    ids = tok("Who are you?", return_tensors="pt").input_ids
    with torch.no_grad():
        before = model(input_ids=ids).logits
    prepare(model, _args(tiny_model, "unused", tuner_args='{"num_expand": 2}'))
    assert len(model.model.layers) == model.config.num_hidden_layers == 4
    with torch.no_grad():
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before)  # the zeroed output projections: each new block adds nothing
    trainable = {n.split(".")[2] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"1", "3"}
    assert [m.self_attn.layer_idx for m in model.model.layers] == [0, 1, 2, 3]


def test_trains_saves_infers_exports(pack, tiny_model, tmp_path):
    from swiftlike.export import export
    from swiftlike.infer import generate, load_checkpoint
    from swiftlike.train.sft import sft

    ckpt = sft(_args(tiny_model, tmp_path / "runs"))["last_checkpoint"]
    config = json.loads((ckpt / "config.json").read_text())
    assert config["num_hidden_layers"] == 3  # 2 layers, one new block by default
    weights, base = load_file(ckpt / "model.safetensors"), load_file(tiny_model / "model.safetensors")
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        torch.testing.assert_close(weights[name], base[name])  # the original blocks did not train
    assert weights["model.layers.2.mlp.down_proj.weight"].abs().sum() > 0  # the new one did

    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    trained = load_checkpoint(ckpt)
    base_model = load_checkpoint(None, model=str(tiny_model), template="smollm2")
    assert _loss(trained.model, trained.template, rows) < _loss(base_model.model, base_model.template, rows) - 0.02
    assert isinstance(generate(trained.model, trained.template, rows[0]["messages"][:1], max_new_tokens=4), str)

    export(ckpt, str(tmp_path / "exported"))
    assert json.loads((tmp_path / "exported" / "config.json").read_text())["num_hidden_layers"] == 3


@pytest.mark.parametrize("tuner_args, message", [
    ('{"num_expnd": 2}', r"'num_expnd' is not an option of llama_pro"),
    ('{"num_expand": 0}', r"num_expand 0: a positive integer"),
])
def test_bad_options_refused_before_the_model_loads(pack, tmp_path, tuner_args, message):
    from swiftlike.train.sft import sft

    with pytest.raises(SwiftlikeError, match=message):
        sft(_args(tmp_path / "no-such-model", tmp_path / "runs", tuner_args=tuner_args))
