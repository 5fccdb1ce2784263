"""Model resolution: registry type → hub cache (offline), hub ids, local dirs, the embedded source."""
import shutil

import pytest

from swiftlike.models import resolve_model
from swiftlike.registry import SwiftlikeError


def _seed_hf_cache(cache, repo_id, model_dir, sha="0123456789abcdef0123456789abcdef01234567"):
    """The real huggingface_hub cache layout: models--ORG--NAME/{refs/main, snapshots/<sha>/…}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / sha
    shutil.copytree(model_dir, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    return snap


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return cache


def test_model_type_from_offline_hf_cache(hf_cache, tiny_model, monkeypatch):
    monkeypatch.setenv("SWIFTLIKE_HUB", "hf")
    snap = _seed_hf_cache(hf_cache, "Qwen/Qwen1.5-1.8B-Chat", tiny_model)
    resolved = resolve_model("qwen1half-1_8b-chat")
    assert resolved.path == snap and resolved.origin == "hf" and resolved.spec.template == "qwen"


def test_hub_id_infers_model_type(hf_cache, tiny_model):
    snap = _seed_hf_cache(hf_cache, "Qwen/Qwen2.5-0.5B-Instruct", tiny_model)
    resolved = resolve_model(model="Qwen/Qwen2.5-0.5B-Instruct", hub="hf")
    assert resolved.path == snap and resolved.spec.name == "qwen2_5-0_5b-instruct"


def test_missing_offline_is_one_clear_error(hf_cache):
    with pytest.raises(SwiftlikeError, match=r"hf:Qwen/Qwen1.5-7B-Chat is not in the Hugging Face cache"):
        resolve_model("qwen1half-7b-chat", hub="hf")


def test_local_dir_named_like_a_hub_repo(tmp_path, tiny_model):
    local = tmp_path / "SmolLM2-135M-Instruct"
    shutil.copytree(tiny_model, local)
    resolved = resolve_model(model=str(local))
    assert resolved.spec.name == "smollm2-135m-instruct" and resolved.origin == "local"
    with pytest.raises(SwiftlikeError, match="no config.json"):
        resolve_model(model=str(tmp_path))


def test_embedded_model_prefers_a_cached_hub_copy(hf_cache, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SWIFTLIKE_HOME", str(tmp_path / "home"))  # nothing built there
    snap = _seed_hf_cache(hf_cache, "HuggingFaceTB/SmolLM2-135M-Instruct", tiny_model)
    resolved = resolve_model("smollm2-135m-instruct")
    assert resolved.path == snap and not (tmp_path / "home" / "models").exists()


def test_system_prompt_from_a_txt_file(tmp_path):
    """ms-swift's --system may name a .txt file (its GRPO examples pass examples/train/grpo/prompt.txt): the prompt is
    the file's text, not its path; any other text is the prompt itself."""
    from swiftlike.models.options import ModelArguments

    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Think step by step.\nAnswer in <answer></answer>.", encoding="utf-8")
    assert ModelArguments(system=str(prompt)).system == "Think step by step.\nAnswer in <answer></answer>."
    assert ModelArguments(system="You are helpful.").system == "You are helpful."
    assert ModelArguments(system=str(tmp_path / "missing.txt")).system == str(tmp_path / "missing.txt")


def test_attention_spellings_of_the_peers():
    from swiftlike.models.options import ModelArguments

    assert ModelArguments(attn_impl="flash_attn").attn_impl == "flash_attention_2"  # ms-swift
    assert ModelArguments(attn_impl="fa2").attn_impl == "flash_attention_2"  # LLaMA-Factory
    assert ModelArguments(attn_impl="sdpa").attn_impl == "sdpa"
