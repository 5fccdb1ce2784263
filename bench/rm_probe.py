"""What a reward model's score head can read from the frozen embedded model on the benchmark's sum pairs.

For each sum pair of ../shared/bench/pref_train.jsonl (train) and pref_heldout.jsonl (held-out), encoded as
`--rlhf_type rm` encodes them (swiftlike's ChatML template, the answer's end-of-turn token included), this takes the
hidden states of every few layers at the last three positions (the end-of-turn token, the final ".", the last digit),
at the first token where chosen and rejected differ (the wrong digit) and at the token after it, and fits a linear
probe on chosen-minus-rejected (logistic, L2), as a score head on a frozen body would. It also counts the pairs whose
summed answer log-probability prefers the chosen answer. Prints train / held-out counts; `--fresh_sums N` also scores
the probes on N new sum pairs made by bench/rm_seeds.py (22 held-out sums are too few to tell luck from a feature).

    python bench/rm_probe.py [--model_type smollm2-135m-instruct] [--fresh_sums 200]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench"
POSITIONS = {"end-of-turn": -1, "final '.'": -2, "last digit": -3, "wrong digit": None, "after it": None}


def sums(path: Path) -> list:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "+" in r["rejected_response"]]


def features(model, template, rows) -> list:
    from swiftlike.train.rlhf.encode import encode_answer

    out = []
    for row in rows:
        pair = []
        seqs = [encode_answer(template, row["messages"][:-1], answer)
                for answer in (row["messages"][-1]["content"], row["rejected_response"])]
        first = next(k for k, (a, b) in enumerate(zip(*(p + i for p, i in seqs))) if a != b)
        for prompt, ids in seqs:
            x = torch.tensor([prompt + ids])
            with torch.no_grad():
                o = model(x, output_hidden_states=True)
            hidden = torch.stack(o.hidden_states)[:, 0]  # layers+1, tokens, width
            logp = torch.log_softmax(o.logits[0, :-1], -1).gather(1, x[0, 1:, None])[-len(ids):].sum().item()
            at = dict(POSITIONS, **{"wrong digit": first, "after it": first + 1})
            pair.append(({name: hidden[:, pos] for name, pos in at.items()}, logp))
        out.append(pair)
    return out


def probe(train, held, name, layer, l2) -> tuple[int, int]:
    x = torch.stack([c[0][name][layer] - r[0][name][layer] for c, r in train])
    xt = torch.stack([c[0][name][layer] - r[0][name][layer] for c, r in held])
    scale = x.std() + 1e-6
    x, xt = x / scale, xt / scale
    w = torch.zeros(x.shape[1], requires_grad=True)
    opt = torch.optim.Adam([w], lr=1e-2)
    for _ in range(500):
        loss = torch.nn.functional.softplus(-(x @ w)).mean() + l2 * (w ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return int((x @ w > 0).sum()), int((xt @ w > 0).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model_type", default="smollm2-135m-instruct")
    ap.add_argument("--template", default="chatml")
    ap.add_argument("--fresh_sums", type=int, default=0, help="also score the probes on this many new sum pairs")
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from swiftlike.models import resolve_model
    from swiftlike.templates import get_template

    torch.manual_seed(0)
    path = resolve_model(args.model_type).path
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    template = get_template(args.template, tok)
    train = features(model, template, sums(SHARED / "pref_train.jsonl"))
    held = features(model, template, sums(SHARED / "pref_heldout.jsonl"))
    if args.fresh_sums:
        from rm_seeds import fresh_sums

        path = fresh_sums(args.fresh_sums, Path(tempfile.mkdtemp()) / "fresh_sums.jsonl")
        held = features(model, template, [json.loads(line) for line in path.read_text().splitlines()])
    print(f"{len(train)} train / {len(held)} {'fresh' if args.fresh_sums else 'held-out'} sum pairs")
    print(f"summed answer log-prob prefers the chosen answer: train {sum(c[1] > r[1] for c, r in train)}, "
          f"evaluated {sum(c[1] > r[1] for c, r in held)}")
    layers = range(3, len(train[0][0][0]["end-of-turn"]), 3)
    for l2 in (1e-2, 1e-1, 1.0):
        for name in POSITIONS:
            cells = "  ".join(f"L{layer}:{a}/{b}" for layer in layers
                              for a, b in [probe(train, held, name, layer, l2)])
            print(f"linear probe, L2 {l2:g}, {name:12s} (train/evaluated right)  {cells}")


if __name__ == "__main__":
    main()
