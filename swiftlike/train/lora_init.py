"""LoRA initialisations that need more than a LoraConfig: EVA and CorDA read the training data, and PiSSA, OLoRA and
CorDA rewrite the base weights, so their saved adapters are converted (PEFT's path_initial_model_for_weight_conversion)
into plain LoRA adapters that apply to the ORIGINAL base — what infer, merge-lora and serve load."""
from __future__ import annotations

from pathlib import Path

INITIAL_ADAPTER = "initial_adapter"  # under the run directory: the adapter as initialised, before any step


def calibration_batches(samples: list, collator, batch_size: int, limit: int = 16) -> list:
    """Up to `limit` collated batches of the training samples, in order, for the data-driven initialisations."""
    batch_size = max(1, int(batch_size))
    batches = []
    for start in range(0, len(samples), batch_size):
        batches.append(collator(samples[start:start + batch_size]))
        if len(batches) >= limit:
            break
    return batches


def _on(batch: dict, device) -> dict:
    import torch

    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def data_driven_lora(model, config, batches: list):
    """get_peft_model for --init_lora_weights eva or corda, computed on `batches` of the training data."""
    import torch
    from peft import get_peft_model

    device = next(model.parameters()).device
    if config.init_lora_weights == "corda":
        from peft.tuners.lora.corda import preprocess_corda

        def run_model():
            with torch.no_grad():
                for batch in batches:
                    model(**_on(batch, device))

        was_training = model.training
        model.eval()
        preprocess_corda(model, config, run_model=run_model)
        model.train(was_training)
        return get_peft_model(model, config)
    from peft import initialize_lora_eva_weights

    peft_model = get_peft_model(model, config, low_cpu_mem_usage=True)
    initialize_lora_eva_weights(peft_model, dataloader=[_on(b, device) for b in batches], show_progress_bar=False)
    return peft_model


def save_initial_adapter(peft_model, run_dir: Path) -> Path:
    """The adapter as initialised (PEFT reads it back when converting): its config says init_lora_weights=True so
    that loading it does not decompose the base a second time."""
    path = Path(run_dir) / INITIAL_ADAPTER
    config = peft_model.peft_config["default"]
    init = config.init_lora_weights
    config.init_lora_weights = True
    try:
        peft_model.save_pretrained(str(path))
    finally:
        config.init_lora_weights = init
    return path


def save_converted_adapter(peft_model, checkpoint: Path, initial: Path) -> None:
    """Overwrite the checkpoint's adapter with its plain-LoRA form for the original base: delta W = B A - B0 A0, a
    LoRA of twice the rank (PEFT doubles r and lora_alpha in the saved config)."""
    peft_model.save_pretrained(str(checkpoint), path_initial_model_for_weight_conversion=str(initial))
