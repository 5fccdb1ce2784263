"""The tokenizer and chat template as GGUF keys: gpt2-style byte-level BPE (SmolLM2, Qwen2, Llama 3) — tokens,
token types, merges, special ids — and the pre-tokenizer name llama.cpp picks its split regex by."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..registry import SwiftlikeError


def check_tokenizer(tokenizer, where) -> dict:
    """The tokenizer.json of a tokenizer GGUF export can write, as a dict; one line naming what is not."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise SwiftlikeError(f"{where}: GGUF export needs a fast tokenizer (tokenizer.json); this one is "
                             f"{type(tokenizer).__name__}")
    data = json.loads(backend.to_str())
    check_tokenizer_json(data, where)
    pre_tokenizer_name(data, where)
    return data


def check_tokenizer_json(data: dict, where) -> None:
    """gpt2-style byte-level BPE, or one line naming what this tokenizer is (read from tokenizer.json before any
    weights load)."""
    model, decoder = data.get("model") or {}, data.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        kind = "sentencepiece-style (byte-fallback BPE)" if model.get("byte_fallback") else model.get("type")
        raise SwiftlikeError(f"{where}: GGUF export writes gpt2-style byte-level BPE tokenizers (SmolLM2, Qwen2, "
                             f"Llama 3); this tokenizer is {kind}, not supported yet")


def pre_tokenizer_name(data: dict, where) -> str:
    """llama.cpp's name for the way this tokenizer splits text before BPE (tokenizer.ggml.pre)."""
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    regex = " ".join(str((s.get("pattern") or {}).get("Regex", "")) for s in steps if s.get("type") == "Split")
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt2"  # GPT-2's own regex (what transformers rebuilds from the embedded SmolLM2 GGUF)
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if "Split" in kinds and r"\p{N}{1,3}" in regex:
        return "llama-bpe"  # Llama 3: numbers in groups of up to three digits
    if "Split" in kinds and r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|" in regex:
        return "qwen2"  # Qwen2/2.5: one digit at a time
    raise SwiftlikeError(f"{where}: GGUF export does not know llama.cpp's name for this tokenizer's pre-tokenizer "
                         f"({'+'.join(map(str, kinds)) or 'none'}); known: gpt2, smollm, llama-bpe, qwen2")


def add_tokenizer(writer, tokenizer, tokenizer_json: dict, vocab_size: int, chat_template: str | None) -> None:
    import gguf

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer_json, "tokenizer"))
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder  # {id: AddedToken}
    tokens, types = [], []
    for i in range(vocab_size):  # the embedding may have more rows than the tokenizer has tokens
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # merges, bos/eos/unk/pad ids and add_bos/add_eos as the gguf package reads them from the tokenizer files
    with tempfile.TemporaryDirectory(prefix="swiftlike-gguf-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        special = gguf.SpecialVocab(Path(tmp), load_merges=True, n_vocab=vocab_size)
    if not special.merges:
        raise SwiftlikeError("GGUF export: the tokenizer has no BPE merges")
    special.chat_template = chat_template or None
    special.add_to_gguf(writer, quiet=True)
