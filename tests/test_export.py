"""`swiftlike export --to_gguf` (the merged model as one GGUF file, read back by transformers with `gguf_file=` and
answering as the merged model does) and `--quant_method` (a quantized model dir with its held-out loss)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swiftlike.registry import SwiftlikeError
from swiftlike.train.arguments import SftArguments
from swiftlike.train.sft import sft

DATA = Path(__file__).parent / "data" / "identity.jsonl"
PROMPT = [{"role": "user", "content": "Who are you?"}]
# q8_0 (8-bit blocks of 32 with one f16 scale) may move the held-out loss by at most this much (nats per token)
Q8_0_LOSS_BOUND = 0.02
# bitsandbytes on the tiny LoRA-merged llama: nf4 4-bit / int8 8-bit may move the held-out loss by at most this much
BNB_LOSS_BOUND = {4: 0.05, 8: 0.01}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "swiftlike", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ}, timeout=300)


def _train(tiny_model, out, **kw):
    args = dict(model=str(tiny_model) if tiny_model else None, template="smollm2", dataset=[str(DATA)], output_dir=str(out), max_steps=2,
                per_device_train_batch_size=4, learning_rate=5e-2, save_steps=None, logging_steps=1,
                max_length=128, report_to=["none"], lora_rank=4, lora_alpha=8, warmup_ratio=0.0)
    return sft(SftArguments(**{**args, **kw}))["last_checkpoint"]


@pytest.fixture(scope="module")
def small_tokenizer(tokenizer_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tok") / "smollm2-1024"
    _small_tokenizer(tokenizer_dir, directory, 1024)
    return directory


@pytest.fixture(scope="module")
def llama_model(small_tokenizer, tmp_path_factory):
    """tests/tiny.py's tiny llama (tied embeddings, 4 heads over 2 kv heads) on the 1024-token tokenizer. Hidden 64:
    bitsandbytes 0.50's CPU 4-bit kernel (used on CPUs with AVX512-BF16) breaks on layers narrower than its 64-wide
    quantization block, which no real model has."""
    from tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", small_tokenizer, hidden=64)


@pytest.fixture(scope="module")
def lora_ckpt(llama_model, tmp_path_factory):
    return _train(llama_model, tmp_path_factory.mktemp("gguf-runs"))


@pytest.fixture(scope="module")
def merged(lora_ckpt, tmp_path_factory):
    from swiftlike.merge import merge_lora

    return merge_lora(lora_ckpt, tmp_path_factory.mktemp("gguf-merged") / "merged")


def _small_tokenizer(tokenizer_dir, directory: Path, size: int) -> int:
    """The SmolLM2 tokenizer cut to its first `size` ids (and the merges that stay inside them): still a working
    byte-level BPE, but a GGUF whose token list transformers parses in a blink."""
    data = json.loads((Path(tokenizer_dir) / "tokenizer.json").read_text())
    vocab = {t: i for t, i in data["model"]["vocab"].items() if i < size}
    data["model"]["vocab"] = vocab
    data["model"]["merges"] = [m for m in data["model"]["merges"]
                               if all(part in vocab for part in m) and "".join(m) in vocab]
    data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] < size]
    directory.mkdir(parents=True)
    (directory / "tokenizer.json").write_text(json.dumps(data))
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        if (Path(tokenizer_dir) / name).exists():
            shutil.copy(Path(tokenizer_dir) / name, directory / name)
    return len(vocab)


@pytest.fixture(scope="module")
def qwen2_model(small_tokenizer, tmp_path_factory):
    """A tiny random Qwen2 (attention biases, untied output head) on the 1024-token tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    directory = tmp_path_factory.mktemp("models") / "tiny-qwen2"
    shutil.copytree(small_tokenizer, directory)
    vocab_size = len(json.loads((small_tokenizer / "tokenizer.json").read_text())["model"]["vocab"])
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # random init leaves the biases zero; they must make it into the file too
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0, 0.5)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def _hf(directory):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


def _gguf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def _fields(path) -> dict:
    import gguf

    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.merges")}


def _prompt_ids(directory, template="smollm2"):
    from swiftlike.models.load import load_tokenizer
    from swiftlike.templates import get_template

    tokenizer = load_tokenizer(directory)
    encoded = get_template(template, tokenizer).encode(PROMPT, add_generation_prompt=True)
    return torch.tensor([list(encoded["input_ids"])])


def _greedy(model, ids, n=16):
    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                          pad_token_id=2)[0, ids.shape[1]:].tolist()


def test_gguf_f16_of_lora_adapter_answers_as_merged_model(lora_ckpt, merged, llama_model, tmp_path):
    from swiftlike.export import to_gguf

    out = to_gguf(lora_ckpt, tmp_path / "nova.gguf")
    assert [p.name for p in tmp_path.iterdir()] == ["nova.gguf"]  # the temporary file was renamed, nothing beside
    fields = _fields(out)
    assert fields["general.architecture"] == "llama" and fields["tokenizer.ggml.pre"] == "gpt2"
    assert fields["tokenizer.chat_template"] == (merged / "chat_template.jinja").read_text()
    ids = _prompt_ids(merged)
    ref, back, base = _hf(merged), _gguf(out), _hf(llama_model)
    assert type(back).__name__ == "LlamaForCausalLM" and back.config.tie_word_embeddings
    with torch.no_grad():
        want, got, before = ref(ids).logits, back(ids).logits, base(ids).logits
    assert torch.allclose(got, want, atol=2e-3, rtol=0), (got - want).abs().max()  # q/k rows permuted and back
    assert (before - want).abs().max() > 0.1  # the adapter is in the file, not just the base
    assert _greedy(back, ids) == _greedy(ref, ids)


def test_gguf_qwen2_shaped_model(qwen2_model, tmp_path):
    from swiftlike.export import to_gguf
    from swiftlike.models.options import ModelArguments
    from swiftlike.models.load import load_tokenizer
    from swiftlike.templates import get_template

    out = to_gguf(qwen2_model, tmp_path / "q.gguf", options=ModelArguments(template="chatml"))
    fields = _fields(out)
    assert fields["general.architecture"] == "qwen2" and fields["general.file_type"] == 1  # MOSTLY_F16
    # transformers runs Qwen2's own tokenizer class (its split regex) on a qwen2 model: the name says so
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "qwen2"
    assert fields["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert fields["tokenizer.ggml.token_type"][:3] == [3, 3, 3] and fields["tokenizer.ggml.token_type"][500] == 1
    assert (fields["tokenizer.ggml.bos_token_id"], fields["tokenizer.ggml.eos_token_id"]) == (1, 2)
    chatml = get_template("chatml", load_tokenizer(qwen2_model))
    assert fields["tokenizer.chat_template"] == chatml.chat_template_for_export()
    ids = _prompt_ids(qwen2_model, "chatml")
    ref, back = _hf(qwen2_model), _gguf(out)
    assert type(back).__name__ == "Qwen2ForCausalLM" and not back.config.tie_word_embeddings
    with torch.no_grad():
        want, got = ref(ids).logits, back(ids).logits
    assert torch.allclose(got, want, atol=2e-3, rtol=0), (got - want).abs().max()
    assert _greedy(back, ids) == _greedy(ref, ids)


def test_gguf_q8_0_keeps_heldout_loss(qwen2_model, tmp_path):
    from swiftlike.export import to_gguf
    from swiftlike.export.heldout import heldout_loss, heldout_rows
    from swiftlike.models.load import load_tokenizer
    from swiftlike.models.options import ModelArguments
    from swiftlike.templates import get_template

    opts = ModelArguments(template="chatml")
    f16 = to_gguf(qwen2_model, tmp_path / "m-f16.gguf", options=opts)
    q8 = to_gguf(qwen2_model, tmp_path / "m-q8_0.gguf", gguf_type="q8_0", options=opts)
    assert _fields(q8)["general.file_type"] == 7  # MOSTLY_Q8_0
    assert q8.stat().st_size < 0.7 * f16.stat().st_size
    template = get_template("chatml", load_tokenizer(qwen2_model))
    rows = heldout_rows([str(DATA)])
    fp32, quant = heldout_loss(_hf(qwen2_model), template, rows), heldout_loss(_gguf(q8), template, rows)
    assert abs(quant - fp32) < Q8_0_LOSS_BOUND, (fp32, quant)


def test_gguf_refuses_before_loading(lora_ckpt, tmp_path):
    """An existing file, an architecture llama.cpp's llama/qwen2 do not cover, a bad type: one line each, the
    existing file untouched and nothing written beside it."""
    from swiftlike.export import to_gguf

    out = tmp_path / "exists.gguf"
    out.write_bytes(b"mine")
    with pytest.raises(SwiftlikeError, match="exists; choose a new name, or pass --overwrite"):
        to_gguf(lora_ckpt, out)
    gemma = tmp_path / "gemma"
    gemma.mkdir()  # a config and no weights: the check reads the config only
    (gemma / "config.json").write_text(json.dumps({"architectures": ["GemmaForCausalLM"], "model_type": "gemma"}))
    with pytest.raises(SwiftlikeError, match="this one is GemmaForCausalLM"):
        to_gguf(gemma, tmp_path / "g.gguf")
    with pytest.raises(SwiftlikeError, match="--gguf_type q4_k: use f16 or q8_0"):
        to_gguf(lora_ckpt, tmp_path / "k.gguf", gguf_type="q4_k")
    spm = tmp_path / "llama2"
    spm.mkdir()  # a llama whose tokenizer is sentencepiece-style (byte-fallback BPE), as Llama 2's: no weights read
    (spm / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    (spm / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "byte_fallback": True, "vocab": {},
                                                              "merges": []}, "decoder": {"type": "Sequence"}}))
    with pytest.raises(SwiftlikeError, match="sentencepiece-style .* not supported yet"):
        to_gguf(spm, tmp_path / "s.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.gguf", "gemma", "llama2"]
    assert out.read_bytes() == b"mine"
    proc = _cli("export", "--ckpt_dir", gemma, "--to_gguf", tmp_path / "g.gguf")
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and "GemmaForCausalLM" in proc.stderr



@pytest.mark.parametrize("bits", [4, 8])
def test_bnb_export_of_lora_adapter_loads_with_its_heldout_loss(lora_ckpt, merged, bits, tmp_path):
    import bitsandbytes as bnb

    from swiftlike.export import to_quantized
    from swiftlike.export.heldout import heldout_loss, heldout_rows
    from swiftlike.models.load import load_tokenizer
    from swiftlike.templates import get_template

    report = to_quantized(lora_ckpt, tmp_path / "q", method="bnb", bits=bits, dataset=[str(DATA)])
    out = Path(report["dir"])
    assert [p.name for p in tmp_path.iterdir()] == ["q"]  # staged beside it and renamed, the fp32 copy gone
    assert json.loads((out / "quantization.json").read_text()) == {k: v for k, v in report.items() if k != "dir"}
    model = _hf(out)  # transformers reads the quantization config the directory carries
    kind = bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt
    assert isinstance(model.model.layers[0].self_attn.q_proj, kind)
    template = get_template("smollm2", load_tokenizer(out))
    rows = heldout_rows([str(DATA)])
    held = report["heldout"]
    assert held["rows"] == len(rows) == 8
    assert held["fp32_loss"] == pytest.approx(heldout_loss(_hf(merged), template, rows), abs=1e-4)
    assert held["quantized_loss"] == pytest.approx(heldout_loss(model, template, rows), abs=1e-4)
    assert abs(held["delta"]) < BNB_LOSS_BOUND[bits], held


def test_quantized_export_refuses_before_loading(lora_ckpt, tmp_path):
    from swiftlike.export import to_quantized

    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "mine.txt").write_text("mine")
    data = [str(DATA)]
    for kwargs, message in [
        (dict(to=keep, method="bnb", bits=4, dataset=data), "exists and is not empty; .* --overwrite"),
        (dict(to=tmp_path / "a", method="bnb", bits=3, dataset=data), "--quant_bits 3: use 4 or 8"),
        (dict(to=tmp_path / "a", method="fp8", bits=8, dataset=data), "--quant_method fp8: use bnb, gptq, awq"),
        (dict(to=tmp_path / "a", method="bnb", bits=4), "needs held-out rows"),
        (dict(to="hf:me/q", method="bnb", bits=4, dataset=data), "written to a directory"),
    ]:
        with pytest.raises(SwiftlikeError, match=message):
            to_quantized(lora_ckpt, **kwargs)
    assert [p.name for p in tmp_path.iterdir()] == ["keep"] and (keep / "mine.txt").read_text() == "mine"
    # one line each, before any model loads: AWQ without a GPU; GPTQ without llm-compressor (not in this venv)
    for method, message in [("awq", "needs a GPU"), ("gptq", "pip install llmcompressor")]:
        proc = _cli("export", "--ckpt_dir", lora_ckpt, "--quant_method", method, "--quant_bits", 4, "--to",
                    tmp_path / "g", "--dataset", DATA)
        assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0, proc.stderr
        assert message in proc.stderr, proc.stderr
    assert not (tmp_path / "g").exists()


# llm-compressor pins transformers <= 5.17, so it lives in its own virtualenv (.ci/run makes .venv-quant with
# `pip install -e . llmcompressor`); swiftlike runs there as a user who installed both would run it
QUANT_PYTHON = os.environ.get("SWIFTLIKE_QUANT_PYTHON")
# GPTQ (int4 groups / int8 channels) on the tiny LoRA-merged llama may move the held-out loss by at most this much
GPTQ_LOSS_BOUND = {4: 0.1, 8: 0.01}
_RELOAD = """import json, sys, torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM
from swiftlike.export.heldout import heldout_loss, heldout_rows
from swiftlike.models.load import load_tokenizer
from swiftlike.templates import get_template
out, data = sys.argv[1:]
with safe_open(f"{out}/model.safetensors", "pt") as f:
    stored = {k: [str(f.get_tensor(k).dtype), list(f.get_tensor(k).shape)] for k in f.keys()
              if ".layers.0.self_attn.q_proj." in k}
model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
loss = heldout_loss(model, get_template("smollm2", load_tokenizer(out)), heldout_rows([data]))
print(json.dumps({"stored": stored, "loss": loss}))
"""


@pytest.mark.skipif(not QUANT_PYTHON, reason="needs a virtualenv with llm-compressor: SWIFTLIKE_QUANT_PYTHON "
                                             "(.ci/run makes one)")
@pytest.mark.parametrize("bits", [4, 8])
def test_gptq_export_through_llm_compressor(lora_ckpt, merged, bits, tmp_path):
    from swiftlike.export.heldout import heldout_loss, heldout_rows
    from swiftlike.models.load import load_tokenizer
    from swiftlike.templates import get_template

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([QUANT_PYTHON, "-m", "swiftlike", "export", "--ckpt_dir", str(lora_ckpt), "--quant_method",
                           "gptq", "--quant_bits", str(bits), "--to", str(tmp_path / "q"), "--dataset", str(DATA)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "q"
    assert [p.name for p in tmp_path.iterdir()] == ["q"]  # staged beside it and renamed
    report = json.loads((out / "quantization.json").read_text())
    assert report["method"] == "gptq" and report["calibration"]["rows"] == 8
    assert report["calibration"]["same_as_heldout"] and "calibrated on the held-out rows" in proc.stderr
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors"
    assert {g["weights"]["num_bits"] for g in config["config_groups"].values()} == {bits}
    held = report["heldout"]
    assert f"held-out loss on 8 rows: fp32 {held['fp32_loss']:.4f}  gptq-{bits}bit" in proc.stdout
    # the stored weights are `bits`-wide integers packed into int32 (no float copy), and transformers in that
    # environment loads the directory back to the loss the report gives
    reloaded = json.loads(subprocess.run([QUANT_PYTHON, "-c", _RELOAD, str(out), str(DATA)], capture_output=True,
                                         text=True, env=env, timeout=300, check=True).stdout.splitlines()[-1])
    weights = {k.rsplit(".", 1)[1]: v for k, v in reloaded["stored"].items()}
    assert "weight" not in weights and weights["weight_packed"] == ["torch.int32", [64, 64 * bits // 32]], weights
    assert reloaded["loss"] == pytest.approx(held["quantized_loss"], abs=1e-4)
    template = get_template("smollm2", load_tokenizer(merged))
    assert held["fp32_loss"] == pytest.approx(heldout_loss(_hf(merged), template, heldout_rows([str(DATA)])),
                                              abs=1e-3)
    assert 0 < abs(held["delta"]) < GPTQ_LOSS_BOUND[bits], held
