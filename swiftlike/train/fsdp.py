"""`--fsdp` / `--fsdp_config`: PyTorch FSDP through the HF Trainer, in the spellings its users already pass.

    --fsdp "full_shard auto_wrap"           the HF Trainer's option words (full_shard, shard_grad_op, offload, ...)
    --fsdp fsdp2                            ms-swift's preset name
    --fsdp fsdp2.json                       ms-swift's file: {"fsdp": "full_shard auto_wrap", "fsdp_config": {...}}
    --fsdp_config F.json | '{"k": v}'       the HF Trainer's fsdp_config (a file or inline JSON; `fsdp_` prefixes and
                                            accelerate's config-file names are accepted too)

Everything is checked here, before a library or the model loads: a bad file is one line naming it and the line.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..registry import SwiftlikeError

OPTIONS = ("full_shard", "shard_grad_op", "hybrid_shard", "hybrid_shard_zero2", "no_shard", "offload", "auto_wrap")
FSDP2_STRATEGIES = ("full_shard", "shard_grad_op")  # FSDP2 reshards after forward (full_shard) or not
# ms-swift's --fsdp preset (swift/llm/config/fsdp2.json, less its SHARDED_STATE_DICT: swiftlike's checkpoints hold
# a gathered adapter either way, and its cpu_ram_efficient_loading / activation_checkpointing stay opt-in here)
PRESETS = {
    "fsdp2": {"fsdp": "full_shard auto_wrap",
              "fsdp_config": {"version": 2, "reshard_after_forward": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}},
}
# the keys transformers' TrainingArguments reads from fsdp_config (after it strips an `fsdp_` prefix)
CONFIG_KEYS = {
    "version", "min_num_params", "transformer_layer_cls_to_wrap", "auto_wrap_policy", "cpu_offload",
    "cpu_ram_efficient_loading", "state_dict_type", "activation_checkpointing", "reshard_after_forward",
    "forward_prefetch", "backward_prefetch", "use_orig_params", "sync_module_states", "limit_all_gathers",
    "xla", "xla_fsdp_v2", "xla_fsdp_grad_ckpt", "xla_fsdp_settings",
}
WRAP_POLICIES = ("TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP")
STATE_DICT_TYPES = ("FULL_STATE_DICT", "SHARDED_STATE_DICT", "LOCAL_STATE_DICT")


def resolve_fsdp(fsdp, fsdp_config=None, deepspeed=None) -> tuple[str | None, dict | None]:
    """(the HF Trainer's `fsdp` option string, its `fsdp_config` dict), or (None, None) without --fsdp."""
    if deepspeed and fsdp:
        raise SwiftlikeError(f"--fsdp {fsdp} and --deepspeed {deepspeed}: choose one engine (both shard the model; "
                             f"the HF Trainer runs one of them)")
    if not fsdp:
        if fsdp_config:
            raise SwiftlikeError("--fsdp_config is set without --fsdp; add --fsdp \"full_shard auto_wrap\" (or drop "
                                 "--fsdp_config)")
        return None, None
    if isinstance(fsdp, (list, tuple)) or str(fsdp).lstrip().startswith("["):  # a YAML/JSON list of the words
        try:
            fsdp = " ".join(map(str, fsdp if isinstance(fsdp, (list, tuple)) else json.loads(fsdp)))
        except (json.JSONDecodeError, TypeError):
            raise SwiftlikeError(f"--fsdp {fsdp}: expected option words, e.g. \"full_shard auto_wrap\"") from None
    options, config, where = _options_and_file_config(str(fsdp).strip())
    if fsdp_config:
        config.update(_normalize(_read_config(fsdp_config, "--fsdp_config"), "--fsdp_config"))
    words = options.split()
    unknown = [w for w in words if w not in OPTIONS]
    if unknown or not words:
        raise SwiftlikeError(f"{where}: unknown FSDP option(s) {' '.join(unknown) or repr(options)}; use the HF "
                             f"Trainer's words ({', '.join(OPTIONS)}), e.g. --fsdp \"full_shard auto_wrap\", or "
                             f"ms-swift's preset {', '.join(PRESETS)}")
    _check_values(config, words, where)
    return " ".join(words), config


def _options_and_file_config(value: str) -> tuple[str, dict, str]:
    if value in PRESETS:
        preset = PRESETS[value]
        return preset["fsdp"], dict(preset["fsdp_config"]), f"--fsdp {value}"
    if value.endswith(".json") or Path(value).is_file():
        data = _read_config(value, "--fsdp")
        extra = sorted(set(data) - {"fsdp", "fsdp_config"} - {k for k in data if str(k).startswith("_")})
        if extra:
            raise SwiftlikeError(f"--fsdp {value}: unknown key(s) {', '.join(extra)}; an --fsdp file holds \"fsdp\" "
                                 f"(e.g. \"full_shard auto_wrap\") and \"fsdp_config\" (or pass the config itself "
                                 f"as --fsdp_config)")
        inner = data.get("fsdp_config") or {}
        if not isinstance(inner, dict):
            raise SwiftlikeError(f"--fsdp {value}: \"fsdp_config\" must be a JSON object")
        options = data.get("fsdp", "full_shard auto_wrap")
        if isinstance(options, list):
            options = " ".join(map(str, options))
        return str(options), _normalize(inner, f"--fsdp {value}"), f"--fsdp {value}"
    return value, {}, f"--fsdp {value!r}"


def _read_config(value, flag: str) -> dict:
    """A JSON object from a file path, inline JSON text, or a dict (the Python API; a YAML config's mapping)."""
    if isinstance(value, dict):
        return dict(value)
    text, source = str(value), None
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise SwiftlikeError(f"{flag} {text}: no such file (give a JSON file or an inline JSON object)")
        source, text = str(path), path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        where = f"{source}:{err.lineno}" if source else f"{flag} (inline JSON) column {err.colno}"
        raise SwiftlikeError(f"{flag} {where}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise SwiftlikeError(f"{flag} {source or text}: expected a JSON object of FSDP settings")
    return data


# accelerate's config-file names (`accelerate config` writes them) -> the HF Trainer's
_ACCELERATE_NAMES = {"offload_params": "cpu_offload", "transformer_cls_names_to_wrap": "transformer_layer_cls_to_wrap"}


def _normalize(config: dict, where: str) -> dict:
    out = {}
    for key, value in config.items():
        key = str(key)
        if key.startswith("_"):  # ms-swift's files carry "_description", "_note" ...
            continue
        name = key[len("fsdp_"):] if key.startswith("fsdp_") else key
        name = _ACCELERATE_NAMES.get(name, name)
        if name == "sharding_strategy":  # accelerate's FSDP1 name -> FSDP2's reshard_after_forward
            strategy = str(value).split(".")[-1].upper()
            if strategy not in ("FULL_SHARD", "SHARD_GRAD_OP", "1", "2"):
                raise SwiftlikeError(f"{where}: {key} {value!r}: FSDP2 takes FULL_SHARD or SHARD_GRAD_OP (put other "
                                     f"strategies in --fsdp with \"version\": 1)")
            out.setdefault("reshard_after_forward", strategy in ("FULL_SHARD", "1"))
            continue
        out[name] = value
    unknown = sorted(set(out) - CONFIG_KEYS)
    if unknown:
        raise SwiftlikeError(f"{where}: unknown fsdp_config key(s) {', '.join(unknown)}; the HF Trainer reads "
                             f"{', '.join(sorted(CONFIG_KEYS - {'xla', 'xla_fsdp_v2', 'xla_fsdp_grad_ckpt', 'xla_fsdp_settings'}))}")
    return out


def _check_values(config: dict, words: list, where: str) -> None:
    try:
        version = int(config.get("version", 2))
    except (TypeError, ValueError):
        version = None
    if version not in (1, 2):
        raise SwiftlikeError(f"{where}: fsdp_config version {config.get('version')!r}; use 2 (FSDP2) or 1")
    if version == 2:
        other = [w for w in words if w in OPTIONS[:5] and w not in FSDP2_STRATEGIES]
        if other:
            raise SwiftlikeError(f"{where}: {other[0]} exists only in FSDP1; FSDP2 (the default) takes full_shard or "
                                 f"shard_grad_op")
    policy = config.get("auto_wrap_policy")
    if policy is not None and policy not in WRAP_POLICIES:
        raise SwiftlikeError(f"{where}: auto_wrap_policy {policy!r}; use {', '.join(WRAP_POLICIES)}")
    kind = config.get("state_dict_type")
    if kind is not None and str(kind).upper() not in STATE_DICT_TYPES:
        raise SwiftlikeError(f"{where}: state_dict_type {kind!r}; use {', '.join(STATE_DICT_TYPES)}")
    layers = config.get("transformer_layer_cls_to_wrap")
    if layers is not None and not isinstance(layers, (str, list)):
        raise SwiftlikeError(f"{where}: transformer_layer_cls_to_wrap must be a class name or a list of them")


def enable_on_cpu(trainer) -> None:
    """FSDP for a Trainer whose processes run on the CPU (gloo). accelerate builds its FSDP state only for
    accelerator devices: with `use_cpu` and torchrun it sets MULTI_CPU and drops the plugin, and the Trainer would
    silently train plain DDP. FSDP2 itself shards on a CPU device mesh over gloo, so the state is set as accelerate
    would on a GPU (the plugin from the Trainer's own arguments) before anything is prepared."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if state.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    # as accelerate does for FSDP on a GPU: every later AcceleratorState() copies the process state's type back
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True


def save_gathered_adapter(trainer, output_dir: str) -> None:
    """The adapter of an FSDP-sharded PEFT model as whole tensors, written by the main process only.

    Under FSDP2 every parameter is a DTensor holding this rank's slice; saved as it is, an adapter would be one
    rank's rows (PEFT then finds 1-D or short lora tensors). Here each trainable tensor is gathered — a collective,
    so every rank runs it, in the state dict's order — and only the main process keeps and writes them. Frozen base
    weights are never gathered (the Trainer's FULL_STATE_DICT path gathers the whole model onto rank 0 first), and
    the adapter is written whatever fsdp_config's state_dict_type is (with SHARDED_STATE_DICT the Trainer writes
    none)."""
    import os

    import torch
    from torch.distributed.tensor import DTensor

    model = trainer.accelerator.unwrap_model(trainer.model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    main = trainer.args.should_save
    whole = {}
    for key, value in model.state_dict().items():
        if isinstance(value, DTensor):
            if key not in trainable:
                continue  # a frozen, sharded base weight: never part of an adapter
            value = value.full_tensor()
        if main:
            whole[key] = value.detach().to("cpu", copy=True)
    if not main:
        return
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir, state_dict=whole, is_main_process=True)
    torch.save(trainer.args, os.path.join(output_dir, "training_args.bin"))
