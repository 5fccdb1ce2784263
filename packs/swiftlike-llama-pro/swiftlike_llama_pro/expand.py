"""Block expansion on a loaded decoder model (torch only; no extra library)."""
from __future__ import annotations

import copy

from swiftlike.registry import SwiftlikeError

# the projections that write into the residual stream, per architecture family: zeroed, a copied block adds nothing
OUTPUT_PROJECTIONS = ("self_attn.o_proj", "mlp.down_proj", "attn.c_proj", "mlp.c_proj", "self_attention.dense",
                      "mlp.dense_4h_to_h")


def check(args) -> None:
    """Before anything loads: only num_expand, a positive integer; a whole model is saved, so no adapter options."""
    options = args.tuner_options()
    bad = sorted(set(options) - {"num_expand"})
    if bad:
        raise SwiftlikeError(f"--tuner_args: {bad[0]!r} is not an option of llama_pro; its option: num_expand")
    n = options.get("num_expand")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise SwiftlikeError(f"--tuner_args num_expand {n!r}: a positive integer")


def _layers(model):
    for name, module in model.named_modules():
        if name.endswith("layers") and hasattr(module, "__len__") and len(module) > 0:
            return name, module
    raise SwiftlikeError("llama_pro: cannot find the model's decoder layers (no `*.layers` ModuleList)")


def expand(model, num_expand: int) -> list[int]:
    """Insert the copies in place; returns the indices of the new blocks in the expanded model."""
    import torch

    _, layers = _layers(model)
    n = len(layers)
    if n % num_expand:
        raise SwiftlikeError(f"llama_pro: {n} layers do not split into {num_expand} equal groups; choose "
                             f"num_expand among {[d for d in range(1, n + 1) if n % d == 0]}")
    group = n // num_expand
    blocks, new = [], []
    for i, block in enumerate(layers):
        blocks.append(block)
        if (i + 1) % group == 0:
            twin = copy.deepcopy(block)
            zeroed = 0
            for name, module in twin.named_modules():
                if name.endswith(OUTPUT_PROJECTIONS) and isinstance(module, torch.nn.Linear):
                    torch.nn.init.zeros_(module.weight)
                    if module.bias is not None:
                        torch.nn.init.zeros_(module.bias)
                    zeroed += 1
            if zeroed < 2:
                raise SwiftlikeError(f"llama_pro: block {i} has no attention-output and MLP-down projections named "
                                     f"like {', '.join(OUTPUT_PROJECTIONS)}; this architecture is not supported")
            new.append(len(blocks))
            blocks.append(twin)
    for i, block in enumerate(blocks):  # the KV cache is indexed by each attention's layer_idx
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = i
    del layers[:]
    layers.extend(blocks)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    config.num_hidden_layers = len(blocks)
    types = getattr(config, "layer_types", None)
    if types:  # a copy has its original's attention type
        expanded = []
        for i, kind in enumerate(types):
            expanded += [kind, kind] if (i + 1) % group == 0 else [kind]
        config.layer_types = expanded
    return new


def prepare(model, args):
    """The expanded model with only the new blocks trainable."""
    _, layers = _layers(model)
    n = len(layers)
    # default: a quarter of the layers (LLaMA-Factory's examples: 8 new blocks on 32), rounded to a divisor
    num_expand = args.tuner_options().get("num_expand") or max(d for d in range(1, max(1, n // 4) + 1) if n % d == 0)
    new = set(expand(model, int(num_expand)))
    name, layers = _layers(model)
    for pname, p in model.named_parameters():
        index = pname[len(name) + 1:].split(".", 1)[0] if pname.startswith(name + ".") else None
        p.requires_grad_(index is not None and int(index) in new)
    return model
