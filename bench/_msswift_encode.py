"""ms-swift side of bench/encode.py: runs inside ms-swift's own virtualenv (ms-swift 4.x API).

    /work/venvs/msswift/bin/python bench/_msswift_encode.py --rows-file ROWS.jsonl --model-dir DIR \
        [--system TEXT] [--max-length 2048] [--compare-file CMP.jsonl --compare-out OUT.json]

Loads the tokenizer from DIR (model_type llama, no weights), builds the `chatml` template in train mode, encodes
every row of ROWS.jsonl serially with `template.encode({'messages': ...})` and prints one JSON line
({"engine": "ms-swift", ...}) with the timing. With --compare-file it also writes the input_ids/labels of those
rows to --compare-out for the equivalence check.
"""
import argparse
import json
import sys
import time


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows-file", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--system", default=None, help="default system prompt for rows without one")
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--compare-file")
    ap.add_argument("--compare-out")
    args = ap.parse_args()

    t0 = time.perf_counter()
    import swift
    from swift import get_processor, get_template
    from swift.template import MaxLengthError

    # 4.x: get_processor == get_model_processor(load_model=False)[1]; a local dir needs an explicit model_type
    # (SmolLM2 is a LlamaForCausalLM). The tokenizer is the plain HF fast tokenizer with model_info attached.
    tokenizer = get_processor(args.model_dir, model_type="llama")
    template = get_template(tokenizer, default_system=args.system, max_length=args.max_length,
                            template_type="chatml", truncation_strategy="raise")
    template.set_mode("train")  # labels (supervised positions) are only produced in train mode
    setup_s = time.perf_counter() - t0

    rows = read_jsonl(args.rows_file)
    template.encode({"messages": rows[0]["messages"]})  # warm-up (lazy inits), not timed
    dropped = 0
    n_tokens = 0
    start = time.perf_counter()
    for row in rows:
        try:
            n_tokens += len(template.encode({"messages": row["messages"]})["input_ids"])
        except MaxLengthError:
            dropped += 1
    seconds = time.perf_counter() - start

    if args.compare_file and args.compare_out:
        out = []
        for row in read_jsonl(args.compare_file):
            enc = template.encode({"messages": row["messages"]})
            out.append({"input_ids": list(enc["input_ids"]), "labels": list(enc["labels"])})
        with open(args.compare_out, "w", encoding="utf-8") as f:
            json.dump(out, f)

    print(json.dumps({"engine": "ms-swift", "version": getattr(swift, "__version__", "?"), "mode": "serial",
                      "rows": len(rows), "dropped": dropped, "tokens": n_tokens, "seconds": seconds,
                      "samples_per_s": len(rows) / seconds if seconds else float("inf"),
                      "setup_seconds": setup_s, "template": "chatml", "model_type": "llama"}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
