"""LoRA's initialisations and LoRA+ / NEFTune on the sft benchmark job (the job of bench/sft_compare.py: SmolLM2-135M,
ChatML, r8 α32 all-linear, dropout 0, batch 4, 1 epoch, max_length 256, lr 1e-4, fp32 on CPU, seed 42), one variant
after another. Prints whole-process wall, peak RSS, train loss and the held-out loss of the neutral script (plain
transformers + peft on the ORIGINAL base: the PiSSA/OLoRA/CorDA adapters are the converted ones swiftlike saves).

    SWIFTLIKE_HOME=/tmp/slhome python bench/lora_inits.py [--only default,pissa_niter_4,...] [--max_steps N]
                                                          [--work DIR] [--init_only]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_compare import CFG, SHARED, heldout_loss, run_swiftlike  # noqa: E402

VARIANTS = {
    "default": [],
    "pissa_niter_4": ["--init_lora_weights", "pissa_niter_4"],
    "olora": ["--init_lora_weights", "olora"],
    "corda": ["--init_lora_weights", "corda"],
    "eva": ["--init_lora_weights", "eva"],
    "loraplus_16": ["--loraplus_lr_ratio", "16"],
    "neftune_5": ["--neftune_noise_alpha", "5"],
}


def run(name, extra, model_dir, data, work, max_steps=-1):
    return run_swiftlike(model_dir, data, work, ["--max_steps", str(max_steps), *extra], name=name)


def init_cost(names, model_dir, data, work):
    """Seconds of the model + tuner phase (load, initialise, fuse) per variant, in this process, no training: the
    initialisation's own cost is the difference from `default`."""
    import time

    from swiftlike.train.arguments import SftArguments
    from swiftlike.train.sft import SftRecipe

    print(f"{'variant':14} {'setup_model s':>13}", flush=True)
    for name in names:
        extra = VARIANTS[name]
        opts = {extra[i].lstrip("-"): extra[i + 1] for i in range(0, len(extra), 2)}
        args = SftArguments(model=str(model_dir), template="chatml", dataset=[str(data)], lora_rank=CFG["rank"],
                            lora_alpha=CFG["alpha"], lora_dropout=0.0, per_device_train_batch_size=CFG["batch"],
                            max_length=CFG["max_length"], torch_dtype="float32", seed=CFG["seed"],
                            output_dir=str(work / f"init-{name}"), report_to=["none"], **{
                                k: float(v) if k.endswith(("ratio", "alpha")) else v for k, v in opts.items()})
        recipe = SftRecipe(args)
        recipe.check()
        recipe.resolve()
        recipe.setup_tokenizer()
        recipe.setup_data()
        recipe.setup_output()
        t = time.perf_counter()
        recipe.setup_model()
        print(f"{name:14} {time.perf_counter() - t:13.2f}", flush=True)
        del recipe


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(VARIANTS))
    ap.add_argument("--work", default=None)
    ap.add_argument("--train", default=str(SHARED / "train.jsonl"))
    ap.add_argument("--heldout", default=str(SHARED / "heldout.jsonl"))
    ap.add_argument("--max_steps", type=int, default=-1, help="stop each run early (-1: the whole epoch)")
    ap.add_argument("--init_only", action="store_true", help="time only each variant's model + tuner set-up")
    args = ap.parse_args()
    from swiftlike.models import resolve_model

    model_dir = resolve_model("smollm2-135m-instruct").path
    work = Path(args.work or tempfile.mkdtemp(prefix="lora-inits-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.init_only:
        return init_cost(args.only.split(","), model_dir, args.train, work)
    rows = [json.loads(line) for line in Path(args.heldout).read_text().splitlines() if line.strip()]
    print(f"work: {work}\n{'variant':14} {'wall s':>7} {'RSS MiB':>8} {'train loss':>10} {'held-out':>9}", flush=True)
    for name in args.only.split(","):
        r = run(name, VARIANTS[name], model_dir, args.train, work, args.max_steps)
        held = heldout_loss(model_dir, r["adapter"], rows) if r["adapter"] else None
        fmt = lambda v, spec: format(v, spec) if v is not None else "failed"
        print(f"{name:14} {r['wall']:7.1f} {r['rss']:8.0f} {fmt(r['train_loss'], '10.4f')} {fmt(held, '9.4f')}",
              flush=True)


if __name__ == "__main__":
    main()
