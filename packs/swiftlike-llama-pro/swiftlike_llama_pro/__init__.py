"""swiftlike plugin pack: LLaMA Pro (Wu et al., 2024) block expansion as `--train_type llama_pro`.

The decoder's N layers are split into `num_expand` equal groups and a copy of each group's last block is inserted
after it, with its attention output and MLP down projections zeroed: each new block starts as the identity (only the
residual passes), so the expanded model answers exactly as the base did. Only the new blocks train. Checkpoints are
the whole expanded model (a normal model dir: infer, serve --model, export take it as it is)."""
import swiftlike


@swiftlike.hookimpl
def register_tuners(register):
    register("llama_pro", prepare="swiftlike_llama_pro.expand:prepare", check="swiftlike_llama_pro.expand:check",
             requires_peft=False, summary="LLaMA Pro: add identity-initialised copies of decoder blocks, train only "
                                          "them (--tuner_args '{\"num_expand\": N}')",
             extra={"tuner_args": "num_expand (default: a quarter of the layers, at least 1)"})
