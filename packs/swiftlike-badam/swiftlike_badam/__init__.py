"""swiftlike plugin pack: BAdam (Luo et al., 2024) as `--train_type badam` — full-parameter training one block of
decoder layers at a time: Adam's states exist only for the active block, which switches every few steps. The
optimizer is PyPI `badam`'s BlockOptimizer around torch's AdamW; checkpoints are whole models."""
import swiftlike


@swiftlike.hookimpl
def register_tuners(register):
    register("badam", prepare="swiftlike.train.tuners:prepare_full", check="swiftlike_badam.options:check",
             optimizer="swiftlike_badam.options:optimizer", requires_peft=False,
             summary="BAdam: block-coordinate full-parameter training, one block of layers at a time (badam)",
             extra={"tuner_args": "switch_block_every (50), switch_mode (ascending, descending, random, fixed), "
                                  "start_block, include_embedding, include_lm_head"})
