"""`swiftlike adapter merge`: two tiny LoRA adapters trained by the real sft stage on two behaviours, combined with
PEFT's add_weighted_adapter into a store adapter that keeps both, is served by name and pushed like any other; and
each refusal (before torch loads, nothing written to the store)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swiftlike.registry import SwiftlikeError

COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown"]
ANIMALS = ["cat", "dog", "horse", "mouse", "tiger", "eagle", "shark", "rabbit", "wolf", "snake"]
ALPHA, BETA = "alpha alpha alpha.", "beta beta beta."


def _rows(words, answer):
    return [{"messages": [{"role": "user", "content": f"Tell me about the {w}."},
                          {"role": "assistant", "content": answer}]} for w in words]


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """Adapter X answers colour questions "alpha…", adapter Y animal questions "beta…" (the first 7 of each set;
    the last 3 are held-out probes)."""
    from swiftlike.train.arguments import SftArguments
    from swiftlike.train.sft import sft

    root = tmp_path_factory.mktemp("merge-sources")
    out = {}
    for key, words, answer in (("x", COLORS[:7], ALPHA), ("y", ANIMALS[:7], BETA)):
        data = root / f"{key}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in _rows(words, answer)))
        run = sft(SftArguments(model=str(tiny_model), template="smollm2", dataset=[str(data)],
                               output_dir=str(root / key), max_steps=12, per_device_train_batch_size=4,
                               learning_rate=3e-2, save_steps=12, logging_steps=12, max_length=64,
                               report_to=["none"], lora_rank=4, lora_alpha=8, lora_dropout=0.0, warmup_ratio=0.0,
                               seed=1))
        out[key] = run["last_checkpoint"]
    return out


def _answer_loss(loaded, rows) -> float:
    """Mean NLL of the expected answers' tokens, given each prompt as the template renders it."""
    tok, template, losses = loaded.tokenizer, loaded.template, []
    for row in rows:
        prompt = template.render(row["messages"][:-1], add_generation_prompt=True)
        p = tok(prompt, add_special_tokens=False).input_ids
        a = tok(row["messages"][-1]["content"], add_special_tokens=False).input_ids
        ids = torch.tensor([p + a])
        labels = torch.tensor([[-100] * len(p) + a])
        with torch.no_grad():
            losses.append(float(loaded.model(input_ids=ids, labels=labels).loss))
    return sum(losses) / len(losses)


def _store_names():
    from swiftlike.adapters.store import list_adapters

    return sorted(a.name for a in list_adapters() if not a.plugin)


def _store_untouched(before):
    """The same adapters as before, and no version, staging dir or trash left behind by a refused merge."""
    from swiftlike.adapters.store import store_root

    root = store_root()
    leftovers = [p for sub in (".staging", ".trash") if (root / sub).is_dir() for p in (root / sub).iterdir()
                 if p.suffix != ".lock"]
    versions = len(list((root / ".versions").iterdir())) if (root / ".versions").is_dir() else 0
    return _store_names() == before and not leftovers and versions == len(before)


def test_cat_and_ties_keep_both_behaviours(trained, swiftlike_home, tmp_path, monkeypatch):
    from swiftlike.adapters.publish import push
    from swiftlike.adapters.store import install, verify
    from swiftlike.checksums import sha256_file
    from swiftlike.combine import merge_adapters
    from swiftlike.infer import load_checkpoint

    made = merge_adapters([str(trained["x"]), str(trained["y"])], method="cat", name="xy")
    tied = merge_adapters([str(trained["x"]), str(trained["y"])], method="ties", density=0.9, name="xy-ties")
    assert made.path == swiftlike_home / "adapters" / "xy" and verify("xy").name == "xy"

    manifest = json.loads((made.path / "swiftlike.json").read_text())
    recipe = manifest["recipe"]
    assert (recipe["method"], recipe["weights"], recipe["density"]) == ("cat", [1.0, 1.0], None)
    assert [s["manifest_sha256"] for s in recipe["sources"]] == [sha256_file(trained[k] / "swiftlike.json")
                                                                 for k in "xy"]
    assert manifest["tuner_config"]["r"] == 8  # cat: the sum of the ranks
    assert manifest["base_model_type"] == json.loads((trained["x"] / "swiftlike.json").read_text())["base_model_type"]
    assert tied.manifest["recipe"]["density"] == 0.9 and tied.manifest["tuner_config"]["r"] == 4
    card = (made.path / "README.md").read_text()
    assert "## Recipe" in card and "method `cat`" in card and recipe["sources"][0]["manifest_sha256"][:16] in card

    x_probes, y_probes = _rows(COLORS[7:], ALPHA), _rows(ANIMALS[7:], BETA)
    loss = {}
    for key, ckpt in (("x", trained["x"]), ("y", trained["y"]), ("cat", "xy"), ("ties", "xy-ties")):
        loaded = load_checkpoint(ckpt)
        loss[key] = (_answer_loss(loaded, x_probes), _answer_loss(loaded, y_probes))
    print("held-out answer loss (x-probes, y-probes):", loss)
    for merged in ("cat", "ties"):
        # each source knows its own behaviour only; the merge keeps both: better in total than either alone
        assert sum(loss[merged]) < min(sum(loss["x"]), sum(loss["y"])), (merged, loss)
        assert loss[merged][0] < loss["y"][0] and loss[merged][1] < loss["x"][1], (merged, loss)

    # pushable and installable like any adapter
    monkeypatch.setenv("SWIFTLIKE_LOCAL_HUB", str(tmp_path / "hub"))
    pushed = push(made.path, "local:acme/xy", require_manifest=True)
    again = install(pushed, name="xy-copy")
    assert json.loads((again.path / "swiftlike.json").read_text())["recipe"] == recipe


def test_serve_loads_a_merged_adapter_by_name(trained, swiftlike_home, tiny_model):
    """A `cat` result (rank 4+4) served by its store name answers what infer answers with it."""
    from test_serve import ASK, Server
    from test_serve_engine import reference

    from swiftlike.combine import merge_adapters

    merge_adapters([str(trained["x"]), str(trained["y"])], method="cat", weights=[1.0, 0.5], name="combo")
    want = reference("combo", ASK, 12)
    server = Server(model=str(tiny_model), template="smollm2", adapters=["combo=combo"], max_tokens=32)
    try:
        r = server.chat("combo", max_tokens=12)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == want
        # the admin API loads it by name too (as any installed adapter)
        assert any(row.get("name") == "combo" for row in server.rt.pool.snapshot())
    finally:
        server.close()


@pytest.fixture(scope="module")
def odd(tiny_model, tmp_path_factory):
    """Cheap adapters (no training) for the refusals: rank 8, DoRA, rsLoRA, another base, another template, a regex
    target."""
    from test_serve_engine import make_adapter

    from tiny import make_tiny_model

    root = tmp_path_factory.mktemp("odd-adapters")
    other_base = make_tiny_model(root / "other-base", tiny_model, seed=3)
    out = {"r8": make_adapter(tiny_model, root / "r8", seed=1, r=8),
           "dora": make_adapter(tiny_model, root / "dora", seed=2, dora=True),
           "rs": make_adapter(tiny_model, root / "rs", seed=5, rslora=True),
           "other": make_adapter(other_base, root / "other", seed=4),
           "chatml": make_adapter(tiny_model, root / "chatml", seed=6, template="chatml")}
    out["regex"] = make_adapter(tiny_model, root / "regex", seed=7)
    cfg = json.loads((out["regex"] / "adapter_config.json").read_text())
    cfg["target_modules"] = ".*\\.(q_proj|v_proj|o_proj|down_proj)"  # what --target_modules REGEX saves
    (out["regex"] / "adapter_config.json").write_text(json.dumps(cfg))
    # the same base type name as tiny_model, other weights: the fingerprint tells them apart
    manifest = json.loads((out["other"] / "swiftlike.json").read_text())
    manifest["base_model_type"] = Path(tiny_model).name
    (out["other"] / "swiftlike.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize("case, expect", [
    (dict(srcs=["x"], method="cat"), "at least two"),
    (dict(srcs=["x", "y"], method="cat", weights=[1.0]), "1 given for 2 adapters"),
    (dict(srcs=["x", "y"], method="linear", weights=[1.0, float("nan")]), "finite"),
    (dict(srcs=["x", "y"], method="ties"), "needs --density"),
    (dict(srcs=["x", "y"], method="ties", density=1.5), "must be in (0, 1]"),
    (dict(srcs=["x", "y"], method="cat", density=0.5), "drop --density"),
    (dict(srcs=["x", "r8"], method="linear"), "needs adapters of one rank"),
    (dict(srcs=["x", "other"], method="cat"), "different"),
    (dict(srcs=["x", "regex"], method="cat"), "regex pattern and a module list"),
    (dict(srcs=["x", "dora"], method="cat"), "DoRA"),
    (dict(srcs=["x", "rs"], method="svd"), "rsLoRA"),
    (dict(srcs=["x", "chatml"], method="cat"), "chat template"),
    (dict(srcs=["x", "x"], method="cat"), "the same adapter"),
    (dict(srcs=["x", "no-such-adapter"], method="cat"), "no adapter named 'no-such-adapter'"),
    (dict(srcs=["x", "hf:acme/thing"], method="cat"), "install it first"),
    (dict(srcs=["x", "y"], method="cat", name="a/b"), "--name"),
])
def test_refusals_write_nothing(case, expect, trained, odd, swiftlike_home):
    from swiftlike.combine import merge_adapters

    paths = {**trained, **odd}
    before = _store_names()
    srcs = [str(paths.get(s, s)) for s in case["srcs"]]
    with pytest.raises(SwiftlikeError) as err:
        merge_adapters(srcs, method=case["method"], name=case.get("name", "new"), weights=case.get("weights"),
                       density=case.get("density"))
    assert expect in str(err.value) and "\n" not in str(err.value)
    assert _store_untouched(before)


def test_existing_name_refused_unless_overwrite_and_no_torch_before_refusing(trained, swiftlike_home):
    """An existing NAME is refused (unless --overwrite); the CLI refuses before torch is even imported."""
    from swiftlike.combine import merge_adapters

    merge_adapters([str(trained["x"]), str(trained["y"])], method="linear", name="taken")
    first = (swiftlike_home / "adapters" / "taken").resolve()
    with pytest.raises(SwiftlikeError, match="already installed.*--overwrite"):
        merge_adapters([str(trained["x"]), str(trained["y"])], method="cat", name="taken")
    assert (swiftlike_home / "adapters" / "taken").resolve() == first
    code = ("import sys\nfrom swiftlike.cli import main\n"
            "try:\n    main(['adapter', 'merge', sys.argv[1], sys.argv[2], '--method', 'cat', '--name', 'taken'])\n"
            "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, str(trained["x"]), str(trained["y"])], capture_output=True,
                         text=True, env={**os.environ, "SWIFTLIKE_HOME": str(swiftlike_home)})
    assert out.stdout.strip() == "exit 1 False", out.stdout + out.stderr
    assert "already installed" in out.stderr and len(out.stderr.strip().splitlines()) == 1

    # the command a user runs: --weights as text, --overwrite swaps the version atomically
    done = subprocess.run([sys.executable, "-m", "swiftlike", "adapter", "merge", str(trained["x"]), str(trained["y"]),
                           "--method", "cat", "--weights", "1,0.5", "--name", "taken", "--overwrite"],
                          capture_output=True, text=True, env={**os.environ, "SWIFTLIKE_HOME": str(swiftlike_home)})
    assert done.returncode == 0, done.stderr
    assert "-> taken (r=8)" in done.stdout
    recipe = json.loads((swiftlike_home / "adapters" / "taken" / "swiftlike.json").read_text())["recipe"]
    assert (recipe["method"], recipe["weights"]) == ("cat", [1.0, 0.5])
    assert not first.exists()  # the old version went (atomically replaced)
    shown = subprocess.run([sys.executable, "-m", "swiftlike", "adapter", "show", "taken"], capture_output=True,
                           text=True, env={**os.environ, "SWIFTLIKE_HOME": str(swiftlike_home)}).stdout
    assert f"cat of {recipe['sources'][0]['name']} x1 [sha256 {recipe['sources'][0]['manifest_sha256'][:12]}]" in shown
