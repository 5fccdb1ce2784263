"""The built-in model catalog: names, hub ids, templates and family coverage.

Reads `[models]` from catalog.toml and, while the model entries still live in their own file, merges in
catalog.models.toml as well (a name defined in both must not differ).
"""
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ALLOWED_TEMPLATES = {
    "default", "chatml", "qwen", "qwen2_5", "qwen3", "llama", "llama3", "chatglm2", "chatglm3", "glm4",
    "baichuan2", "yi", "internlm2", "deepseek", "mistral", "gemma", "phi3", "smollm2",
}
# Family tag -> a model that must carry it.
FAMILIES = {
    "qwen": "qwen-7b-chat",
    "qwen1half": "qwen1half-1_8b-chat",
    "qwen2": "qwen2-7b-instruct",
    "qwen2_5": "qwen2_5-7b-instruct",
    "qwen3": "qwen3-8b",
    "chatglm2": "chatglm2-6b",
    "chatglm3": "chatglm3-6b",
    "glm4": "glm4-9b-chat",
    "llama2": "llama2-7b-chat",
    "llama3": "llama3-8b-instruct",
    "llama3_1": "llama3_1-8b-instruct",
    "llama3_2": "llama3_2-1b-instruct",
    "yi": "yi-6b-chat",
    "internlm2": "internlm2-7b-chat",
    "baichuan2": "baichuan2-7b-chat",
    "deepseek": "deepseek-7b-chat",
    "mistral": "mistral-7b-instruct",
    "mixtral": "mixtral-moe-7b-instruct",
    "gemma": "gemma-2b-instruct",
    "phi3": "phi3-4b-4k-instruct",
}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _load_models() -> dict:
    path = ROOT / "catalog.toml"
    models = dict(tomllib.loads(path.read_text(encoding="utf-8")).get("models", {}))
    extra = ROOT / "catalog.models.toml"
    if extra.exists():
        for name, entry in tomllib.loads(extra.read_text(encoding="utf-8")).get("models", {}).items():
            assert name not in models or models[name] == entry, f"{name} differs between catalog files"
            models[name] = entry
    return models


@pytest.fixture(scope="module")
def models():
    return _load_models()


def test_enough_models(models):
    assert len(models) >= 80, len(models)


def test_names_lowercase(models):
    # Names are table keys, so TOML already rules out duplicates inside one file; the loader above checks across files.
    bad = [n for n in models if n != n.lower() or not re.fullmatch(r"[a-z0-9][a-z0-9_.\-]*", n)]
    assert not bad, bad


def test_templates_allowed(models):
    bad = {n: m.get("template") for n, m in models.items() if m.get("template") not in ALLOWED_TEMPLATES}
    assert not bad, bad


def test_hub_ids_look_like_org_name(models):
    bad = []
    for name, m in models.items():
        assert m.get("hf") or m.get("ms"), f"{name}: no hub id"
        for key in ("hf", "ms"):
            if key in m and not (isinstance(m[key], str) and HUB_ID.match(m[key])):
                bad.append((name, key, m[key]))
    assert not bad, bad


def test_list_fields(models):
    for name, m in models.items():
        for key in ("architectures", "tags", "requires", "aliases"):
            if key in m:
                assert isinstance(m[key], list) and all(isinstance(x, str) for x in m[key]), (name, key)
        assert m.get("architectures"), f"{name}: no architectures"
        lora = m.get("lora_target_modules", "all-linear")
        assert isinstance(lora, str) or (isinstance(lora, list) and lora), name


def test_aliases_do_not_clash(models):
    seen = set(models)
    for name, m in models.items():
        for alias in m.get("aliases", []):
            assert alias not in seen, f"alias {alias!r} of {name} clashes"
            seen.add(alias)


def test_qwen1half_ids(models):
    m = models["qwen1half-1_8b-chat"]
    assert m["hf"] == "Qwen/Qwen1.5-1.8B-Chat"
    assert m["ms"] == "qwen/Qwen1.5-1.8B-Chat"
    assert m["template"] == "qwen"


@pytest.mark.parametrize("family,example", sorted(FAMILIES.items()))
def test_family_present(models, family, example):
    tagged = [n for n, m in models.items() if family in m.get("tags", [])]
    assert tagged, f"no model tagged {family!r}"
    assert example in models and family in models[example].get("tags", []), example


@pytest.mark.parametrize("name,template", [
    ("qwen-7b-chat", "qwen"), ("qwen2-7b-instruct", "qwen"), ("qwen2_5-7b-instruct", "qwen2_5"),
    ("qwen3-8b", "qwen3"), ("qwen1half-7b", "default"), ("llama2-7b-chat", "llama"),
    ("llama3_2-1b-instruct", "llama3"), ("chatglm3-6b", "chatglm3"), ("glm4-9b-chat", "glm4"),
    ("yi-1_5-6b-chat", "yi"), ("internlm2-7b-chat", "internlm2"), ("baichuan2-13b-chat", "baichuan2"),
    ("mistral-7b-instruct-v3", "mistral"), ("gemma2-9b-instruct", "gemma"), ("phi3-4b-128k-instruct", "phi3"),
])
def test_template_mapping(models, name, template):
    assert models[name]["template"] == template


def test_remote_code_tagged(models):
    for name in ("qwen-7b-chat", "chatglm2-6b", "chatglm3-6b", "glm4-9b-chat", "internlm2-7b-chat",
                 "baichuan2-7b-chat", "deepseek-v2-lite-chat"):
        assert "remote-code" in models[name]["tags"], name
