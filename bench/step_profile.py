"""Where a training step's time goes: the sft_compare job (SmolLM2-135M, LoRA r8 all-linear, batch 4, fp32, CPU)
profiled in process with torch.profiler over steps 20-59, grouped by kind of work, beside the FLOP floor.

    python bench/step_profile.py [--steps 60] [--threads 2] [--table]

The floor: the matmul FLOPs a step cannot avoid (body forward + input gradient at every token, the output head at
supervised positions, LoRA's own small products) at the rate these cores multiply fp32 matrices, measured here on
the job's own shapes.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

GROUPS = [  # (group, substrings of op names), first match wins
    ("matmul (base, LoRA, head)", ("mkldnn::_linear_pointwise", "aten::mm", "aten::addmm", "aten::bmm", "aten::matmul",
                                   "aten::linear", "aten::addmm_")),
    ("attention (sdpa)", ("scaled_dot_product", "_flash_attention", "_efficient_attention", "aten::_scaled")),
    ("loss (cross-entropy)", ("cross_entropy", "log_softmax", "nll_loss", "_log_softmax")),
    ("optimizer", ("_fused_adamw", "Optimizer.step", "adamw", "_foreach")),
    ("element-wise", ("aten::mul", "aten::add", "aten::silu", "aten::rsqrt", "aten::pow", "aten::mean", "aten::neg",
                      "aten::cat", "aten::sum", "aten::div", "aten::sub", "aten::exp", "aten::copy_", "aten::fill_",
                      "aten::zero_", "aten::clone", "aten::contiguous", "aten::bernoulli", "aten::where",
                      "aten::_to_copy", "aten::to", "aten::sigmoid", "aten::slice", "aten::index", "aten::embedding",
                      "aten::gather", "aten::scatter", "aten::cos", "aten::sin", "aten::masked", "aten::empty",
                      "aten::threshold", "aten::norm", "aten::clamp", "aten::ne", "aten::eq")),
]


def matmul_rate(threads: int) -> float:
    """fp32 GFLOP/s of this machine on the job's shapes (tokens x 576 x 1536 and back), torch, `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    rates = []
    for m, k, n in ((145, 576, 1536), (145, 1536, 576), (145, 576, 576), (1024, 576, 1536), (2048, 2048, 2048)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        reps = max(3, int(2e9 / (2 * m * k * n)))
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        rates.append(2 * m * k * n * reps / (time.perf_counter() - t) / 1e9)
    return rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table", action="store_true", help="also print the top ops")
    args = ap.parse_args()
    import torch
    from transformers import TrainerCallback

    from sft_compare import CFG, SHARED
    from swiftlike.models import resolve_model
    from swiftlike.train.arguments import SftArguments
    from swiftlike.train.sft import SftRecipe

    torch.set_num_threads(args.threads)
    model_dir = resolve_model("smollm2-135m-instruct").path
    a = SftArguments(model=str(model_dir), template="chatml", dataset=[str(SHARED / "train.jsonl")],
                     lora_rank=CFG["rank"], lora_alpha=CFG["alpha"], lora_dropout=0.0, target_modules=["all-linear"],
                     per_device_train_batch_size=CFG["batch"], max_steps=args.steps, max_length=CFG["max_length"],
                     learning_rate=CFG["lr"], warmup_ratio=CFG["warmup"], weight_decay=CFG["wd"],
                     torch_dtype="float32", seed=CFG["seed"], output_dir="/tmp/step-profile", report_to=["none"],
                     add_output_dir_suffix=True, logging_steps=1000, save_strategy="no")
    recipe = SftRecipe(a)
    recipe.check(); recipe.resolve(); recipe.setup_tokenizer(); recipe.setup_data(); recipe.setup_output()
    recipe.setup_model(); recipe.setup_trainer()

    first, last = 20, args.steps - 1
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    marks = {}

    class Window(TrainerCallback):
        def on_step_begin(self, targs, state, control, **kw):
            if state.global_step == first:
                prof.__enter__()
                marks["t0"] = time.perf_counter()
                marks["tokens0"] = state.num_input_tokens_seen

        def on_step_end(self, targs, state, control, **kw):
            if state.global_step == last:
                marks["t1"] = time.perf_counter()
                marks["tokens1"] = state.num_input_tokens_seen
                prof.__exit__(None, None, None)

    recipe.trainer.add_callback(Window())
    recipe.train()
    steps = last - first
    wall_ms = (marks["t1"] - marks["t0"]) / steps * 1e3
    tokens = (marks["tokens1"] - marks["tokens0"]) / steps
    # supervised tokens per step, from the encoded data (the head runs at these positions only)
    sup = sum(sum(1 for x in s["labels"][1:] if x != -100) for s in recipe.train_data) / len(recipe.train_data)
    totals = collections.Counter()
    rows = []
    for ev in prof.key_averages():
        if ev.key.startswith("ProfilerStep") or ev.self_cpu_time_total <= 0:
            continue
        group = next((g for g, keys in GROUPS if any(k in ev.key for k in keys)), "other (dispatch, autograd, Python)")
        totals[group] += ev.self_cpu_time_total
        rows.append((ev.self_cpu_time_total, ev.count, ev.key))
    profiled = sum(totals.values()) / 1e3 / steps
    # per real token: body forward + input gradient (2 x 2 x body params), LoRA (3 small products, ~3 x 2 x lora)
    body = 0
    for name, p in recipe.model.named_parameters():
        if p.dim() == 2 and "embed" not in name and "lora" not in name:
            body += p.numel()
    lora = sum(p.numel() for n, p in recipe.model.named_parameters() if "lora" in n)
    head = recipe.model.get_output_embeddings().weight.numel()
    flops_token = 4 * body + 6 * lora
    flops_step = flops_token * tokens + 4 * head * sup * a.per_device_train_batch_size
    rates = matmul_rate(args.threads)
    rate = max(rates[:3])
    floor_ms = flops_step / (rate * 1e9) * 1e3
    print(json.dumps({"steps_profiled": steps, "tokens_per_step": round(tokens, 1),
                      "supervised_per_step": round(sup * a.per_device_train_batch_size, 1),
                      "gflop_per_step": round(flops_step / 1e9, 2), "matmul_gflops_job_shapes": [round(r) for r in rates],
                      "wall_ms_per_step": round(wall_ms, 1), "floor_ms_per_step": round(floor_ms, 1)}, indent=1))
    print(f"\n{'group':38s} {'ms/step':>8s} {'share':>6s}")
    for group, us in totals.most_common():
        print(f"{group:38s} {us / 1e3 / steps:8.1f} {us / 1e3 / steps / profiled:6.1%}")
    print(f"{'(profiled self time)':38s} {profiled:8.1f}   wall {wall_ms:.1f} ms/step (profiler overhead included)")
    if args.table:
        print()
        for us, count, key in sorted(rows, reverse=True)[:40]:
            print(f"{us / 1e3 / steps:8.2f} ms  {count / steps:7.1f}/step  {key}")


if __name__ == "__main__":
    main()
