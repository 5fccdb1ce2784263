"""Built-in reward functions for the RL stages. `func` is a 'module:function' string so nothing loads until used."""
from ..registry.hookspecs import hookimpl


@hookimpl
def register_rewards(register):
    register("accuracy", func="swiftlike.train.rlhf.rewards:accuracy",
             summary="1 when the answer (its \\boxed{} or <answer> if it marks one) is the row's `solution`, else 0")
    register("format", func="swiftlike.train.rlhf.rewards:format_reward",
             summary="1 when the answer matches --reward_format (a regex; default: <think>…</think><answer>…</answer>)")
    register("length", func="swiftlike.train.rlhf.rewards:length",
             summary="closer to --reward_length words (default 20) scores higher, from 1 down to 0")
