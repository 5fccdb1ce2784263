"""`swiftlike export`: a checkpoint copied to a directory or pushed to a hub (copy), the merged model written as one
GGUF file for llama.cpp/Ollama (gguf_file), or as a quantized model directory (quantized)."""
from __future__ import annotations

from .arguments import ExportArguments
from .copy import check_target, export

__all__ = ["ExportArguments", "check_target", "export", "to_gguf", "to_quantized"]


def __getattr__(name):
    if name == "to_gguf":
        from .gguf_file import to_gguf

        return to_gguf
    if name == "to_quantized":
        from .quantized import to_quantized

        return to_quantized
    raise AttributeError(name)
