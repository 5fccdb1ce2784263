"""swiftlike plugin pack: PEFT's other methods as tuners (`--train_type adalora|ia3|vera|loha|lokr|boft|oft|
prompt_tuning|prefix_tuning|p_tuning`). Each trains, saves and loads as a PEFT adapter; the module-targeting ones
merge with `swiftlike merge-lora`, the prompt methods (virtual tokens) cannot."""
import swiftlike

from .methods import METHODS


@swiftlike.hookimpl
def register_tuners(register):
    for name, method in METHODS.items():
        register(name, prepare=f"swiftlike_peft_tuners.methods:prepare_{name}", summary=method.summary,
                 check="swiftlike_peft_tuners.methods:check",
                 callbacks="swiftlike_peft_tuners.methods:callbacks" if name == "adalora" else None,
                 extra={"peft_config": f"peft.{method.config}", "mergeable": method.mergeable,
                        "tuner_args": f"any field of peft.{method.config} (JSON)"})
