"""The model shapes GGUF export writes, as llama.cpp names them: hyperparameters, tensor names (the `gguf` package's
own HF -> GGUF name map) and the llama q/k row order. Facts from llama.cpp's convert_hf_to_gguf.py."""
from __future__ import annotations

from ..registry import SwiftlikeError

# HF architecture -> llama.cpp architecture. Mistral is llama-shaped to llama.cpp (its converter writes "llama").
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}


def gguf_arch(architectures, where) -> str:
    """The llama.cpp architecture of a model with these HF `architectures`; one line naming what is supported."""
    for name in architectures or ():
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    shown = ", ".join(architectures or ()) or "unknown"
    raise SwiftlikeError(f"{where}: GGUF export writes llama-shaped (LlamaForCausalLM, MistralForCausalLM) and "
                         f"qwen2-shaped (Qwen2ForCausalLM) models; this one is {shown}")


def rope_parameters(config) -> dict:
    """{"rope_theta", "rope_type", ...}: transformers 5 keeps them in `rope_parameters`, older ones in
    rope_theta/rope_scaling."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    params["rope_type"] = params.get("rope_type") or params.get("type") or "default"
    return params


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def check_config(config, arch: str, where) -> None:
    """Refuse, before writing, what the GGUF could not say: a rope scaling llama.cpp would not apply the same way."""
    rope = rope_parameters(config)
    if rope["rope_type"] not in ("default", "linear", "llama3", "yarn"):
        raise SwiftlikeError(f"{where}: GGUF export does not write rope scaling {rope['rope_type']!r} (default, "
                             f"linear, llama3 and yarn are written)")
    if arch == "qwen2" and getattr(config, "use_sliding_window", False):
        raise SwiftlikeError(f"{where}: GGUF export does not write Qwen2's sliding-window attention "
                             f"(use_sliding_window=true)")


def write_hparams(writer, config, arch: str) -> None:
    """The `<arch>.*` keys llama.cpp reads (the same keys transformers' GGUF loader maps back)."""
    import gguf

    heads = config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    rope = rope_parameters(config)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_rope_dimension_count(head_dim(config))
    if head_dim(config) != config.hidden_size // heads:  # llama.cpp reads the per-head size only from these
        writer.add_key_length(head_dim(config))
        writer.add_value_length(head_dim(config))
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope["rope_type"] == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        if rope.get("original_max_position_embeddings"):
            writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))


def llama3_rope_factors(config):
    """Llama 3.1's per-frequency rope scaling as the `rope_freqs.weight` tensor llama.cpp multiplies in (float32);
    None for every other rope."""
    import math

    import numpy as np

    rope = rope_parameters(config)
    if rope["rope_type"] != "llama3":
        return None
    dim = head_dim(config)
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    factors = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * float(rope["rope_theta"]) ** (i / dim)
        if wavelen < old_ctx / high:  # high frequencies: unscaled
            factors.append(1.0)
        elif wavelen > old_ctx / low:  # low frequencies: scaled by the full factor
            factors.append(factor)
        else:  # in between: interpolated
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def gguf_tensors(state_dict: dict, config, arch: str):
    """(GGUF name, float32 numpy array) for every weight; the q/k rows of a llama reordered as llama.cpp's rope
    expects (pairs per head interleaved, where HF splits each head in halves)."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.QWEN2,
                                     config.num_hidden_layers)
    tied = getattr(config, "tie_word_embeddings", False)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    for hf_name, tensor in state_dict.items():
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue  # recomputed by llama.cpp; the tied output reads token_embd
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise SwiftlikeError(f"GGUF export: no llama.cpp name for tensor {hf_name} of this {arch} model")
        data = tensor.detach().float().cpu().numpy()
        if arch == "llama" and hf_name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
            data = _interleave_rope_halves(data, heads)
        elif arch == "llama" and hf_name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
            data = _interleave_rope_halves(data, kv_heads)
        yield name, data
    factors = llama3_rope_factors(config)
    if factors is not None:
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors


def _interleave_rope_halves(data, n_head: int):
    """Rows of each head [x0..x(d/2-1), y0..y(d/2-1)] -> [x0, y0, x1, y1, ...]."""
    shape = data.shape
    return data.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
