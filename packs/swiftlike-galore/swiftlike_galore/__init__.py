"""swiftlike plugin pack: GaLore (Zhao et al., 2024) as `--train_type galore` — every parameter trains, and the
optimizer keeps the states of the targeted 2-D weights in a low-rank projection of their gradients. The optimizer is
PyPI `galore-torch`'s (GaLoreAdamW and friends, named as transformers names them: `galore_adamw`, ...), set up by
this pack from swiftlike's flags with the Trainer's AdamW settings. Checkpoints are whole models, as with
`--train_type full`."""
import swiftlike


@swiftlike.hookimpl
def register_tuners(register):
    register("galore", prepare="swiftlike.train.tuners:prepare_full", check="swiftlike_galore.options:check",
             trainer_options="swiftlike_galore.options:trainer_options",
             optimizer="swiftlike_galore.options:optimizer", requires_peft=False,
             summary="GaLore: full-parameter training, optimizer states in a low-rank gradient projection "
                     "(galore-torch)",
             extra={"tuner_args": "optim (galore_adamw, galore_adamw_8bit, galore_adafactor, *_layerwise), rank, "
                                  "update_proj_gap, scale, proj_type"})
