"""`swiftlike serve` options (a light module: the CLI builds its flags from them without importing torch)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..models.options import ModelArguments, arg


@dataclass
class ServeArguments(ModelArguments):
    adapters: list = arg([], "NAME=DIR_OR_REF … (loaded lazily on first use).", aliases=["lora_modules"])
    tenants: Optional[str] = arg(None, "tenants.toml: API keys (sha256) and their adapters.")
    admin_key_env: Optional[str] = arg(None, "Environment variable holding the admin key.")
    served_model_name: Optional[str] = arg(None, "Name of the base model in the API.")
    max_resident: int = arg(8, "Adapters kept in memory (LRU; in-use adapters are never evicted).",
                            aliases=["max_loras"])
    max_batch_size: int = arg(32, "Requests decoded together.", aliases=["max_num_seqs"])
    max_queue: int = arg(256, "Requests waiting beyond the batch; more are answered 429.")
    max_tokens: int = arg(2048, "Cap on max_tokens per request.")
    num_threads: Optional[int] = arg(None, "torch CPU threads (default: all cores; on a shared machine fewer is "
                                     "often faster).")
    host: str = arg("127.0.0.1", "Address to listen on (anything but loopback needs --tenants).")
    port: int = arg(8000, "Port.")
    force: bool = arg(False, "Serve adapters trained on another base.")
    log_level: str = arg("info", "uvicorn log level: critical, error, warning, info, debug.")
