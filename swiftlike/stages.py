"""The training stages with the adapter marketplace wired in: `--adapters` takes an installed adapter's name or a
hub reference as well as a directory. (train/ and adapters/ are siblings that do not import each other; this layer
joins them.)"""
from __future__ import annotations


def _resolver():
    from .adapters import resolve

    return resolve


def sft(args=None, **kwargs) -> dict:
    """Supervised fine-tuning (see swiftlike.train.arguments.SftArguments)."""
    from .train.sft import sft as run

    return run(args, resolve_adapter=_resolver(), **kwargs)


def pt(args=None, **kwargs) -> dict:
    """Continued pretraining on raw text (see swiftlike.train.arguments.PtArguments)."""
    from .train.pt import pt as run

    return run(args, resolve_adapter=_resolver(), **kwargs)


def rlhf(args=None, **kwargs) -> dict:
    """Preference and RL training: dpo, kto, orpo, simpo, cpo, rm, ppo, grpo (see RlhfArguments)."""
    from .train.rlhf import rlhf as run

    return run(args, resolve_adapter=_resolver(), **kwargs)
