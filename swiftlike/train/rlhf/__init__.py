"""`swiftlike rlhf --rlhf_type dpo|kto|orpo|simpo|cpo|rm|ppo|grpo`: preference and RL stages on TRL's trainers, on
the training recipe's phases (each type overrides its data, encoding, trainer and config)."""
from __future__ import annotations

import os

from ...registry import SwiftlikeError

# CPO, ORPO and PPO live in trl.experimental, which warns on every import; choosing them is swiftlike's decision,
# not something the user can act on
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
from .arguments import RLHF_TYPES, RlhfArguments


def recipe_for(args: RlhfArguments, resolve_adapter=None):
    import difflib

    from . import preference

    recipes = {"dpo": preference.DpoRecipe, "cpo": preference.CpoRecipe, "simpo": preference.CpoRecipe,
               "orpo": preference.OrpoRecipe}
    for name, module, cls in (("kto", "kto", "KtoRecipe"), ("rm", "reward_model", "RewardModelRecipe"),
                              ("grpo", "grpo", "GrpoRecipe"), ("ppo", "ppo", "PpoRecipe")):
        if args.rlhf_type == name:
            import importlib

            recipes[name] = getattr(importlib.import_module(f".{module}", __name__), cls)
    if args.rlhf_type not in RLHF_TYPES:
        hint = difflib.get_close_matches(args.rlhf_type, RLHF_TYPES, n=1)
        raise SwiftlikeError(f"--rlhf_type {args.rlhf_type!r}: use {', '.join(RLHF_TYPES)}"
                             + (f" (did you mean {hint[0]}?)" if hint else ""))
    if args.rlhf_type == "rm" and args.rm_type == "implicit":
        from .implicit_reward import ImplicitRewardRecipe

        recipes["rm"] = ImplicitRewardRecipe
    return recipes[args.rlhf_type](args, resolve_adapter=resolve_adapter)


def rlhf(args: RlhfArguments | None = None, resolve_adapter=None, **kwargs) -> dict:
    """Train a preference / RL stage; returns {"run_dir", "last_checkpoint", "metrics"}."""
    if args is None:
        args = RlhfArguments(**kwargs)
    elif kwargs:
        raise TypeError("rlhf() takes RlhfArguments or keyword arguments, not both")
    return recipe_for(args, resolve_adapter).run()
