"""`swiftlike serve` options (a light module: the CLI builds its flags from them without importing torch)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

from ..infer.arguments import BackendArguments
from ..models.options import ModelArguments, arg


@dataclass
class ServeArguments(BackendArguments, ModelArguments):
    adapters: list = arg([], "NAME=DIR_OR_REF … (loaded lazily on first use).", aliases=["lora_modules"])
    tenants: Optional[str] = arg(None, "tenants.toml: API keys (sha256) and their adapters.")
    admin_key_env: Optional[str] = arg(None, "Environment variable holding the admin key.")
    served_model_name: Optional[str] = arg(None, "Name of the base model in the API.")
    max_resident: int = arg(8, "Adapters kept in memory (LRU; in-use adapters are never evicted); with vllm, its "
                            "max_loras.",
                            aliases=["max_loras"])
    max_batch_size: int = arg(32, "Requests decoded together.", aliases=["max_num_seqs"])
    max_queue: int = arg(256, "Requests waiting beyond the batch; more are answered 429.")
    max_tokens: int = arg(2048, "Cap on max_tokens per request.")
    num_threads: Optional[int] = arg(None, "torch CPU threads (default: all cores; on a shared machine fewer is "
                                     "often faster).")
    max_kv_memory: str = arg("auto", "KV cache budget: a size (8GiB, 500MB) or a share of the memory available "
                             "after loading the model (50%); auto = 50%. Requests that do not fit wait their turn.")
    max_body_size: str = arg("8MiB", "Largest request body; bigger ones are answered 413.")
    template_timeout: float = arg(2.0, "Seconds an adapter's own chat template may take to render a request.")
    host: str = arg("127.0.0.1", "Address to listen on (anything but loopback needs --tenants).")
    port: int = arg(8000, "Port.")
    allowed_hosts: list = arg([], "Host header values to answer besides the --host address (and localhost on "
                              "loopback); * = any.")
    cors_origins: list = arg([], "Browser origins (https://app.example) allowed to call the API; * = any. "
                             "Other cross-origin browser requests are refused.")
    read_timeout: float = arg(30.0, "Seconds a client has to send a request's headers and body.")
    max_connections: int = arg(1024, "Open connections served at once; requests beyond are answered 503.")
    shared_state: Optional[str] = arg(None, "Directory shared by several replicas of this server (same flags, same "
                                      "adapter store): adapters loaded or removed through the admin API on one "
                                      "replica are loaded or removed on all of them.")
    sync_interval: float = arg(2.0, "Seconds between two looks at --shared_state: another replica's admin change "
                               "is live here within this plus the adapter's load time.")
    force: bool = arg(False, "Serve adapters trained on another base.")
    log_level: str = arg("info", "uvicorn log level: critical, error, warning, info, debug.")


def is_loopback(host: str) -> bool:
    """Whether `host` only answers this machine (serve and web-ui demand auth otherwise)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
