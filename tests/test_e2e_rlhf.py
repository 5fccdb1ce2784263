"""Preference training on the real embedded SmolLM2-135M-Instruct, judged by the neutral script in ../shared/bench:
the README's DPO quick-start (with RPO), ORPO, SimPO and KTO each move held-out behaviour above the base model's
(short runs; the full-epoch figures are in BENCHMARKS.md)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (SHARED / "eval_pref.py").exists(),
                                                   reason="../shared/bench is not beside the checkout")]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    return {**os.environ, "SWIFTLIKE_HOME": os.environ.get("SWIFTLIKE_HOME", str(home)), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """Six identity and six one-word pairs of the held-out set (the base answers none of the identity ones right);
    twelve, not all 23, because each judged row costs seconds on CI's two cores and the judge runs five times."""
    rows = [json.loads(line) for line in (SHARED / "pref_heldout.jsonl").read_text().splitlines() if line.strip()]
    keep = [r for r in rows if "synonym" in r["messages"][-2]["content"]][:6] + \
        [r for r in rows if "Nova" in r["messages"][-1]["content"]][:6]
    path = tmp_path_factory.mktemp("judge") / "heldout.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in keep))
    return path


def _model_dir(env):
    code = "from swiftlike.models import resolve_model; print(resolve_model('smollm2-135m-instruct').path)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True).stdout.strip().splitlines()[-1]


def _behaviour(env, adapter, heldout) -> float:
    proc = subprocess.run([sys.executable, str(SHARED / "eval_pref.py"), _model_dir(env), str(adapter), str(heldout),
                           "chatml"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(re.search(r"behaviour ([\d.]+)", proc.stdout).group(1))


@pytest.fixture(scope="module")
def base_behaviour(env, heldout):
    return _behaviour(env, "-", heldout)


# Each stage: a short run and the judge on 12 rows, 45-70 s on 2 cores. Steps and rates (2026-12-04, behaviour on
# these rows against the base's 0.333): DPO+RPO 40 steps at 2e-4; ORPO 30 at 4e-4 -> 0.583 (0.5 at 20 steps); SimPO
# 40 at 2e-4 -> 0.75 (0.5 at 20 or 30 steps at 4e-4); KTO, which sees each pair as two single-answer rows, 30 at 1e-3
# -> 0.75 (0.333 at 20 steps, 0.417 at 40 steps of 5e-4). Full-epoch figures for all of them: BENCHMARKS.md.
@pytest.mark.parametrize("rlhf_type, steps, rate, extra", [
    ("dpo", 40, "2e-4", ["--rpo_alpha", "1.0"]), ("orpo", 30, "4e-4", []), ("simpo", 40, "2e-4", []),
    ("kto", 30, "1e-3", []),
])
def test_preference_training_beats_the_base(env, heldout, base_behaviour, tmp_path, rlhf_type, steps, rate, extra):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "rlhf", "--rlhf_type", rlhf_type, "--model_type",
                           "smollm2-135m-instruct", "--template", "chatml", "--dataset",
                           str(SHARED / "pref_train.jsonl"), "--max_steps", str(steps), "--learning_rate", rate,
                           "--output_dir", str(out), "--add_output_dir_suffix", "false", "--report_to", "none",
                           *extra], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    behaviour = _behaviour(env, out / f"checkpoint-{steps}", heldout)
    print(f"{rlhf_type}: behaviour {behaviour} (base {base_behaviour})")
    assert behaviour > base_behaviour, (rlhf_type, behaviour, base_behaviour)


RM_STEPS, RM_RATE = "100", "1e-4"  # one epoch of the 400 pairs at batch 4, as measured in BENCHMARKS.md


def _new_sums(n: int) -> list:
    """Sum pairs made like the benchmark's but on operands none of its sums use (the right sum against one off by a
    little or by ten): what tells a reward model that checks sums from one that learnt the benchmark's."""
    import random

    taken = set()
    for name in ("pref_train.jsonl", "pref_heldout.jsonl"):
        for line in (SHARED / name).read_text().splitlines():
            m = re.match(r"(\d+) \+ (\d+) = ", json.loads(line)["messages"][-1]["content"]) if line.strip() else None
            if m:
                taken.add((int(m[1]), int(m[2])))
    rng, rows = random.Random(5), []
    while len(rows) < n:
        a, b = rng.randint(1, 60), rng.randint(1, 60)
        if (a, b) not in taken:
            taken.add((a, b))
            rows.append({"messages": [{"role": "user", "content": f"What is {a} + {b}?"},
                                      {"role": "assistant", "content": f"{a} + {b} = {a + b}."}],
                         "rejected_response": f"{a} + {b} = {a + b + rng.choice([1, -1, 2, -2, 3, -3, 10])}."})
    return rows


def test_implicit_reward_model_ranks_held_out_pairs(env, tmp_path):
    """The issue's reward-model outcome: `--rlhf_type rm --rm_type implicit` on the 400 benchmark pairs ranks >= 90 %
    of the 60 held-out pairs right under `swiftlike eval`, and checks sums it never saw (the score-head reward model
    is at chance on new sums: BENCHMARKS.md)."""
    out = tmp_path / "rm"
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "rlhf", "--rlhf_type", "rm", "--rm_type", "implicit",
                           "--model_type", "smollm2-135m-instruct", "--template", "chatml",
                           "--dataset", str(SHARED / "pref_train.jsonl"), "--max_steps", RM_STEPS,
                           "--learning_rate", RM_RATE, "--output_dir", str(out), "--add_output_dir_suffix", "false",
                           "--report_to", "none"], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sums = tmp_path / "new_sums.jsonl"
    sums.write_text("\n".join(json.dumps(r) for r in _new_sums(40)))
    held = SHARED / "pref_heldout.jsonl"
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "eval", "--ckpt_dir", str(out / f"checkpoint-{RM_STEPS}"),
                           "--val_dataset", str(held), str(sums), "--output_dir", str(tmp_path / "eval")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(next((tmp_path / "eval" / "eval_result").iterdir()).joinpath("metrics.json").read_text())
    ranked = next(iter(metrics["models"].values()))
    print(f"implicit reward model: held-out {ranked[f'accuracy[{held}]']}, new sums {ranked[f'accuracy[{sums}]']}")
    assert ranked[f"accuracy[{held}]"] >= 0.9 and ranked[f"accuracy[{sums}]"] >= 0.8, ranked
