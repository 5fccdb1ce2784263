"""Template-encode throughput: swiftlike (smollm2 template) vs ms-swift (chatml template), same rows, same run.

    SWIFTLIKE_HOME=/tmp/slhome python bench/encode.py [--rows 10000] [--model-dir DIR]
        [--msswift-python /work/venvs/msswift/bin/python | none] [--extra-jsonl ../shared/bench/train.jsonl]

Generates --rows deterministic multi-turn chat rows (seeded: 1-3 user/assistant rounds, ~35% with a system
message, ~25% Chinese or mixed text; mostly 50-400 tokens incl. the system prompt, median ~145, Chinese rows up to
~750 with this English-centric BPE), writes them to a temp jsonl that both engines read, and times:
  swiftlike  serial          Template.encode(messages) over every row, one process
  swiftlike  parallel(2)     swiftlike.data.encode_dataset(rows, tpl, num_proc=2, cache_dir=False)
  swiftlike  cache miss      encode_dataset(..., num_proc=2, cache_dir=TMP)  (key + encode + write .npz)
  swiftlike  cache hit       the same call again (key + load .npz)
  ms-swift   serial          template.encode({'messages': ...}) over every row (bench/_msswift_encode.py,
                             run in ms-swift's own virtualenv; tokenizer/template setup not timed)
Rows without a system message get SmolLM2's default system prompt on both sides (swiftlike's smollm2 template
injects it; ms-swift gets it as default_system), so both encode the same text. Then the first 200 rows, each given
an explicit system message, are encoded by both and their input_ids and supervised positions compared.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_MSSWIFT_PYTHON = "/work/venvs/msswift/bin/python"
COMPARE_ROWS = 200
COMPARE_SYSTEM = "You are a helpful assistant."

# --- deterministic rows -----------------------------------------------------------------------------------------

_EN_SUBJECTS = ["a binary search tree", "the Python GIL", "compound interest", "photosynthesis", "a REST API",
                "gradient descent", "the French Revolution", "a sourdough starter", "TCP congestion control",
                "unit testing", "the water cycle", "a hash map", "public key cryptography", "a marathon plan",
                "LoRA fine-tuning", "the stock market", "a budget spreadsheet", "container networking",
                "black holes", "a job interview", "the immune system", "SQL joins", "climate change",
                "a vegetable garden", "git rebase", "recursion", "inflation", "a cover letter"]
_EN_QUESTIONS = ["Can you explain {s} in simple terms?", "What is the best way to learn about {s}?",
                 "How does {s} actually work?", "What are common mistakes people make with {s}?",
                 "Give me {n} tips about {s}.", "Write a short paragraph about {s} for a beginner.",
                 "What is the difference between {s} and {t}?", "I am confused about {s}. Where should I start?",
                 "Summarize {s} in a few sentences.", "Why do people care about {s}?",
                 "Could you compare {s} with {t} and tell me which one matters more for a student?"]
_EN_FOLLOWUPS = ["Thanks! Can you give an example?", "Can you make that shorter?", "Why is that?",
                 "What about {t}?", "Interesting. How would I explain this to a child?",
                 "Could you put that in a list?", "Is there anything I should avoid?", "And how long does it take?"]
_EN_OPENERS = ["Sure!", "Great question.", "Of course.", "Here is a short overview.", "Happy to help.",
               "Let me break it down."]
_EN_SENTENCES = ["{S} is easiest to understand when you start from a concrete example.",
                 "The key idea is that each step builds on the previous one, so small mistakes add up quickly.",
                 "Most beginners overcomplicate {s}; focus on the basics first and practice a little every day.",
                 "A useful mental model is to think of it as a pipeline with an input, a transformation and an output.",
                 "In practice, you will want to measure the result before and after each change.",
                 "One common pitfall is ignoring edge cases, such as empty inputs or very large values.",
                 "Compared with {t}, it trades some simplicity for flexibility.",
                 "If you only remember one thing, remember that consistency matters more than intensity.",
                 "You can read more in any introductory textbook, but hands-on practice is what makes it stick.",
                 "For example, imagine you have 1,000 items and need to find one of them in under a second.",
                 "The cost grows roughly linearly at first and then levels off once the system warms up.",
                 "It also helps to write down what you expect to happen before you try it.",
                 "Experts usually disagree on the details, but the overall picture is well established.",
                 "This is why {s} shows up in so many different fields, from engineering to biology.",
                 "Keep notes as you go; they will save you time when you revisit the topic later."]
_ZH_QUESTIONS = ["请用简单的语言解释一下{z}。", "{z}的主要优点和缺点是什么？", "我应该如何开始学习{z}？",
                 "能给我三个关于{z}的建议吗？", "{z}和{y}有什么区别？", "请写一段关于{z}的简短介绍。"]
_ZH_FOLLOWUPS = ["谢谢！能举个例子吗？", "可以说得更简短一些吗？", "为什么会这样？", "那{y}呢？"]
_ZH_TOPICS = ["机器学习", "量子计算", "中国古代历史", "健康饮食", "时间管理", "区块链", "深度学习", "气候变化",
              "太阳系", "数据库索引", "跑步训练", "个人理财", "大语言模型微调", "唐诗宋词"]
_ZH_SENTENCES = ["{Z}的核心思想其实并不复杂，关键是从具体的例子入手。", "很多初学者会犯的一个错误是急于求成，忽视了基础。",
                 "建议你每天花一点时间练习，坚持比强度更重要。", "和{y}相比，{z}更注重实际应用和长期积累。",
                 "举个例子，如果你有一千条数据，就可以先用一小部分做实验。", "在实践中，记录每一步的结果会帮助你更快地发现问题。",
                 "这也是为什么{z}在很多领域都有广泛的应用。", "总的来说，理解原理之后再动手，会事半功倍。",
                 "你可以先阅读一本入门书籍，然后通过小项目来巩固所学的知识。", "需要注意的是，不同的场景下最佳做法可能并不相同。"]
_SYSTEMS = ["You are a helpful assistant.", "You are a concise assistant. Answer in as few words as possible.",
            "You are a patient tutor who explains things step by step.", "你是一个乐于助人的中文助手。",
            "You are an expert software engineer. Prefer short, correct answers with examples.",
            "You are a friendly assistant named Nova, created by Orbit Labs."]


def _fill(text: str, rng: random.Random) -> str:
    s, t = rng.sample(_EN_SUBJECTS, 2)
    z, y = rng.sample(_ZH_TOPICS, 2)
    return text.format(s=s, t=t, S=s[0].upper() + s[1:], n=rng.choice([2, 3, 5]), z=z, y=y, Z=z)


def _user(rng: random.Random, zh: bool, first: bool) -> str:
    if zh:
        text = _fill(rng.choice(_ZH_QUESTIONS if first else _ZH_FOLLOWUPS), rng)
        if first and rng.random() < 0.4:
            text = _fill(rng.choice(_ZH_SENTENCES), rng) + text
        return text
    text = _fill(rng.choice(_EN_QUESTIONS if first else _EN_FOLLOWUPS), rng)
    if first and rng.random() < 0.4:
        text = "I am working on a project. " + text
    return text


def _assistant(rng: random.Random, zh: bool) -> str:
    n = rng.choice([1, 1, 1, 2, 2, 2, 3, 3, 4, 5])
    if zh:
        parts = [_fill(rng.choice(_ZH_SENTENCES), rng) for _ in range(n)]
        if rng.random() < 0.2:  # some mixed-language replies
            parts.append(_fill(rng.choice(_EN_SENTENCES), rng))
        return "".join(parts)
    parts = [_fill(rng.choice(_EN_SENTENCES), rng) for _ in range(n)]
    if rng.random() < 0.3:
        return rng.choice(_EN_OPENERS) + "\n\n" + "\n".join(f"{i + 1}. {p}" for i, p in enumerate(parts))
    return rng.choice(_EN_OPENERS) + " " + " ".join(parts)


def make_rows(n: int, seed: int = 1234) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        zh = rng.random() < 0.25
        messages = []
        if rng.random() < 0.35:
            messages.append({"role": "system", "content": rng.choice(_SYSTEMS)})
        for r in range(rng.choice([1, 1, 1, 2, 2, 3])):
            messages.append({"role": "user", "content": _user(rng, zh, r == 0)})
            messages.append({"role": "assistant", "content": _assistant(rng, zh)})
        rows.append({"messages": messages})
    return rows


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


# --- measurements -----------------------------------------------------------------------------------------------

def time_serial(tpl, rows):
    from swiftlike.templates import SequenceTooLong

    tpl.encode(rows[0]["messages"])  # warm-up (jinja compile), not timed
    lengths, dropped = [], 0
    start = time.perf_counter()
    for row in rows:
        try:
            lengths.append(len(tpl.encode(row["messages"])["input_ids"]))
        except SequenceTooLong:
            dropped += 1
    return time.perf_counter() - start, lengths, dropped


def time_call(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run_msswift(python, script, rows_file, model_dir, system, max_length, compare_file, compare_out):
    cmd = [python, str(script), "--rows-file", str(rows_file), "--model-dir", str(model_dir),
           "--max-length", str(max_length), "--compare-file", str(compare_file), "--compare-out", str(compare_out)]
    if system is not None:
        cmd += ["--system", system]
    env = dict(os.environ, PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    result = None
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("engine") == "ms-swift":
                result = obj
    if proc.returncode != 0 or result is None:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-15:]
        raise RuntimeError(f"ms-swift subprocess failed (rc={proc.returncode}):\n" + "\n".join(tail))
    return result


def compare(tokenizer, tpl, compare_rows, ms_encoded):
    """Agreement of input_ids and supervised positions between swiftlike and ms-swift."""
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    newline = tokenizer.encode("\n", add_special_tokens=False)
    newline = newline[0] if len(newline) == 1 else None
    same_ids = same_sup = same_sup_but_nl = 0
    only_ms, only_sl = Counter(), Counter()
    first_id_diff = None
    for i, (row, ms) in enumerate(zip(compare_rows, ms_encoded)):
        sl = tpl.encode(row["messages"])
        ids_equal = sl["input_ids"] == ms["input_ids"]
        same_ids += ids_equal
        if not ids_equal and first_id_diff is None:
            first_id_diff = i
        sup_sl = {j for j, l in enumerate(sl["labels"]) if l != -100}
        sup_ms = {j for j, l in enumerate(ms["labels"]) if l != -100}
        same_sup += sup_sl == sup_ms
        if ids_equal:
            ids = ms["input_ids"]
            nl_after_end = {j for j in sup_ms if j > 0 and ids[j] == newline and ids[j - 1] == im_end}
            same_sup_but_nl += sup_sl == (sup_ms - nl_after_end)
            for j in sup_ms - sup_sl:
                prev = "<|im_end|>+" if j > 0 and ids[j - 1] == im_end else ""
                only_ms[prev + repr(tokenizer.decode([ids[j]]))] += 1
            for j in sup_sl - sup_ms:
                only_sl[repr(tokenizer.decode([ids[j]]))] += 1
    return dict(n=len(ms_encoded), same_ids=same_ids, same_sup=same_sup, same_sup_but_nl=same_sup_but_nl,
                only_ms=only_ms, only_sl=only_sl, first_id_diff=first_id_diff)


# --- main -------------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10000, help="number of rows (generated, plus --extra-jsonl)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--model-dir", help="tokenizer dir (default: resolve_model('smollm2-135m-instruct').path)")
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--num-proc", type=int, default=2)
    ap.add_argument("--msswift-python", default=DEFAULT_MSSWIFT_PYTHON,
                    help="python of ms-swift's virtualenv ('none' skips the ms-swift side)")
    ap.add_argument("--extra-jsonl", help="also include these canonical {'messages': ...} rows (counted in --rows)")
    args = ap.parse_args()
    if args.rows < 1:
        ap.error("--rows must be >= 1")

    from swiftlike.data import encode_dataset
    from swiftlike.models.load import load_tokenizer
    from swiftlike.templates import get_template

    model_dir = args.model_dir
    if not model_dir:
        from swiftlike.models import resolve_model

        model_dir = resolve_model("smollm2-135m-instruct").path
    tokenizer = load_tokenizer(str(model_dir))
    tpl = get_template("smollm2", tokenizer, max_length=args.max_length)

    extra = []
    if args.extra_jsonl:
        extra = [{"messages": r["messages"]} for r in read_jsonl(args.extra_jsonl) if r.get("messages")]
        extra = extra[:args.rows]
    rows = extra + make_rows(args.rows - len(extra), args.seed)
    compare_rows = []
    for r in rows[:COMPARE_ROWS]:
        msgs = r["messages"]
        if not any(m["role"] == "system" for m in msgs):
            msgs = [{"role": "system", "content": COMPARE_SYSTEM}] + msgs
        compare_rows.append({"messages": msgs})

    tmp = Path(tempfile.mkdtemp(prefix="swiftlike-bench-encode-"))
    try:
        rows_file, compare_file = tmp / "rows.jsonl", tmp / "compare.jsonl"
        write_jsonl(rows_file, rows)
        write_jsonl(compare_file, compare_rows)
        rows = read_jsonl(rows_file)  # both engines read the identical file
        n_sys = sum(any(m["role"] == "system" for m in r["messages"]) for r in rows)
        n_zh = sum(any("\u4e00" <= ch <= "\u9fff" for m in r["messages"] for ch in m["content"]) for r in rows)
        rounds = Counter(sum(m["role"] == "user" for m in r["messages"]) for r in rows)
        print(f"rows: {len(rows)} ({len(extra)} from --extra-jsonl), seed {args.seed}; with system {n_sys}, "
              f"with Chinese {n_zh}; rounds " + ", ".join(f"{k}:{v}" for k, v in sorted(rounds.items())))
        print(f"tokenizer: {model_dir} ({type(tokenizer).__name__}); swiftlike template smollm2, "
              f"max_length {args.max_length}; cpu count {os.cpu_count()}", flush=True)

        table = []
        secs, lengths, dropped = time_serial(tpl, rows)
        table.append(("swiftlike", "serial", len(rows), secs))
        print(f"tokens/row (swiftlike): min {min(lengths)}, median {statistics.median(lengths):.0f}, "
              f"mean {statistics.mean(lengths):.1f}, max {max(lengths)}; dropped {dropped}", flush=True)

        secs, (enc, _) = time_call(lambda: encode_dataset(rows, tpl, num_proc=args.num_proc, cache_dir=False))
        table.append(("swiftlike", f"encode_dataset num_proc={args.num_proc} no cache", len(enc), secs))
        cache_dir = tmp / "cache"
        secs, (enc_miss, _) = time_call(lambda: encode_dataset(rows, tpl, num_proc=args.num_proc,
                                                               cache_dir=cache_dir))
        table.append(("swiftlike", f"encode_dataset num_proc={args.num_proc} cache miss+write", len(enc_miss), secs))
        secs, (enc_hit, _) = time_call(lambda: encode_dataset(rows, tpl, num_proc=args.num_proc, cache_dir=cache_dir))
        table.append(("swiftlike", "encode_dataset cache hit", len(enc_hit), secs))
        consistent = enc == enc_miss == enc_hit
        del enc, enc_miss, enc_hit

        ms, cmp, ms_note = None, None, None
        python = args.msswift_python
        if python and python.lower() != "none" and Path(python).exists():
            compare_out = tmp / "msswift_compare.json"
            try:
                ms = run_msswift(python, Path(__file__).with_name("_msswift_encode.py"), rows_file, model_dir,
                                 tpl.default_system, args.max_length, compare_file, compare_out)
                table.append((f"ms-swift {ms.get('version', '')}".strip(), "serial (template.encode)", ms["rows"],
                              ms["seconds"]))
                cmp = compare(tokenizer, tpl, compare_rows, json.loads(compare_out.read_text()))
            except RuntimeError as err:
                ms_note = str(err)
        else:
            ms_note = ("ms-swift side skipped (--msswift-python none)" if python and python.lower() == "none"
                       else f"ms-swift side skipped: no python at {python!r} (pass --msswift-python)")

        print()
        print(f"{'engine':16s} {'mode':42s} {'rows':>6s} {'seconds':>8s} {'samples/s':>10s}")
        for engine, mode, n, s in table:
            print(f"{engine:16s} {mode:42s} {n:6d} {s:8.3f} {n / s if s else float('inf'):10.0f}")
        print(f"(encode_dataset results identical across no-cache / miss / hit: {consistent})")
        if ms is not None:
            ratio = (len(rows) / table[0][3]) / ms["samples_per_s"]
            print(f"swiftlike serial / ms-swift serial = {ratio:.2f}x")
            print(f"(ms-swift: chatml template, model_type llama, default_system = SmolLM2's default system so rows\n"
                  f" without one render the same text; its setup/import {ms['setup_seconds']:.1f}s not timed; "
                  f"dropped {ms['dropped']}; tokens {ms['tokens']} vs swiftlike {sum(lengths)})")
        if ms_note:
            print(ms_note)
        if cmp:
            n = cmp["n"]
            print()
            print(f"equivalence on the first {n} rows (each with an explicit system message):")
            print(f"  identical input_ids:                      {cmp['same_ids']}/{n}")
            print(f"  identical supervised (label != -100) set: {cmp['same_sup']}/{n}")
            print(f"  identical supervised set, ignoring ms-swift's '\\n' after <|im_end|>: "
                  f"{cmp['same_sup_but_nl']}/{n}")
            for who, key in (("ms-swift", "only_ms"), ("swiftlike", "only_sl")):
                if cmp[key]:
                    top = ", ".join(f"{k} x{v}" for k, v in cmp[key].most_common(5))
                    print(f"  supervised only by {who}: {top}")
            if cmp["first_id_diff"] is not None:
                print(f"  first row with different input_ids: {cmp['first_id_diff']}")
            if cmp["same_ids"] == n and cmp["same_sup_but_nl"] == n and cmp["same_sup"] < n:
                print("  => identical tokens. The only label difference: ms-swift's chatml also supervises the '\\n'\n"
                      "     after each assistant <|im_end|> (its chat_sep/suffix '<|im_end|>\\n' belongs to the\n"
                      "     response); swiftlike's smollm2 template supervises reply + <|im_end|> and leaves that\n"
                      "     '\\n' outside its {% generation %} block. Both supervise <|im_end|>.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
