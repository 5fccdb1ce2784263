"""Built-in tuners. `prepare` is a 'module:function' string so torch/peft load only when training."""
from ..registry.hookspecs import hookimpl


@hookimpl
def register_tuners(register):
    register("lora", prepare="swiftlike.train.tuners:prepare_lora", summary="LoRA adapters (PEFT)")
    register("dora", prepare="swiftlike.train.tuners:prepare_dora", summary="weight-decomposed LoRA (PEFT use_dora)")
    register("qlora", prepare="swiftlike.train.tuners:prepare_qlora", quantized=True,
             summary="LoRA on a 4/8-bit bitsandbytes base")
    register("full", prepare="swiftlike.train.tuners:prepare_full", requires_peft=False,
             summary="all parameters trainable")
    register("freeze", prepare="swiftlike.train.tuners:prepare_freeze", requires_peft=False,
             summary="train only the last layers (--trainable_layers / --freeze_ratio)")
